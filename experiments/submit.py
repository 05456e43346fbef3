r"""Writes a DCASE 2026 Task 6 submission from a predictions jsonl.

  python -m experiments.submit --pred=PRED.jsonl \
    --blind=../shared/data/dcase2026/dcase2026_evaluation.jsonl --output=DIR [--label=...]

DIR receives `submission.jsonl` (scores stripped, windows as listed, at most 10, keys
qid, query, vid, pred_relevant_windows, in blind-list order) and a `system.meta.yaml`
skeleton (kept if it exists). Missing or extra qids are an error listing them.
"""

from absl import flags

from amr_jax import cli
from amr_jax.eval.submission import write_submission

_PRED = flags.DEFINE_string("pred", None, "Predictions jsonl with [start, end, score] windows.",
                            required=True)
_BLIND = flags.DEFINE_string("blind", None, "The blind evaluation list (annotation jsonl).",
                             required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Output folder.", required=True)
_LABEL = flags.DEFINE_string("label", "Lastname_INST_task6_1", "Submission label for the meta file.")


def main(argv):
    del argv
    written = write_submission(_PRED.value, _BLIND.value, _OUTPUT.value, label=_LABEL.value)
    cli.log_outputs(written)


if __name__ == "__main__":
    cli.run(main)
