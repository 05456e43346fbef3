"""Feature readers and split loading: layouts and every bad-input case."""

import json
import logging

import numpy as np
import pytest

from amr_jax.data import batching, features
from amr_jax.data.errors import FeatureError
from amr_jax.data.loader import load_split


def _split(tmp_path, n_frames=(30, 40), durations=(30, 40)):
    audio_dir, text_dir = tmp_path / "clap", tmp_path / "clap_text"
    audio_dir.mkdir(), text_dir.mkdir()
    lines = []
    rng = np.random.default_rng(0)
    for i, (t, d) in enumerate(zip(n_frames, durations)):
        vid = f"v{i}"
        np.savez(audio_dir / f"{vid}.npz", features=rng.standard_normal((t, 768)).astype(np.float32))
        for k in range(2):
            qid = f"{vid}_{k}"
            np.savez(text_dir / f"qid{qid}.npz",
                     last_hidden_state=rng.standard_normal((5 + k, 768)).astype(np.float32))
            lines.append({"qid": qid, "query": "q", "duration": d, "vid": vid,
                          "relevant_windows": [[1, 4]]})
    ann = tmp_path / "ann.jsonl"
    ann.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return ann, audio_dir, text_dir


def test_load_split_shares_audio_and_pads(tmp_path):
    ann, audio_dir, text_dir = _split(tmp_path)
    split = load_split(ann, audio_dir, text_dir, progress=False)
    assert split.vids == ["v0", "v1"] and len(split.records) == 4
    np.testing.assert_array_equal(split.vid_index(), [0, 0, 1, 1])
    batch = batching.make_query_batch(split, split.records, max_frames=35, max_tokens=8, max_windows=3)
    assert batch.audio.shape == (4, 35, 768) and batch.audio_mask.sum(1).tolist() == [30, 30, 35, 35]
    assert batch.text_mask.sum(1).tolist() == [5, 6, 5, 6]
    np.testing.assert_array_equal(batch.audio[0, :30], split.audio["v0"])
    assert not batch.audio[0, 30:].any()
    assert batch.window_mask.sum(1).tolist() == [1, 1, 1, 1]


def test_all_missing_files_listed(tmp_path):
    ann, audio_dir, text_dir = _split(tmp_path)
    (audio_dir / "v0.npz").unlink()
    (audio_dir / "v1.npz").unlink()
    with pytest.raises(FeatureError) as e:
        load_split(ann, audio_dir, text_dir, progress=False)
    assert "2 of 2 audio feature files are missing" in str(e.value)
    assert "v0.npz" in str(e.value) and "v1.npz" in str(e.value)
    (tmp_path / "b").mkdir()
    ann, audio_dir, text_dir = _split(tmp_path / "b")
    for q in ("v0_1", "v1_0"):
        (text_dir / f"qid{q}.npz").unlink()
    with pytest.raises(FeatureError, match=r"(?s)2 of 4 text.*qidv0_1.npz.*qidv1_0.npz"):
        load_split(ann, audio_dir, text_dir, progress=False)


def test_duration_disagreement_warns_naming_vid(tmp_path, caplog):
    ann, audio_dir, text_dir = _split(tmp_path, n_frames=(30, 40), durations=(31, 45))
    with caplog.at_level(logging.WARNING):
        load_split(ann, audio_dir, text_dir, progress=False)
    assert "vid v1" in caplog.text and "40 feature frames but duration 45" in caplog.text
    assert "vid v0" not in caplog.text  # 1 s difference is the normal extractor offset


@pytest.mark.parametrize("array, message", [
    (np.full((10, 768), np.nan, np.float32), "NaN/inf"),
    (np.pad(np.ones((10, 768), np.float32), 0) * np.r_[np.ones(9), np.inf][:, None], "rows [9]"),
    (np.ones((10, 512), np.float32), "width 512, expected 768"),
    (np.ones((0, 768), np.float32), "0 frame(s)"),
    (np.ones((1, 768), np.float32), "1 frame(s)"),
    (np.ones((10,), np.float32), "must be 2-D"),
    (np.ones((10, 768), np.int32), "dtype int32"),
])
def test_bad_audio(tmp_path, array, message):
    path = tmp_path / "x.npz"
    np.savez(path, features=array)
    with pytest.raises(FeatureError) as e:
        features.load_audio_features(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_bad_files(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, feats=np.ones((3, 768), np.float32))
    with pytest.raises(FeatureError, match="missing key 'features'"):
        features.load_audio_features(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(FeatureError, match="not a readable .npz"):
        features.load_audio_features(path)


def test_text_layouts(tmp_path):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 768)).astype(np.float32)
    np.savez(tmp_path / "plain.npz", last_hidden_state=rows)
    np.testing.assert_array_equal(features.load_text_features(tmp_path / "plain.npz"), rows)
    padded = np.full((77, 768), np.nan, np.float32)  # padded rows may hold garbage
    padded[:6] = rows
    mask = np.zeros(77, np.int64)
    mask[:6] = 1
    np.savez(tmp_path / "padded.npz", last_hidden_state=padded[None], attention_mask=mask[None])
    np.testing.assert_array_equal(features.load_text_features(tmp_path / "padded.npz"), rows)
    np.savez(tmp_path / "empty.npz", last_hidden_state=padded, attention_mask=np.zeros(77))
    with pytest.raises(FeatureError, match="no valid text rows"):
        features.load_text_features(tmp_path / "empty.npz")


def test_pad_windows_and_truncation():
    w, m = batching.pad_windows([np.array([[1, 2], [3, 4], [5, 6]], np.float32), None], 2)
    np.testing.assert_array_equal(w[0], [[1, 2], [3, 4]])
    assert m.tolist() == [[True, True], [False, False]]
    x, mask = batching.pad_rows([np.arange(10, dtype=np.float32).reshape(5, 2)], 3)
    np.testing.assert_array_equal(x[0], [[0, 1], [2, 3], [4, 5]])  # first rows kept
    assert mask.all()
