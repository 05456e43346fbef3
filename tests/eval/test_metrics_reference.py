"""The official baseline predictions must reproduce the official scorer's figures exactly."""

import json
import subprocess
import sys

import pytest

from amr_jax.data.records import read_annotations
from amr_jax.eval.metrics import compute_metrics
from amr_jax.eval.predictions import read_predictions


@pytest.mark.parametrize("split", ["val", "test"])
def test_official_baseline_metrics_all_thresholds(shared_data, split):
    records = read_annotations(shared_data / "castella" / f"castella_{split}_release.jsonl")
    preds = read_predictions(
        shared_data / "reference_preds" / f"dcase2026_baseline_castella_{split}_preds.jsonl")
    expected = json.loads(
        (shared_data / "reference_preds" / f"dcase2026_baseline_castella_{split}_metrics.json").read_text())
    got = compute_metrics(records, preds)
    assert got["mAP"] == expected["full"]["MR-mAP"]
    assert got["R1"] == expected["full"]["MR-R1"]
    assert got["brief"] == {k.removeprefix("MR-full-"): v for k, v in expected["brief"].items()}


def test_evaluate_binary_last_line(shared_data, tmp_path):
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate",
         f"--gt={shared_data / 'castella' / 'castella_test_release.jsonl'}",
         f"--pred={shared_data / 'reference_preds' / 'dcase2026_baseline_castella_test_preds.jsonl'}",
         f"--output={out}"], capture_output=True, text=True, check=True)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == '{"R1@0.5": 23.16, "R1@0.7": 10.32, "mAP": 9.11, "mAP@0.5": 20.34, "mAP@0.75": 6.96}'
    saved = json.loads(out.read_text())
    assert saved["brief"]["mAP"] == 9.11 and set(saved["by_length"]) == {
        "short (<10 s)", "middle (10-30 s)", "long (>30 s)"}


def test_evaluate_binary_reports_qid_mismatch(shared_data, tmp_path):
    preds = (shared_data / "reference_preds" / "dcase2026_baseline_castella_val_preds.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(preds.read_text().splitlines(keepends=True)[1:]))
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate",
         f"--gt={shared_data / 'castella' / 'castella_val_release.jsonl'}", f"--pred={bad}"],
        capture_output=True, text=True)
    assert proc.returncode != 0
    assert "1 missing" in proc.stderr and "qids differ" in proc.stderr
