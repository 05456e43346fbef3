"""The synthetic generator: real layout, determinism, and the published qualitative finding."""

import json

import numpy as np
import pytest
from scipy.special import erf
from sklearn.metrics import roc_auc_score

from amr_jax.data.loader import load_split
from amr_jax.data.records import parse_record, read_annotations
from amr_jax.data.synthetic import draw_castella_annotations, generate_split


def _numpy_head(x, ckpt, prefix):
    """MS-CLAP projection head in plain numpy: LN(h + W2 gelu(h)), h = W1 x."""
    h = x @ ckpt[prefix + "linear1.weight"].T
    y = h + (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ ckpt[prefix + "linear2.weight"].T
    y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-5)
    y = y * ckpt[prefix + "layer_norm.weight"] + ckpt[prefix + "layer_norm.bias"]
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def test_layout_and_structure(synthetic_castella, shared_data):
    d = synthetic_castella
    records = read_annotations(d / "annotations.jsonl")
    real = {r.key: r for r in read_annotations(shared_data / "castella/castella_test_release.jsonl")}
    for r in records:  # real queries, durations and windows reused
        assert r.query == real[r.key].query and r.duration == real[r.key].duration
        np.testing.assert_array_equal(r.raw_windows, real[r.key].raw_windows)
    assert len({r.vid for r in records}) == 12
    split = load_split(d / "annotations.jsonl", d / "clap", d / "clap_text", progress=False)
    for r in split.records:
        assert split.audio[r.vid].shape == (min(int(r.duration), 300), 768)
        assert split.audio[r.vid].dtype == np.float32
    ckpt = np.load(d / "msclap_synthetic.npz")
    assert ckpt["audio_encoder.projection.linear1.weight"].shape == (1024, 768)
    assert ckpt["caption_encoder.projection.linear2.weight"].shape == (1024, 1024)
    assert json.loads((d / "SYNTHETIC.json").read_text())["SYNTHETIC"]
    for phrase in ("background_sound", "ambient_noise", "background_audio"):
        assert np.load(d / "neutral_text" / f"{phrase}.npz")["last_hidden_state"].shape[1] == 768
    torch = pytest.importorskip("torch")
    state = torch.load(d / "msclap_synthetic.pth", weights_only=True)["model"]
    np.testing.assert_array_equal(state["audio_encoder.projection.layer_norm.bias"].numpy(),
                                  ckpt["audio_encoder.projection.layer_norm.bias"])


def test_deterministic_per_seed(tmp_path):
    a = generate_split("clotho_moment", tmp_path / "a", seed=3, num_recordings=4, progress=False)
    b = generate_split("clotho_moment", tmp_path / "b", seed=3, num_recordings=4, progress=False)
    c = generate_split("clotho_moment", tmp_path / "c", seed=4, num_recordings=4, progress=False)
    assert a["num_frames"] == 4 * 61  # Clotho-Moment: duration + 1 frames
    assert a["frame_offset_s"] == -0.5  # centre-cut: frame i covers [i - 0.5, i + 0.5)
    assert (tmp_path / "a/annotations.jsonl").read_text() == (tmp_path / "b/annotations.jsonl").read_text()
    assert (tmp_path / "a/annotations.jsonl").read_text() != (tmp_path / "c/annotations.jsonl").read_text()
    vid = read_annotations(tmp_path / "a/annotations.jsonl")[0].vid
    np.testing.assert_array_equal(np.load(tmp_path / f"a/clap/{vid}.npz")["features"],
                                  np.load(tmp_path / f"b/clap/{vid}.npz")["features"])
    records = read_annotations(tmp_path / "c/annotations.jsonl")
    assert all(r.duration == 60 and len(r.windows) == 1 for r in records)


def test_drawn_castella_statistics():
    lines = draw_castella_annotations(np.random.default_rng(0), 300)
    records = [parse_record(line, where="drawn") for line in lines]
    durations = np.array([r.duration for r in records])
    lengths = np.concatenate([r.windows[:, 1] - r.windows[:, 0] for r in records])
    several = np.mean([len(r.windows) > 1 for r in records])
    assert durations.min() >= 59 and durations.max() <= 300
    assert 3 <= np.median(lengths) <= 5
    assert 0.4 <= several <= 0.65


def test_backbone_near_chance_joint_space_sharp(synthetic_castella):
    """Rank-AUC of frame relevance (GT frames vs the rest) and matched-vs-mismatched win rate."""
    d = synthetic_castella
    split = load_split(d / "annotations.jsonl", d / "clap", d / "clap_text", progress=False)
    ckpt = dict(np.load(d / "msclap_synthetic.npz"))
    rng = np.random.default_rng(0)
    auc = {"backbone": [], "joint": []}
    wins = {"backbone": [], "joint": []}
    for r in split.records:
        audio = split.audio[r.vid]
        labels = np.zeros(len(audio), bool)
        for st, en in r.windows:
            labels[int(st):int(np.ceil(en))] = True
        if labels.all() or not labels.any():
            continue
        other = split.records[rng.integers(len(split.records))]
        text, other_text = split.text[r.key][-1], split.text[other.key][-1]
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
        spaces = {
            "backbone": (unit(audio), unit(text), unit(other_text)),
            "joint": (_numpy_head(audio, ckpt, "audio_encoder.projection."),
                      _numpy_head(text, ckpt, "caption_encoder.projection."),
                      _numpy_head(other_text, ckpt, "caption_encoder.projection.")),
        }
        for name, (a, q, q_other) in spaces.items():
            s = a @ q
            auc[name].append(roc_auc_score(labels, s))
            if other.vid != r.vid:
                wins[name].append((a @ q).max() > (a @ q_other).max())
    assert abs(np.mean(auc["backbone"]) - 0.5) < 0.08
    assert np.mean(auc["joint"]) > 0.72
    assert np.mean(wins["backbone"]) < 0.65 < np.mean(wins["joint"])
