"""The ablation runner: shared pretraining, resume after an interruption, seeds aggregated."""

from __future__ import annotations

import json

import numpy as np
import pytest

import detr_fixtures as fx
from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval.predictions import read_predictions
from amr_jax.train import ablation, trainer
from experiments.configs import qd_detr


def _small(arg: str):
    config = qd_detr.get_config(arg)
    config.data.max_frames = 32
    config.data.max_tokens = 8
    config.data.num_workers = 1
    config.train.batch_size = 4
    config.train.eval_batch_size = 4
    config.train.num_epochs = 1
    config.train.log_every_steps = 2
    return config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation_data")
    for k, (dataset, split) in enumerate([("castella", "train"), ("castella", "val"),
                                          ("castella", "test"), ("pre", "train"),
                                          ("pre", "val")]):
        fx.write_tiny_split(root / dataset / split, num_recordings=3, queries_per_recording=3,
                            frames=(20, 30), seed=k)
    return root


class Interrupted(Exception):
    """Stands for a preemption in the middle of a training stage."""


def test_shared_pretraining_resume_and_seed_summary(data_root, tmp_path):
    pretrain = _small("runlocal")
    rows = [ablation.AblationRow("B", "pretrained", "pre", pretrain, _small("runlocal")),
            ablation.AblationRow("C", "pretrained + dense saliency", "pre", pretrain,
                                 _small("dense_saliency,runlocal"),
                                 reference={k: 1.0 for k in metrics_lib.BRIEF_KEYS})]
    calls = []

    def train(config, workdir, *, interrupt_at=None):
        calls.append(str(workdir))
        if len(calls) == interrupt_at:
            trainer.train_and_evaluate(config, workdir, stop_after_steps=1)
            raise Interrupted(str(workdir))
        return trainer.train_and_evaluate(config, workdir)

    workdir = tmp_path / "ablation"
    with pytest.raises(Interrupted) as stopped:
        ablation.run_ablation(rows, data_root=data_root, workdir=workdir, seeds=[1, 2],
                              num_resamples=50, train_fn=lambda c, w: train(c, w, interrupt_at=2))
    # seed 1: pretraining (call 1) finished, row B's fine-tuning (call 2) stopped at step 1.
    interrupted = stopped.value.args[0]
    assert interrupted.endswith("rows/B/seed_1")
    summaries = ablation.run_ablation(rows, data_root=data_root, workdir=workdir, seeds=[1, 2],
                                      num_resamples=50, train_fn=train)

    pre_dirs = sorted((workdir / "pretrain").iterdir())
    assert len(pre_dirs) == 1 and pre_dirs[0].name.startswith("pre-")  # B and C share it
    # Each stage trained once per seed; only the interrupted one was entered twice.
    assert sorted(calls) == sorted(
        [str(pre_dirs[0] / "seed_1"), interrupted, interrupted]
        + [str(workdir / "rows" / r / "seed_1") for r in ("C",)]
        + [str(pre_dirs[0] / "seed_2")] + [str(workdir / "rows" / r / "seed_2") for r in "BC"])
    for row, dense in (("B", "first_window"), ("C", "all_windows")):
        for seed in (1, 2):
            saved = json.loads((workdir / "rows" / row / f"seed_{seed}" / "config.json").read_text())
            assert saved["seed"] == seed
            assert saved["train"]["init_from"] == str(pre_dirs[0] / f"seed_{seed}")
            assert saved["data"]["saliency_labels"] == dense
            assert saved["data"]["train_annotations"] == str(data_root / "castella/train/annotations.jsonl")
    pre_config = json.loads((pre_dirs[0] / "seed_2" / "config.json").read_text())
    assert pre_config["data"]["train_annotations"] == str(data_root / "pre/train/annotations.jsonl")
    # The resumed stage ran to the end: its metrics file has its one epoch.
    resumed = (workdir / "rows" / "B" / "seed_1" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in resumed] == [1]

    saved = json.loads((workdir / ablation.ABLATION_JSON).read_text())
    assert list(saved) == ["B", "C"]
    for row in ("B", "C"):
        s = saved[row]
        assert s["num_runs"] == 2 and s["seeds"] == [1, 2]
        assert s == json.loads(json.dumps(summaries[row]))  # what was returned was written
        # The summary aggregates the runs' own test figures, recomputed here from the files.
        test = read_annotations(data_root / "castella/test/annotations.jsonl")
        per_run = [metrics_lib.compute_metrics(test, read_predictions(
            workdir / "rows" / row / f"seed_{seed}" / ablation.PREDICTIONS))["brief"]
            for seed in (1, 2)]
        for key in metrics_lib.BRIEF_KEYS:
            values = [b[key] for b in per_run]
            assert s["mean"][key] == pytest.approx(np.mean(values), abs=0.006)
            assert s["std"][key] == pytest.approx(np.std(values, ddof=1), abs=0.006)
    table = (workdir / ablation.ABLATION_MD).read_text()
    assert "| B | pretrained | 2 |" in table and "| C | pretrained + dense saliency | 2 |" in table
    assert "Reference figures (report 003" in table and "| C | 1.00 |" in table
    assert (workdir / ablation.ABLATION_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_dataset_is_named_before_training(data_root, tmp_path):
    rows = [ablation.AblationRow("X", "needs clotho", "clotho_moment_long", _small("runlocal"),
                                 _small("runlocal"))]
    with pytest.raises(FileNotFoundError, match="clotho_moment_long/train/annotations.jsonl"):
        ablation.run_ablation(rows, data_root=data_root, workdir=tmp_path, seeds=[1],
                              train_fn=lambda c, w: pytest.fail("trained before checking data"))


def test_config_key_ignores_the_seed_but_not_the_data():
    a, b = _small("runlocal"), _small("runlocal")
    b.seed = 7
    assert ablation.config_key(a) == ablation.config_key(b)
    b.data.train_annotations = "elsewhere.jsonl"
    assert ablation.config_key(a) != ablation.config_key(b)


def test_binary_runs_a_synthetic_row_and_resumes_without_training(tmp_path):
    """SYNTHETIC smoke run of `experiments.ablation`; the rerun only re-reads the results."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "experiments.ablation", "--rows=B0", "--seeds=1",
               "--runlocal", "--synthetic", "--num_recordings=3", "--finetune_epochs=1",
               f"--workdir={tmp_path}", "--bootstrap_resamples=20"]
    first = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "SYNTHETIC Ablation (report 003)" in first.stdout
    assert f"wrote ablation chart: {tmp_path / 'ablation.png'}" in first.stderr
    saved = json.loads((tmp_path / ablation.ABLATION_JSON).read_text())
    assert list(saved) == ["B0"] and saved["B0"]["seeds"] == [2023]
    again = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "finished earlier" in again.stderr and "first step" not in again.stderr
    assert json.loads((tmp_path / ablation.ABLATION_JSON).read_text()) == saved
    bad = subprocess.run(command[:3] + ["--rows=S9", f"--workdir={tmp_path}"], cwd=repo,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "unknown row(s) ['S9']" in bad.stderr
