"""Bounded-memory localization equals the whole-split run, bit for bit, chunk sizes aside."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amr_jax.data.records import read_annotations
from amr_jax.errors import ConfigError
from amr_jax.localize import pipeline, streaming
from experiments.configs import localize as localize_configs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from amr_jax.clap import convert
    from amr_jax.data.synthetic import generate_split
    root = tmp_path_factory.mktemp("stream_split")
    generate_split("castella", root, seed=5, num_recordings=7, progress=False)
    convert.convert_and_save(root / "msclap_synthetic.npz", root / "clap_converted")
    return root


def _paths(d, out):
    return dict(annotations=d / "annotations.jsonl", audio_feats=d / "clap",
                text_feats=d / "clap_text", clap_dir=d / "clap_converted",
                neutral_feats=d / "neutral_text", output=out)


def test_plan_chunks_keeps_recordings_whole_and_bounded(split_dir):
    records = read_annotations(split_dir / "annotations.jsonl")
    chunks = streaming.plan_chunks(records, recordings_per_chunk=3, queries_per_chunk=9)
    assert [v for c in chunks for v in c] == list(dict.fromkeys(r.vid for r in records))
    for c in chunks:
        assert len(c) <= 3 and sum(r.vid in c for r in records) <= 9
    with pytest.raises(ConfigError, match="stream_queries"):
        streaming.plan_chunks(records, recordings_per_chunk=3, queries_per_chunk=1)


@pytest.mark.parametrize("system", ["backbone_cosine", "jointproj_s1", "gmm_contrast"])
def test_streaming_equals_whole_split(split_dir, tmp_path, system):
    config = localize_configs.get_config(f"{system},runlocal")
    # The localizer's float32 results depend (by an ulp) on its batch size on XLA:CPU, so the
    # whole split is localized in batches of the streaming chunk's size.
    with config.unlocked():
        config.query_chunk = 8
    whole = pipeline.run_localization(config, print_report=False,
                                      **_paths(split_dir, tmp_path / "whole.jsonl"))
    config = localize_configs.get_config(f"{system},runlocal")
    with config.unlocked():
        config.stream_recordings, config.stream_queries = 2, 8
    streamed = streaming.stream_localization(config, print_report=False,
                                             **_paths(split_dir, tmp_path / "stream.jsonl"))
    assert streamed["num_chunks"] >= 4
    np.testing.assert_array_equal(streamed["valid"], whole["result"].valid)
    np.testing.assert_array_equal(streamed["windows"], whole["result"].windows)
    assert (tmp_path / "stream.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert streamed["metrics"] == whole["metrics"]


def test_binary_streams(split_dir, tmp_path):
    p = _paths(split_dir, tmp_path / "p.jsonl")
    cmd = [sys.executable, "-m", "experiments.localize",
           "--config=experiments/configs/localize.py:backbone_cosine,runlocal",
           "--config.stream_recordings=3", "--config.stream_queries=16",
           f"--annotations={p['annotations']}", f"--audio_feats={p['audio_feats']}",
           f"--text_feats={p['text_feats']}", f"--output={p['output']}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(json.loads(run.stdout.strip().splitlines()[-1])) == [
        "R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"]
    assert len(p["output"].read_text().splitlines()) == len(
        p["annotations"].read_text().splitlines())
