"""The plot binary: each figure renders from real files; tables behind them equal the metrics."""

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics, plots
from amr_jax.eval.predictions import read_predictions

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def val(shared_data):
    ann = shared_data / "castella" / "castella_val_release.jsonl"
    pred = shared_data / "reference_preds" / "dcase2026_baseline_castella_val_preds.jsonl"
    return ann, pred


def _plot(*args):
    return subprocess.run([sys.executable, "-m", "experiments.plot", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_by_length_table_equals_the_metrics_by_length(val, tmp_path):
    ann, pred = val
    records, preds = read_annotations(ann), read_predictions(pred)
    png, table = plots.metrics_by_length(records, {"baseline": preds})
    expected = metrics.metrics_by_length(records, preds)
    assert table["baseline"] == {k: v["brief"] for k, v in expected.items()}
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    run = _plot("--kind=by_length", f"--gt={ann}", f"--pred={pred},{pred}",
                f"--output={tmp_path / 'len.png'}")
    assert run.returncode == 0, run.stderr
    assert matplotlib.image.imread(tmp_path / "len.png").shape[2] in (3, 4)


def test_training_curves_and_timelines_render(val, tmp_path):
    ann, pred = val
    workdir = tmp_path / "run"
    workdir.mkdir()
    lines = [{"epoch": e, "step": 10 * e, "train": {"loss": 3.0 / e, "span": 1.0 / e},
              **({"val": {"R1@0.5": 10.0 + e, "R1@0.7": 5.0 + e, "mAP": 4.0, "mAP@0.5": 8.0,
                          "mAP@0.75": 3.0}} if e % 2 == 0 else {})} for e in range(1, 7)]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    run = _plot("--kind=training", f"--workdir={workdir}", f"--output={tmp_path / 'curves.png'}")
    assert run.returncode == 0, run.stderr
    assert f"wrote figure: {tmp_path / 'curves.png'}" in run.stderr
    qids = [r.qid for r in read_annotations(ann)[:2]]
    run = _plot("--kind=timelines", f"--gt={ann}", f"--pred={pred}",
                f"--qids={qids[0]},{qids[1]}", f"--output={tmp_path / 'q.png'}")
    assert run.returncode == 0, run.stderr
    bad = _plot("--kind=timelines", f"--gt={ann}", f"--pred={pred}", "--qids=nope",
                f"--output={tmp_path / 'x.png'}")
    assert bad.returncode == 1 and "error: --qids: not in the annotations: ['nope']" in bad.stderr
    missing = _plot("--kind=training", f"--workdir={tmp_path}", f"--output={tmp_path / 'y.png'}")
    assert missing.returncode == 3 and "metrics file not found" in missing.stderr
