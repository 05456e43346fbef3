"""Input layouts: the model input row of a known feature file, text never cut (dcase),
too-long text errors, and the layout defaults a run resolves."""

import json
from pathlib import Path

import numpy as np
import pytest

from amr_jax.data.loader import load_split
from amr_jax.detr import layout as layout_lib
from amr_jax.detr.inputs import make_detr_batch
from amr_jax.train import pipeline
from experiments.configs import qd_detr

D = 768


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    """Two recordings, three queries; qid 'long' has a 50-token text."""
    root = tmp_path_factory.mktemp("layout")
    rng = np.random.default_rng(0)
    (root / "clap").mkdir()
    (root / "clap_text").mkdir()
    np.savez(root / "clap" / "a.npz", features=(rng.normal(size=(12, D)) * 4).astype(np.float32))
    np.savez(root / "clap" / "b.npz", features=rng.normal(size=(9, D)).astype(np.float32))
    rows = [("s1", "a", 5, [[1, 4]]), ("long", "b", 50, [[2, 6]]), ("s2", "a", 7, [[8, 12]])]
    lines = []
    for qid, vid, n_tok, windows in rows:
        np.savez(root / "clap_text" / f"qid{qid}.npz",
                 last_hidden_state=(rng.normal(size=(n_tok, D)) * 3).astype(np.float32))
        lines.append(json.dumps({"qid": qid, "query": "q", "duration": 12 if vid == "a" else 9,
                                 "vid": vid, "relevant_windows": windows}))
    (root / "ann.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def split(split_dir):
    return load_split(split_dir / "ann.jsonl", split_dir / "clap", split_dir / "clap_text",
                      num_workers=1, progress=False)


def _data_config(layout, max_tokens, max_frames=16):
    config = qd_detr.get_config()
    config.unlock()
    config.data.layout = layout
    config.data.max_tokens = max_tokens
    config.data.max_frames = max_frames
    return config


def _expected_row(path: Path, layout: str, max_frames: int) -> np.ndarray:
    """[ctx_l, 770] written from the file and the layout rules, independently of the library."""
    feats = np.load(path)["features"].astype(np.float64)[:max_frames]
    feats = feats / (np.sqrt((feats ** 2).sum(-1, keepdims=True)) + 1e-5)
    ctx = len(feats)
    tef = np.stack([np.arange(ctx) / ctx, np.arange(ctx) / ctx + 1.0 / ctx], axis=1)
    return np.concatenate([feats, tef] if layout == "dcase" else [tef, feats], axis=1)


@pytest.mark.parametrize("layout", ["dcase", "lighthouse"])
def test_model_input_row_of_a_feature_file(split, split_dir, layout):
    config = layout_lib.resolve_run_config(_data_config(layout, 0, max_frames=10), [split])
    inputs, batch, num_valid = next(pipeline.eval_batches(split, config.data, batch_size=3))
    assert num_valid == 3
    for i, (qid, vid) in enumerate([("s1", "a"), ("long", "b"), ("s2", "a")]):
        row = _expected_row(split_dir / "clap" / f"{vid}.npz", layout, max_frames=10)
        ctx = len(row)
        np.testing.assert_allclose(inputs.audio[i, :ctx], row, rtol=1e-5, atol=1e-6)
        assert not inputs.audio[i, ctx:].any() and inputs.audio_mask[i].sum() == ctx
        text = np.load(split_dir / "clap_text" / f"qid{qid}.npz")["last_hidden_state"]
        if layout == "lighthouse":
            text = text[:32]
            text = text / (np.linalg.norm(text, axis=-1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(inputs.text[i, :len(text)], text, rtol=1e-5, atol=1e-6)
        assert inputs.text_mask[i].sum() == len(text)
    # The dcase row starts with the audio, the lighthouse row with tef = (0, 1/ctx).
    first = inputs.audio[0, 0, :2] if layout == "lighthouse" else inputs.audio[0, 0, -2:]
    np.testing.assert_allclose(first, [0.0, 1.0 / 10], rtol=1e-6)


def test_dcase_never_truncates_text(split):
    config = layout_lib.resolve_run_config(_data_config("dcase", 0), [split])
    assert config.data.max_tokens == 50  # the longest text of the split
    inputs, _, _ = make_detr_batch(split, split.records[1:2], max_frames=16,
                                   max_tokens=config.data.max_tokens, max_windows=5, rng=None,
                                   layout="dcase")
    assert inputs.text.shape[1] == 50 and inputs.text_mask.sum() == 50
    # A configured maximum at or above the longest text is used as given.
    assert layout_lib.resolve_run_config(_data_config("dcase", 64), [split]).data.max_tokens == 64
    # lighthouse cuts the same query to 32 tokens.
    config = layout_lib.resolve_run_config(_data_config("lighthouse", 0), [split])
    assert config.data.max_tokens == 32
    inputs, _, _ = make_detr_batch(split, split.records[1:2], max_frames=16, max_tokens=32,
                                   max_windows=5, rng=None, layout="lighthouse")
    assert inputs.text_mask.sum() == 32


def test_too_long_text_is_an_error_naming_the_qid(split):
    with pytest.raises(layout_lib.TextTooLongError, match=r"qid 'long' \(50 tokens\)"):
        layout_lib.resolve_run_config(_data_config("dcase", 20), [split])
    with pytest.raises(layout_lib.TextTooLongError, match="'long'") as err:
        make_detr_batch(split, split.records, max_frames=16, max_tokens=20, max_windows=5,
                        rng=None, layout="dcase")
    assert "s1" not in str(err.value)


def test_layout_defaults():
    config = qd_detr.get_config()
    assert config.data.layout == "dcase"  # the official baseline is the default
    for layout, metric in (("dcase", "R1@0.7"), ("lighthouse", "mAP")):
        resolved = layout_lib.resolve_run_config(_data_config(layout, 8), [])
        assert resolved.train.best_metric == metric
    explicit = _data_config("lighthouse", 8)
    explicit.train.best_metric = "R1@0.5"
    assert layout_lib.resolve_run_config(explicit, []).train.best_metric == "R1@0.5"
    with pytest.raises(ValueError, match="unknown input layout 'vid'"):
        layout_lib.get_layout("vid")
