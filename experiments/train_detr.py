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

from absl import app, flags, logging
from ml_collections import config_flags

from amr_jax import cli, distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics).",
                               required=True)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-host: 'host:port' of process 0, or 'auto' on a TPU pod "
    "(jax.distributed.initialize() detects the hosts); '' for one process.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes "
                                      "(with an explicit --coordinator_address).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index in "
                                   "[0, num_processes) (with an explicit --coordinator_address).")
flags.mark_flag_as_required("config")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Before any other JAX use: the processes must agree on the devices first.
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    # Summaries once: the other processes log warnings and errors only.
    logging.set_verbosity(logging.INFO if distributed.is_primary() else logging.WARNING)
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
