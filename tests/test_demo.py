"""Smoke test of the README's main command (experiments.demo) on a tiny synthetic split."""

import json
import subprocess
import sys


def test_demo_runs_every_system_and_prints_one_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.demo", f"--workdir={tmp_path}", "--num_recordings=6",
         "--detr_epochs=1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("SYNTHETIC CASTELLA-structured test split"):]
    systems = ["backbone_cosine", "jointproj_s1", "jointproj_s2", "jointproj_s3", "gmm_simple",
               "gmm_contrast", "qd_detr"]
    for name in systems:
        assert f"\n{name} " in table, name
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == systems
    for name in systems:
        assert (tmp_path / "predictions" / f"{name}.jsonl").is_file()
    # The synthetic world makes the joint space informative and the backbone not.
    assert results["jointproj_s1"]["mAP"] > results["backbone_cosine"]["mAP"]
