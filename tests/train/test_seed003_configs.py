"""Seed-003 config variants of qd_detr.py: construction checks and one end-to-end smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amr_jax.detr.criterion import build_criterion
from amr_jax.train import trainer
from experiments.configs import qd_detr

REPO = Path(__file__).resolve().parent.parent.parent

# What each variant switches on: (quality head + loss + re-ranking, boundary loss,
# dense saliency, short proposals).
EXPECTED = {"quality": (True, False, False, False), "boundary": (False, True, False, False),
            "dense_saliency": (False, False, True, False), "short": (False, False, False, True),
            "all": (True, True, True, True)}


def _switches(config):
    return (config.model.quality_head and config.loss.quality_weight == 1.0
            and config.postprocess.quality_rerank,
            config.loss.boundary_weight == 0.05,
            config.data.saliency_labels == "all_windows",
            config.postprocess.short_proposals)


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_variant_configs(variant):
    plain = qd_detr.get_config("runlocal")
    for arg in (variant, f"{variant},runlocal", f"runlocal,{variant}"):
        config = qd_detr.get_config(arg)
        assert _switches(config) == EXPECTED[variant], arg
        trainer.validate_config(config)
        criterion = build_criterion(config.loss)
        assert ("quality" in criterion.layer_terms) == EXPECTED[variant][0]
        assert ("boundary" in criterion.final_terms) == EXPECTED[variant][1]
        assert config.train.batch_size == (8 if "runlocal" in arg else 32)
        # Nothing else differs from plain QD-DETR (runlocal settings aside).
        for section in ("optim", "train"):
            if "runlocal" in arg:
                assert config[section].to_dict() == plain[section].to_dict()
    assert _switches(qd_detr.get_config()) == (False, False, False, False)
    assert set(build_criterion(qd_detr.get_config().loss).weights) == {
        "span", "giou", "label", "saliency"}


def test_inconsistent_switches_are_rejected():
    config = qd_detr.get_config("runlocal")
    config.loss.quality_weight = 1.0
    with pytest.raises(ValueError, match="quality_head"):
        trainer.validate_config(config)
    config = qd_detr.get_config("runlocal")
    config.postprocess.quality_rerank = True
    with pytest.raises(ValueError, match="quality_head"):
        trainer.validate_config(config)
    config = qd_detr.get_config("runlocal")
    config.data.saliency_labels = "dense"
    with pytest.raises(ValueError, match="saliency_labels"):
        trainer.validate_config(config)
    with pytest.raises(ValueError, match="quality"):
        qd_detr.get_config("qualty,runlocal")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn003")
    subprocess.run([sys.executable, "-m", "experiments.make_synthetic", "--preset=castella",
                    f"--output={root}", "--seed=0", "--num_recordings=6"], cwd=REPO, check=True,
                   capture_output=True)
    return root


def test_all_components_runlocal_train_then_predict(synthetic, tmp_path):
    """SYNTHETIC smoke run of `qd_detr.py:all,runlocal` through both binaries.

    One text-to-audio and one encoder layer (two decoder layers, so the
    auxiliary quality term stays) keep the XLA compilation, most of the time,
    short; every seed-003 component runs as configured.
    """
    data = []
    for split in ("train", "val"):
        data += [f"--config.data.{split}_annotations={synthetic / 'annotations.jsonl'}",
                 f"--config.data.{split}_audio_feats={synthetic / 'clap'}",
                 f"--config.data.{split}_text_feats={synthetic / 'clap_text'}"]
    workdir = tmp_path / "run"
    train = subprocess.run(
        [sys.executable, "-m", "experiments.train_detr",
         "--config=experiments/configs/qd_detr.py:all,runlocal", f"--workdir={workdir}",
         "--config.train.num_epochs=1", "--config.model.t2v_layers=1",
         "--config.model.enc_layers=1", *data],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stderr[-3000:]
    record = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[-1])
    for term in ("quality", "quality_0", "boundary", "saliency"):
        assert term in record["train"] and record["train"][term] == record["train"][term]
    assert json.loads((workdir / "config.json").read_text())["data"]["saliency_labels"] == \
        "all_windows"

    pred = subprocess.run(
        [sys.executable, "-m", "experiments.predict_detr", f"--workdir={workdir}",
         f"--annotations={synthetic / 'annotations.jsonl'}", f"--audio_feats={synthetic / 'clap'}",
         f"--text_feats={synthetic / 'clap_text'}", f"--output={tmp_path / 'pred.jsonl'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert pred.returncode == 0, pred.stderr[-3000:]
    best = json.loads((workdir / "best.json").read_text())
    assert json.loads(pred.stdout.strip().splitlines()[-1]) == best["brief"]
    ann = {json.loads(x)["qid"]: json.loads(x)
           for x in (synthetic / "annotations.jsonl").read_text().splitlines()}
    for line in (tmp_path / "pred.jsonl").read_text().splitlines():
        p = json.loads(line)
        windows = p["pred_relevant_windows"]
        assert 1 <= len(windows) <= 10
        scores = [w[2] for w in windows]
        assert scores == sorted(scores, reverse=True)
        duration = ann[p["qid"]]["duration"]
        for st, en, _ in windows:  # clipped to the duration, then on the 1 s grid
            assert st == round(st) and en == round(en) and 0 <= st <= en <= round(duration)
