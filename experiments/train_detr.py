"""Trains QD-DETR; resumes automatically from the workdir.

  python -m experiments.train_detr --config=experiments/configs/qd_detr.py --workdir=DIR \
    --config.data.train_annotations=... (see the config docstring for every data field)
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from amr_jax import cli
from amr_jax.train.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics).",
                               required=True)
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    workdir = _WORKDIR.value
    cli.log_outputs({"checkpoints (latest, resumable)": os.path.join(workdir, "checkpoints"),
                     "best checkpoint": os.path.join(workdir, "best"),
                     "metrics per epoch": os.path.join(workdir, "metrics.jsonl")})


if __name__ == "__main__":
    cli.run(main)
