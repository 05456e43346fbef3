"""The README's main command: SYNTHETIC data, every system, one metrics table.

  python -m experiments.demo --workdir=runs/demo [--num_recordings=60] [--detr_epochs=3]
"""

from absl import flags

from amr_jax import cli
from amr_jax.demo import run_demo

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Output folder (data, predictions, runs).")
_NUM_RECORDINGS = flags.DEFINE_integer("num_recordings", 60, "Test recordings (train gets 2x).")
_DETR_EPOCHS = flags.DEFINE_integer("detr_epochs", 3, "QD-DETR epochs; 0 skips the trained system.")


def main(argv):
    del argv
    run_demo(_WORKDIR.value, num_recordings=_NUM_RECORDINGS.value, detr_epochs=_DETR_EPOCHS.value)


if __name__ == "__main__":
    cli.run(main)
