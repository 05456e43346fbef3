"""Trains QD-DETR; resumes automatically from the workdir.

  python -m experiments.train_detr --config=experiments/configs/qd_detr.py --workdir=DIR \
    --config.data.train_annotations=... (see the config docstring for every data field)

Several hosts (multi-controller JAX; WORKSPACE.md "Multi-host"): the same command on every
host, plus

  --coordinator_address=HOST0:PORT --num_processes=N --process_id=I   (explicit launch), or
  --coordinator_address=auto                                          (TPU pod: detected)

with one shared workdir.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from amr_jax import cli, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics).",
                               required=True)
_LAUNCH = cli.define_launch_flags()
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Before any other JAX use: the processes must agree on the devices first.
    _LAUNCH.initialize()
    from amr_jax.train.trainer import train_and_evaluate  # noqa: PLC0415 (after initialize)

    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    if not distributed.is_primary():
        return
    workdir = _WORKDIR.value
    cli.log_outputs({"checkpoints (latest, resumable)": os.path.join(workdir, "checkpoints"),
                     "best checkpoint": os.path.join(workdir, "best"),
                     "metrics per epoch": os.path.join(workdir, "metrics.jsonl")})


if __name__ == "__main__":
    cli.run(main)
