"""Converts an MS-CLAP checkpoint to Flax params (orbax) + a conversion report.

  python -m experiments.convert_clap --checkpoint=CLAP_weights_2023.pth --output=DIR \
      [--gpt2_dir=LOCAL_GPT2_SNAPSHOT] [--gpt2_num_heads=12]

Also accepts the synthetic `.npz` checkpoint. Writes DIR/params (orbax) and
DIR/clap_conversion.json (source sha256, shapes, converted and ignored names).
Load with `amr_jax.clap.convert.load_converted(DIR)`.
"""

import json

from absl import flags

from amr_jax import cli
from amr_jax.clap.convert import DEFAULT_GPT2_HEADS, convert_and_save

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "MS-CLAP .pth/.pt or .npz.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.", required=True)
_GPT2_DIR = flags.DEFINE_string(
    "gpt2_dir", None, "Local HF GPT-2 snapshot (config.json + weights) if the checkpoint lacks one."
)
_GPT2_NUM_HEADS = flags.DEFINE_integer(
    "gpt2_num_heads", DEFAULT_GPT2_HEADS, "Attention heads of the checkpoint's own GPT-2."
)


def main(argv):
    del argv
    report = convert_and_save(
        _CHECKPOINT.value, _OUTPUT.value, gpt2_dir=_GPT2_DIR.value,
        gpt2_num_heads=_GPT2_NUM_HEADS.value,
    )
    print(json.dumps({k: report[k] for k in ("source", "source_sha256", "audio_head",
                                              "caption_head", "gpt2_config")}))
    print(f"converted {len(report['converted'])} tensors, ignored {len(report['ignored'])}")
    cli.log_outputs({"converted MS-CLAP": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
