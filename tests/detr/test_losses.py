"""QD-DETR losses: perfect-prediction minimum, finite gradients under masks, torch parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_reference import torch_giou_diag, torch_saliency, torch_xx

from amr_jax.detr import losses

B, Q, W, T, P = 4, 10, 5, 12, 2
TAU, RANKS, MARGIN, EOS = 0.5, 12, 0.2, 0.1


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    num = np.array([1, 3, 5, 2])
    span_mask = np.arange(W)[None] < num[:, None]
    tgt = np.stack([rng.uniform(0.2, 0.8, (B, W)), rng.uniform(0.05, 0.4, (B, W))], -1)
    tgt = np.where(span_mask[..., None], tgt, 0.0).astype(np.float32)
    pred = np.stack([rng.uniform(0.2, 0.8, (B, W)), rng.uniform(0.05, 0.4, (B, W))], -1)
    ctx = np.array([12, 7, 9, 10])
    frame_mask = np.arange(T)[None] < ctx[:, None]
    labels = np.zeros((B, T), np.float32)
    pos = np.zeros((B, P), np.int32)
    neg = np.zeros((B, P), np.int32)
    for b in range(B):
        st = rng.integers(0, ctx[b] - 3)
        labels[b, st:st + 3] = 1
        pos[b] = rng.choice(np.arange(st, st + 3), P, replace=False)
        outside = np.setdiff1d(np.arange(ctx[b]), np.arange(st, st + 3))
        neg[b] = rng.choice(outside, P, replace=False)
    return dict(
        tgt=tgt, span_mask=span_mask, pred=pred.astype(np.float32),
        logits=rng.normal(size=(B, Q, 2)).astype(np.float32),
        fg=rng.random((B, Q)) < 0.3, frame_mask=frame_mask, labels=labels, pos=pos, neg=neg,
        scores=rng.normal(size=(B, T)).astype(np.float32) * 2,
        scores_neg=rng.normal(size=(B, T)).astype(np.float32) * 2)


# ---------------------------------------------------------------- parity

def _t(x):
    return torch.tensor(np.asarray(x))


def test_span_l1_and_giou_match_torch(data):
    m = data["span_mask"]
    l1 = np.asarray(losses.span_l1(data["pred"], data["tgt"], m))
    gi = np.asarray(losses.span_giou(data["pred"], data["tgt"], m))
    p, t = _t(data["pred"][m]), _t(data["tgt"][m])
    ref_l1 = F.l1_loss(p, t, reduction="none").mean()
    ref_gi = (1 - torch_giou_diag(torch_xx(p), torch_xx(t))).mean()
    assert l1.sum() / m.sum() == pytest.approx(float(ref_l1), rel=1e-5)
    assert gi.sum() / m.sum() == pytest.approx(float(ref_gi), rel=1e-5)
    assert (l1[~m] == 0).all() and (gi[~m] == 0).all()


def test_label_ce_matches_torch_weighted_mean(data):
    ours = np.asarray(losses.label_ce(data["logits"], data["fg"], eos_coef=EOS)).mean()
    target = torch.where(_t(data["fg"]), 0, 1)
    ref = F.cross_entropy(_t(data["logits"]).transpose(1, 2), target,
                          torch.tensor([1.0, EOS]), reduction="none").mean()
    assert ours == pytest.approx(float(ref), rel=1e-5)


def test_saliency_terms_match_torch(data):
    hinge = losses.saliency_hinge(data["scores"], data["pos"], data["neg"], margin=MARGIN)
    rank = losses.saliency_rank_contrastive(data["scores"], data["scores_neg"], data["labels"],
                                            data["frame_mask"], tau=TAU, num_ranks=RANKS)
    negp = losses.saliency_negative_pair(data["scores_neg"], data["frame_mask"])
    ref = torch_saliency(_t(data["scores"]), _t(data["scores_neg"]), _t(data["labels"]),
                         _t(data["frame_mask"]), _t(data["pos"]).long(), _t(data["neg"]).long(),
                         tau=TAU, num_ranks=RANKS, margin=MARGIN)
    for ours, r in zip((hinge, rank, negp), ref):
        assert float(jnp.mean(ours)) == pytest.approx(float(r), rel=1e-5)


def test_saliency_ignores_padded_frames(data):
    """Padded equals unpadded: garbage on masked frames changes nothing."""
    noisy = np.where(data["frame_mask"], data["scores"], 1e4).astype(np.float32)
    noisy_neg = np.where(data["frame_mask"], data["scores_neg"], -7.0).astype(np.float32)
    a = losses.saliency_rank_contrastive(data["scores"], data["scores_neg"], data["labels"],
                                         data["frame_mask"], tau=TAU, num_ranks=RANKS)
    b = losses.saliency_rank_contrastive(noisy, noisy_neg, data["labels"], data["frame_mask"],
                                         tau=TAU, num_ranks=RANKS)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(
        losses.saliency_negative_pair(data["scores_neg"], data["frame_mask"]),
        losses.saliency_negative_pair(noisy_neg, data["frame_mask"]))


# ---------------------------------------------------------------- minima

def test_perfect_predictions_give_minimal_losses(data):
    m = data["span_mask"]
    assert np.abs(np.asarray(losses.span_l1(data["tgt"], data["tgt"], m))).max() < 1e-7
    assert np.abs(np.asarray(losses.span_giou(data["tgt"], data["tgt"], m))).max() < 1e-6
    logits = np.where(data["fg"][..., None], [30.0, -30.0], [-30.0, 30.0]).astype(np.float32)
    assert np.asarray(losses.label_ce(logits, data["fg"], eos_coef=EOS)).max() < 1e-6
    big = 40.0
    scores = np.where(data["labels"] > 0, big, -big).astype(np.float32)
    scores_neg = np.full((B, T), -big, np.float32)
    hinge = losses.saliency_hinge(scores, data["pos"], data["neg"], margin=MARGIN)
    assert np.asarray(hinge).max() == 0
    assert np.asarray(losses.saliency_negative_pair(scores_neg, data["frame_mask"])).max() < 1e-12
    # Rank-contrastive minimum: all softmax mass spread evenly on the positives.
    rank = np.asarray(losses.saliency_rank_contrastive(
        scores, scores_neg, data["labels"], data["frame_mask"], tau=TAU, num_ranks=RANKS))
    npos = data["labels"].sum(1)
    np.testing.assert_allclose(rank, np.log(npos) / RANKS, atol=1e-5)


# ---------------------------------------------------------------- gradients

def test_gradients_are_finite_under_masks(data):
    def total(pred, logits, scores, scores_neg):
        m = data["span_mask"]
        rank = losses.saliency_rank_contrastive(scores, scores_neg, data["labels"],
                                                data["frame_mask"], tau=TAU, num_ranks=RANKS)
        return (losses.span_l1(pred, data["tgt"], m).sum()
                + losses.span_giou(pred, data["tgt"], m).sum()
                + losses.label_ce(logits, data["fg"], eos_coef=EOS).mean()
                + losses.saliency_hinge(scores, data["pos"], data["neg"], margin=MARGIN).mean()
                + rank.mean()
                + losses.saliency_negative_pair(scores_neg, data["frame_mask"]).mean())

    # Degenerate values on masked entries: zero-width spans and huge scores.
    pred = np.where(data["span_mask"][..., None], data["pred"], 0.0).astype(np.float32)
    scores = np.where(data["frame_mask"], data["scores"], 1e6).astype(np.float32)
    scores_neg = np.where(data["frame_mask"], data["scores_neg"], 1e6).astype(np.float32)
    grads = jax.grad(total, argnums=(0, 1, 2, 3))(pred, data["logits"], scores, scores_neg)
    for g in grads:
        assert np.isfinite(np.asarray(g)).all()
    # Masked entries receive no gradient.
    assert (np.asarray(grads[0])[~data["span_mask"]] == 0).all()
    assert (np.asarray(grads[2])[~data["frame_mask"]] == 0).all()
    assert (np.asarray(grads[3])[~data["frame_mask"]] == 0).all()
