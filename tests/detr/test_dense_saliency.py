"""Dense all-window saliency labels (DESIGN 9.2) and the saliency loss that reads them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from amr_jax.data.loader import Split
from amr_jax.data.records import QueryRecord
from amr_jax.detr import inputs as detr_inputs
from amr_jax.detr.criterion import make_saliency_term
from amr_jax.detr.dense_saliency import all_window_saliency_labels
from amr_jax.detr.inputs import DetrTargets
from torch_reference import torch_saliency


def test_hand_made_labels_and_pairs():
    # Frame i covers [i, i+1): [2, 5] -> frames 2..4; [8, 9.5] -> frame 8 (reference rule
    # int(9.5) - 1 = 8); [11, 30] is cut at ctx_l = 12 -> frame 11.
    windows = np.array([[2, 5], [8, 9.5], [11, 30]])
    expected = np.zeros(16, np.float32)
    expected[[2, 3, 4, 8, 11]] = 1
    for seed in range(20):
        pos, neg, labels = all_window_saliency_labels(windows, 12, 16,
                                                      np.random.default_rng(seed))
        np.testing.assert_array_equal(labels, expected)
        assert pos[0] != pos[1] and neg[0] != neg[1]
        assert set(pos) <= {2, 3, 4, 8, 11}
        assert set(neg) <= {0, 1, 5, 6, 7, 9, 10}  # valid, unlabelled (not 12..15)
    # Uniform sampling: every labelled frame is drawn as a positive over many seeds.
    drawn = {int(p) for s in range(60)
             for p in all_window_saliency_labels(windows, 12, 16, np.random.default_rng(s))[0]}
    assert drawn == {2, 3, 4, 8, 11}


def test_fallbacks_single_positive_and_no_negatives():
    pos, neg, labels = all_window_saliency_labels(np.array([[3, 4]]), 10, 10,
                                                  np.random.default_rng(0))
    np.testing.assert_array_equal(pos, [3, 3])
    assert labels.sum() == 1 and neg[0] != neg[1] and labels[neg].sum() == 0
    # Every valid frame labelled: fewer than 2 negatives -> the positives are reused.
    pos, neg, labels = all_window_saliency_labels(np.array([[0, 3], [3, 6]]), 6, 8,
                                                  np.random.default_rng(0))
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(neg, pos)


def test_first_window_labels_are_a_subset():
    rng = np.random.default_rng(1)
    for _ in range(50):
        ctx = int(rng.integers(3, 40))
        k = int(rng.integers(1, 6))
        st = rng.uniform(0, ctx, k)
        windows = np.stack([st, st + rng.uniform(0.3, 10, k)], -1)
        _, _, first = detr_inputs.saliency_labels(windows[0], ctx, 40, np.random.default_rng(0))
        _, _, dense = all_window_saliency_labels(windows, ctx, 40, np.random.default_rng(0))
        assert (dense >= first).all() and dense[ctx:].sum() == 0


def _record(qid, vid, windows, duration):
    w = np.asarray(windows, np.float32).reshape(-1, 2)
    return QueryRecord(qid=qid, query="q", duration=float(duration), vid=vid, windows=w,
                       raw_windows=w.astype(np.float64))


def test_batch_uses_every_window_beyond_max_windows():
    rng = np.random.default_rng(0)
    windows = [[30, 34], [1, 3], [10, 12], [14, 15], [20, 25], [36, 40], [5, 7]]
    records = [_record("q1", "a", windows, 40), _record("q2", "a", [[2, 6]], 40)]
    split = Split(records=records, audio={"a": rng.normal(size=(40, 768)).astype(np.float32)},
                  text={r.key: rng.normal(size=(4, 768)).astype(np.float32) for r in records},
                  vids=["a"], annotations=Path("x.jsonl"))
    _, targets, _ = detr_inputs.make_detr_batch(
        split, records, max_frames=48, max_tokens=8, max_windows=5,
        rng=np.random.default_rng(0), saliency_label_mode="all_windows")
    expected = np.zeros(48, np.float32)
    for st, ed in windows:  # all 7 windows, although only 5 are span targets
        expected[st:ed] = 1
    np.testing.assert_array_equal(targets.saliency_labels[0], expected)
    np.testing.assert_array_equal(targets.saliency_labels[1, :8], [0, 0, 1, 1, 1, 1, 0, 0])
    assert targets.span_mask[0].sum() == 5
    # The reference mode on the same batch labels one window only.
    _, ref, _ = detr_inputs.make_detr_batch(split, records, max_frames=48, max_tokens=8,
                                            max_windows=5, rng=np.random.default_rng(0))
    assert ref.saliency_labels[0].sum() < expected.sum()
    with pytest.raises(ValueError, match="all_windows"):
        detr_inputs.make_detr_batch(split, records, max_frames=48, max_tokens=8, max_windows=5,
                                    rng=np.random.default_rng(0), saliency_label_mode="dense")


def test_saliency_loss_with_dense_labels_matches_torch():
    """Hinge pairs and the rank-contrastive term read the dense labels (torch reference)."""
    b, t = 3, 14
    rng = np.random.default_rng(2)
    ctx = np.array([14, 9, 12])
    mask = np.arange(t)[None] < ctx[:, None]
    win = [np.array([[1, 3], [6, 9]]), np.array([[0, 2], [4, 5], [7, 9]]), np.array([[10, 12]])]
    pos, neg, labels = zip(*(all_window_saliency_labels(w, int(c), t, np.random.default_rng(i))
                             for i, (w, c) in enumerate(zip(win, ctx))))
    pos, neg, labels = np.stack(pos), np.stack(neg), np.stack(labels)
    scores = rng.normal(size=(b, t)).astype(np.float32)
    scores_neg = rng.normal(size=(b, t)).astype(np.float32)
    targets = DetrTargets(spans=np.zeros((b, 1, 2), np.float32), span_mask=np.ones((b, 1), bool),
                          saliency_pos=pos, saliency_neg=neg, saliency_labels=labels)
    term = make_saliency_term(margin=0.2, tau=0.5, num_ranks=12)
    ours = float(term({"saliency_scores": scores, "saliency_scores_neg": scores_neg}, targets,
                      mask))
    ref = torch_saliency(torch.tensor(scores), torch.tensor(scores_neg), torch.tensor(labels),
                         torch.tensor(mask), torch.tensor(pos).long(), torch.tensor(neg).long(),
                         tau=0.5, num_ranks=12, margin=0.2)
    assert ours == pytest.approx(float(sum(ref)), rel=1e-5)
