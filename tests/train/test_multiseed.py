"""Multi-seed runs: each seed trains in its own folder (resumable), one summary at the end."""

import json

import detr_fixtures as fx
import pytest
from test_trainer import tiny_config

from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics
from amr_jax.eval.predictions import read_predictions
from amr_jax.train import multiseed


def test_run_seeds_trains_each_seed_and_summarizes(tmp_path, capsys):
    root = tmp_path / "data"
    fx.write_tiny_split(root, num_recordings=4, queries_per_recording=3, frames=(20, 30), seed=0)
    config = tiny_config(root)
    with config.unlocked():
        config.train.num_epochs = 1
    test = dict(test_annotations=root / "annotations.jsonl", test_audio_feats=root / "clap",
                test_text_feats=root / "clap_text")
    summary = multiseed.run_seeds(config, tmp_path / "ms", seeds=[3, 4], num_resamples=50,
                                  model_factory=fx.tiny_model_factory, name="tiny", **test)
    assert summary["seeds"] == [3, 4] and summary["num_runs"] == 2
    records = read_annotations(test["test_annotations"])
    briefs = []
    for seed in (3, 4):
        run_dir = tmp_path / "ms" / f"seed_{seed}"
        assert json.loads((run_dir / "config.json").read_text())["seed"] == seed
        briefs.append(metrics.compute_metrics(
            records, read_predictions(run_dir / multiseed.PREDICTIONS))["brief"])
    assert summary["per_run"] == briefs
    for key in metrics.BRIEF_KEYS:
        assert summary["mean"][key] == pytest.approx((briefs[0][key] + briefs[1][key]) / 2, abs=0.006)
    assert "| tiny | 2 |" in (tmp_path / "ms" / multiseed.SUMMARY_MD).read_text()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["mean"] == summary["mean"]
