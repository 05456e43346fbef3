"""kill -9 and resume with the real QD-DETR; training + prediction reproducible across processes.

`experiments.train_detr` (default model class, small shapes, 4 epochs of 2 steps, a checkpoint
every step) is SIGKILLed 5 times - inside a step, inside a checkpoint write (an orbax temporary
folder exists), inside an evaluation - and resumed each time. Every resume must start from the
last checkpoint committed before it (never a partial one); the final latest and best parameters,
the optimizer state, best.json and metrics.jsonl (wall-clock fields aside) must equal a run that
was never interrupted. A second uninterrupted process must give bit-identical checkpoints and
`experiments.predict_detr` bit-identical predictions. The subprocesses share a JAX compilation
cache so that only the first compiles.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import kill_harness as kh


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_resume")
    data = kh.make_data(root / "data")
    # AMR_JAX_CACHE_DIR: keep compiled programs between pytest sessions (local reruns).
    cache = Path(os.environ.get("AMR_JAX_CACHE_DIR", root / "jax_cache"))
    reference = root / "reference"
    run = kh.run_once(kh.train_command(reference, data), kh.child_env(cache), reference,
                      root / "reference.log")
    assert run["rc"] == 0, (root / "reference.log").read_text()[-3000:]
    return root, data, cache, reference


@pytest.mark.slow
def test_five_kills_then_resume_equals_uninterrupted(setup):
    root, data, cache, reference = setup
    resumed = root / "resumed"
    runs = kh.kill_and_resume(data, resumed, cache, kills=5, seed=0, log_path=root / "kills.log")
    kills = [r for r in runs if r["killed"]]
    assert len(kills) >= 5, runs
    assert {r["kill_point"] for r in kills} == set(kh.KILL_POINTS)
    # Each resume started from the last committed step (checked in the harness) and the runs
    # really resumed mid-training.
    assert sum(r["resumed_step"] is not None for r in runs) >= 5, runs
    assert kh.compare_runs(reference, resumed) == []
    # A metrics line per epoch, none twice, despite kills between logging and checkpointing.
    assert [r["epoch"] for r in kh.metrics_without_timing(resumed)] == [1, 2, 3, 4]


@pytest.mark.slow
def test_training_and_prediction_are_bit_identical_across_processes(setup):
    root, data, cache, reference = setup
    second = root / "second"
    run = kh.run_once(kh.train_command(second, data), kh.child_env(cache), second,
                      root / "second.log")
    assert run["rc"] == 0
    assert kh.compare_runs(reference, second) == []
    predictions = []
    for workdir in (reference, second):
        out = workdir / "pred.jsonl"
        subprocess.run([kh.sys.executable, "-m", "experiments.predict_detr", f"--workdir={workdir}",
                        f"--annotations={data / 'annotations.jsonl'}",
                        f"--audio_feats={data / 'clap'}", f"--text_feats={data / 'clap_text'}",
                        f"--output={out}"], cwd=kh.REPO, env=kh.child_env(cache), check=True,
                       capture_output=True)
        predictions.append(out.read_bytes())
    assert predictions[0] == predictions[1]
    assert predictions[0].count(b"\n") == len((data / "annotations.jsonl").read_text().splitlines())
