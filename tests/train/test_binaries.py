"""Smoke test of experiments/train_detr.py (:runlocal config) and experiments/predict_detr.py."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    subprocess.run([sys.executable, "-m", "experiments.make_synthetic", "--preset=castella",
                    f"--output={root}", "--seed=0", "--num_recordings=6"], cwd=REPO, check=True,
                   capture_output=True)
    return root


def test_train_then_predict(synthetic, tmp_path):
    data = []
    for split in ("train", "val"):
        data += [f"--config.data.{split}_annotations={synthetic / 'annotations.jsonl'}",
                 f"--config.data.{split}_audio_feats={synthetic / 'clap'}",
                 f"--config.data.{split}_text_feats={synthetic / 'clap_text'}"]
    workdir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "experiments.train_detr",
         "--config=experiments/configs/qd_detr.py:runlocal", f"--workdir={workdir}",
         "--config.train.num_epochs=1", *data],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "epoch 1/1 done" in train.stderr
    # Rates and ETAs start after the compiling step, which is timed once.
    assert train.stderr.count("first step (with compilation) took") == 1
    assert f"wrote best checkpoint: {workdir / 'best'}" in train.stderr
    best = json.loads((workdir / "best.json").read_text())
    assert (workdir / "checkpoints").is_dir() and (workdir / "config.json").is_file()

    pred = subprocess.run(
        [sys.executable, "-m", "experiments.predict_detr", f"--workdir={workdir}",
         f"--annotations={synthetic / 'annotations.jsonl'}", f"--audio_feats={synthetic / 'clap'}",
         f"--text_feats={synthetic / 'clap_text'}", f"--output={tmp_path / 'pred.jsonl'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-3000:]
    # The last stdout line is the brief JSON and equals the best validation epoch.
    assert json.loads(pred.stdout.strip().splitlines()[-1]) == best["brief"]
    lines = (tmp_path / "pred.jsonl").read_text().splitlines()
    ann = (synthetic / "annotations.jsonl").read_text().splitlines()
    assert len(lines) == len(ann)
    first = json.loads(lines[0])
    scores = [w[2] for w in first["pred_relevant_windows"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)


def test_unknown_config_argument_is_rejected():
    sys.path.insert(0, str(REPO))
    from experiments.configs import qd_detr
    with pytest.raises(ValueError, match="runlocal"):
        qd_detr.get_config("fast")
    config = qd_detr.get_config("runlocal")
    with pytest.raises(AttributeError):
        config.train.no_such_field = 1  # locked
