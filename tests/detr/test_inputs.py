"""Host-side QD-DETR inputs and targets against plain numpy / the reference rules."""

from pathlib import Path

import numpy as np
import pytest

from amr_jax.data.loader import Split
from amr_jax.data.records import QueryRecord
from amr_jax.detr import inputs as detr_inputs

D = 768


def _record(qid, vid, windows, duration):
    w = np.asarray(windows, np.float32).reshape(-1, 2)
    return QueryRecord(qid=qid, query="q", duration=float(duration), vid=vid, windows=w,
                       raw_windows=w.astype(np.float64))


@pytest.fixture(scope="module")
def split():
    rng = np.random.default_rng(0)
    audio = {"a": rng.normal(size=(20, D)).astype(np.float32) * 3,
             "b": rng.normal(size=(40, D)).astype(np.float32)}
    records = [
        _record("q1", "a", [[2, 6]], 20),
        _record("q2", "b", [[30, 34], [1, 3], [10, 12], [14, 15], [20, 25], [36, 40], [5, 7]], 40),
        _record("q3", "a", [[0, 20]], 20),
    ]
    text = {r.key: rng.normal(size=(n, D)).astype(np.float32) for r, n in zip(records, (4, 40, 6))}
    return Split(records=records, audio=audio, text=text, vids=["a", "b"],
                 annotations=Path("x.jsonl"))


@pytest.mark.parametrize("layout", ["dcase", "lighthouse"])
def test_inputs_layout_and_normalization(split, layout):
    max_tokens = 40 if layout == "dcase" else 8  # dcase never cuts the 40-token query
    inputs, _, batch = detr_inputs.make_detr_batch(
        split, split.records, max_frames=32, max_tokens=max_tokens, max_windows=5, rng=None,
        layout=layout)
    assert inputs.audio.shape == (3, 32, 770) and inputs.text.shape == (3, max_tokens, 768)
    ctx = np.array([20, 32, 20])  # record b has 40 frames, cut to max_frames
    np.testing.assert_array_equal(inputs.audio_mask.sum(1), ctx)
    audio_dims, tef_dims = (slice(0, D), [D, D + 1]) if layout == "dcase" else (slice(2, None), [0, 1])
    for i, r in enumerate(split.records):
        c = ctx[i]
        raw = split.audio[r.vid][:c]
        expected = raw / (np.linalg.norm(raw, axis=1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(inputs.audio[i, :c, audio_dims], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(inputs.audio[i, :c, tef_dims[0]], np.arange(c) / c, rtol=1e-6)
        np.testing.assert_allclose(inputs.audio[i, :c, tef_dims[1]], np.arange(c) / c + 1.0 / c,
                                   rtol=1e-6)
        assert (inputs.audio[i, c:] == 0).all()
        tok = split.text[r.key][:max_tokens]  # lighthouse: truncation keeps the first tokens
        n = len(tok)
        if layout == "lighthouse":
            tok = tok / (np.linalg.norm(tok, axis=1, keepdims=True) + 1e-5)
        np.testing.assert_allclose(inputs.text[i, :n], tok, rtol=1e-5)
        assert inputs.text_mask[i].sum() == n and (inputs.text[i, n:] == 0).all()
    np.testing.assert_array_equal(batch.duration, [20, 40, 20])


def test_targets_follow_reference_rules(split):
    rng = np.random.default_rng(3)
    _, targets, batch = detr_inputs.make_detr_batch(
        split, split.records, max_frames=32, max_tokens=40, max_windows=5, rng=rng)
    ctx = np.array([20, 32, 20])
    np.testing.assert_array_equal(targets.span_mask.sum(1), [1, 5, 1])
    # q1: [2, 6] / 20 -> center 0.2, width 0.2.
    np.testing.assert_allclose(targets.spans[0, 0], [0.2, 0.2], rtol=1e-6)
    # q2 has 7 windows: a random 5 of them, each normalized by ctx_l = 32 (not clipped).
    chosen = batch.windows[1][targets.span_mask[1]]
    all_w = split.records[1].windows
    assert all(any(np.allclose(c, w) for w in all_w) for c in chosen)
    assert len({tuple(c) for c in chosen.tolist()}) == 5
    np.testing.assert_allclose(targets.spans[1, :5, 0], chosen.mean(1) / 32, rtol=1e-6)
    np.testing.assert_allclose(targets.spans[1, :5, 1], (chosen[:, 1] - chosen[:, 0]) / 32,
                               rtol=1e-6)
    # Saliency from the first window of the (shuffled) list only.
    for i in range(3):
        first = batch.windows[i, 0]
        st, ed = int(first[0]), max(0, min(int(first[1]), ctx[i]) - 1)
        st = min(st, ed)
        expected = np.zeros(32)
        expected[st:ed + 1] = 1
        np.testing.assert_array_equal(targets.saliency_labels[i], expected)
        pos, neg = targets.saliency_pos[i], targets.saliency_neg[i]
        assert ((pos >= st) & (pos <= ed)).all() and (pos[0] != pos[1] or st == ed)
        if i == 2:  # window covers the whole recording: negatives fall back to the positives
            np.testing.assert_array_equal(neg, pos)
        else:
            assert (((neg < st) | (neg > ed)) & (neg < ctx[i])).all() and neg[0] != neg[1]


def test_targets_are_deterministic_for_a_seed(split):
    a = detr_inputs.make_detr_batch(split, split.records, max_frames=32, max_tokens=40,
                                    max_windows=5, rng=np.random.default_rng(7))[1]
    b = detr_inputs.make_detr_batch(split, split.records, max_frames=32, max_tokens=40,
                                    max_windows=5, rng=np.random.default_rng(7))[1]
    for name in ("spans", "saliency_pos", "saliency_neg", "saliency_labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_single_frame_window_repeats_the_positive():
    pos, neg, labels = detr_inputs.saliency_labels(np.array([4.0, 5.0]), 10, 12,
                                                   np.random.default_rng(0))
    np.testing.assert_array_equal(pos, [4, 4])
    assert labels.sum() == 1 and labels[4] == 1 and not np.isin(neg, [4]).any()


def test_blind_query_in_training_raises(split):
    blind = QueryRecord(qid="z", query="q", duration=20.0, vid="a", windows=None, raw_windows=None)
    split2 = Split(records=[blind], audio=split.audio, text={"z": split.text["q1"]}, vids=["a"],
                   annotations=Path("blind.jsonl"))
    with pytest.raises(ValueError, match="qid='z'"):
        detr_inputs.make_detr_batch(split2, [blind], max_frames=32, max_tokens=40, max_windows=5,
                                    rng=np.random.default_rng(0))


def test_training_windows_are_clipped_to_the_audio_context():
    rec = QueryRecord(qid="c", query="q", duration=299.0, vid="a",
                      windows=np.array([[10, 12]], np.float32),
                      raw_windows=np.array([[10, 12], [299, 4800], [305, 310]], np.float64))
    np.testing.assert_array_equal(
        detr_inputs.training_windows(rec, 300, max_frames=300), [[10, 12], [299, 300]])
    # Fewer feature frames (or a smaller max_frames) shrink the context.
    for frames, max_frames in ((300, 100), (299, 300)):
        np.testing.assert_array_equal(
            detr_inputs.training_windows(rec, frames, max_frames=max_frames), [[10, 12]])
