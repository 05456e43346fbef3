"""Writes a SYNTHETIC split in the real DCASE layout (features, text, MS-CLAP heads).

  python -m experiments.make_synthetic --preset=castella|clotho_moment|clotho_moment_long \
      --output=DIR --seed=0 \
      [--annotations=../shared/data/castella/castella_test_release.jsonl] [--num_recordings=N]

With --annotations the real queries, durations and windows are reused; the
features and weights are always synthetic (see amr_jax/data/synthetic.py).
"""

import json

from absl import flags

from amr_jax import cli
from amr_jax.data.synthetic import generate_split

_PRESET = flags.DEFINE_enum("preset", "castella", ["castella", "clotho_moment", "clotho_moment_long"],
                            "Dataset structure.")
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of this split.")
_WORLD_SEED = flags.DEFINE_integer("world_seed", 0, "Seed of the shared world (heads, vocabulary).")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "Real annotation jsonl to reuse.")
_NUM_RECORDINGS = flags.DEFINE_integer("num_recordings", None, "Keep only the first N recordings.")


def main(argv):
    del argv
    summary = generate_split(_PRESET.value, _OUTPUT.value, seed=_SEED.value,
                             world_seed=_WORLD_SEED.value, annotations=_ANNOTATIONS.value,
                             num_recordings=_NUM_RECORDINGS.value)
    print(json.dumps(summary))
    cli.log_outputs({"synthetic split": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
