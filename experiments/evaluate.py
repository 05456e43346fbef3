"""Scores a predictions jsonl against ground truth with the official DCASE semantics.

  python -m experiments.evaluate --gt=ANN.jsonl --pred=PRED.jsonl [--output=M.json]

Prints a table, every IoU threshold and a per-window-length breakdown, then as
its last stdout line one JSON object with R1@0.5, R1@0.7, mAP, mAP@0.5, mAP@0.75.
"""

from absl import flags

from amr_jax import cli
from amr_jax.eval.report import evaluate_files

_GT = flags.DEFINE_string("gt", None, "Ground-truth annotation jsonl.", required=True)
_PRED = flags.DEFINE_string("pred", None, "Predictions jsonl with [start, end, score] windows.",
                            required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Optional path for the full metrics JSON.")


def main(argv):
    del argv
    evaluate_files(_GT.value, _PRED.value, _OUTPUT.value)
    cli.log_outputs({"metrics": _OUTPUT.value})


if __name__ == "__main__":
    cli.run(main)
