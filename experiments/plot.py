r"""Figures from the files the other binaries write (PNG, written atomically).

  # training curves (loss terms, validation figures) of a training workdir
  python -m experiments.plot --kind=training --workdir=runs/qd_detr --output=curves.png
  # metrics by ground-truth window length, one bar per predictions file
  python -m experiments.plot --kind=by_length --gt=ANN.jsonl --pred=a.jsonl,b.jsonl --output=len.png
  # per-query timelines: ground truth vs each predictions file
  python -m experiments.plot --kind=timelines --gt=ANN.jsonl --pred=a.jsonl,b.jsonl \
      --qids=Q1,Q2 --output=q.png

Relevance curves with the localizer's smoothed curve come from
`experiments.localize --plot_qids=...`.
"""

import os

from absl import flags

from amr_jax import cli
from amr_jax.errors import UsageError

_KIND = flags.DEFINE_enum("kind", None, ["training", "by_length", "timelines"], "Which figure.",
                          required=True)
_OUTPUT = flags.DEFINE_string("output", None, "PNG path.", required=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir (--kind=training).")
_GT = flags.DEFINE_string("gt", None, "Annotated jsonl (by_length, timelines).")
_PRED = flags.DEFINE_list("pred", [], "Predictions jsonl files (by_length, timelines).")
_QIDS = flags.DEFINE_list("qids", [], "Queries to draw (timelines).")


def main(argv):
    del argv
    from amr_jax.data.records import read_annotations
    from amr_jax.eval import plots
    from amr_jax.eval.predictions import read_predictions
    from amr_jax.io_utils import atomic_write_bytes

    if _KIND.value == "training":
        if not _WORKDIR.value:
            raise UsageError("--kind=training needs --workdir")
        png = plots.training_curves(plots.read_metrics_jsonl(
            os.path.join(_WORKDIR.value, "metrics.jsonl")), title=_WORKDIR.value)
    else:
        if not _GT.value or not _PRED.value:
            raise UsageError(f"--kind={_KIND.value} needs --gt and --pred")
        records = read_annotations(_GT.value)
        systems = {os.path.splitext(os.path.basename(p))[0]: read_predictions(p) for p in _PRED.value}
        if _KIND.value == "by_length":
            png, table = plots.metrics_by_length(records, systems, title=os.path.basename(_GT.value))
            for name, rows in table.items():
                print(name, {label: brief.get("R1@0.7") for label, brief in rows.items()})
        else:
            if not _QIDS.value:
                raise UsageError("--kind=timelines needs --qids")
            png = plots.query_timelines(records, systems, _QIDS.value)
    cli.log_outputs({"figure": atomic_write_bytes(_OUTPUT.value, png)})


if __name__ == "__main__":
    cli.run(main)
