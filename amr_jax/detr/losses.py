"""QD-DETR losses as pure functions with keyword-only hyperparameters.

Each function returns unreduced per-pair / per-query / per-example values
(zero where masked); the criterion reduces them. Semantics follow lighthouse
`SetCriterion` (QD-DETR):
  * span L1 on normalized (center, width), mean over both coordinates;
  * 1 - gIoU on (start, end);
  * 2-class cross-entropy, class 0 = foreground, background weighted by
    `eos_coef`, then a plain mean over all B*Q entries (not weight-normalized);
  * saliency = hinge over sampled frame pairs + rank-contrastive over positive
    and negative-pair scores + `-log(1 - sigmoid(s_neg))` on negative pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amr_jax import spans as span_ops
from amr_jax.detr.matcher import safe_target_spans

# Masked frames get this score before the temperature, as the reference does.
MASKED_SCORE = -1e3
# Epsilons of the reference rank-contrastive loss (kept for parity).
LOG_EPS = 1e-6


def span_l1(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """L1 distance of matched spans.

    Args:
      pred: [B, W, 2] matched predictions, normalized (center, width).
      target: [B, W, 2] targets, same layout.
      mask: [B, W] bool, True on real pairs.

    Returns:
      [B, W] mean absolute difference over the two coordinates; 0 where masked.
    """
    diff = jnp.abs(pred - target).mean(axis=-1)
    return jnp.where(mask, diff, 0.0)


def span_giou(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """1 - gIoU of matched spans; shapes as `span_l1`, returns [B, W] (0 where masked)."""
    tgt = safe_target_spans(target, mask)
    giou = span_ops.pairwise_giou(span_ops.cxw_to_xx(pred)[..., :, None, :],
                                  span_ops.cxw_to_xx(tgt)[..., :, None, :])[..., 0, 0]
    return jnp.where(mask, 1.0 - giou, 0.0)


def label_ce(logits: jax.Array, is_foreground: jax.Array, *, eos_coef: float) -> jax.Array:
    """Weighted foreground/background cross-entropy of every query.

    Args:
      logits: [B, Q, 2], class 0 = foreground, 1 = background.
      is_foreground: [B, Q] bool, True for queries matched to a target.
      eos_coef: weight of the background class.

    Returns:
      [B, Q] `w_c * -log p_c` with w = (1, eos_coef) for the target class c;
      the reference averages these over all B*Q entries.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.where(is_foreground, logp[..., 0], logp[..., 1])
    return jnp.where(is_foreground, 1.0, eos_coef) * nll


def saliency_hinge(scores: jax.Array, pos_idx: jax.Array, neg_idx: jax.Array, *,
                   margin: float) -> jax.Array:
    """Margin ranking between sampled positive and negative frames.

    Args:
      scores: [B, T] positive-pair saliency scores.
      pos_idx: [B, P] int frame indices inside the window.
      neg_idx: [B, P] int frame indices outside it.
      margin: hinge margin.

    Returns:
      [B] `2 / P * sum_p max(0, margin + s_neg_p - s_pos_p)`; its batch mean is
      the reference value.
    """
    pos = jnp.take_along_axis(scores, pos_idx, axis=1)
    neg = jnp.take_along_axis(scores, neg_idx, axis=1)
    num_pairs = pos_idx.shape[1]
    return jnp.maximum(margin + neg - pos, 0.0).sum(axis=1) / num_pairs * 2.0


def saliency_rank_contrastive(scores: jax.Array, scores_neg: jax.Array, labels: jax.Array,
                              mask: jax.Array, *, tau: float, num_ranks: int) -> jax.Array:
    """Rank-aware contrastive loss over positive- and negative-pair frames.

    Frames of the positive pair and of the negative pair (text of another
    query) are pooled per query; for each rank r = 1 .. num_ranks - 1, frames
    with label >= r are positives of a SupCon-style softmax over the pool with
    temperature `tau`; the sum over ranks is divided by `num_ranks` (the
    reference loops over range(1, 12) and divides by 12). Queries without any
    positive at a rank contribute 0 for it.

    Args:
      scores: [B, T] positive-pair scores.
      scores_neg: [B, T] negative-pair scores.
      labels: [B, T] float frame ranks (0 = irrelevant); 0 on padding.
      mask: [B, T] bool valid frames.
      tau: temperature.
      num_ranks: see above.

    Returns:
      [B] per-query loss; its batch mean is the reference value.
    """
    pool_mask = jnp.concatenate([mask, mask], axis=1)
    pool = jnp.concatenate([scores, scores_neg], axis=1)
    pool = jnp.where(pool_mask, pool, MASKED_SCORE) / tau
    pool_labels = jnp.concatenate([labels, jnp.zeros_like(labels)], axis=1)
    logits = pool - jax.lax.stop_gradient(pool.max(axis=1, keepdims=True))
    log_prob = logits - jnp.log(jnp.exp(logits).sum(axis=1, keepdims=True) + LOG_EPS)
    ranks = jnp.arange(1, num_ranks, dtype=labels.dtype)
    is_pos = (pool_labels[None] >= ranks[:, None, None]) & pool_mask[None]   # [R, B, 2T]
    num_pos = is_pos.sum(axis=-1)
    mean_log_prob = jnp.where(is_pos, log_prob[None], 0.0).sum(-1) / (num_pos + LOG_EPS)
    per_rank = jnp.where(num_pos > 0, -mean_log_prob, 0.0)
    return per_rank.sum(axis=0) / num_ranks


def saliency_negative_pair(scores_neg: jax.Array, mask: jax.Array) -> jax.Array:
    """`sum_t -log(1 - sigmoid(s_neg_t))` over valid frames: [B, T] -> [B].

    Computed as softplus(s), the stable form of the same quantity.
    """
    return jnp.where(mask, jax.nn.softplus(scores_neg), 0.0).sum(axis=1)


def quality_l1(pred_quality: jax.Array, pred: jax.Array, target: jax.Array,
               mask: jax.Array) -> jax.Array:
    """Quality-head loss of matched pairs (seed 003 eq. 2, DESIGN 9.3).

    Args:
      pred_quality: [B, W] quality q in (0, 1) of the prediction matched to each
        target slot.
      pred: [B, W, 2] matched predictions, normalized (center, width).
      target: [B, W, 2] targets, same layout.
      mask: [B, W] bool, True on real pairs.

    Returns:
      [B, W] `|q - IoU(pred, target)|` with the IoU (true union, normalized
      (start, end)) held constant (stop-gradient); 0 where masked. The
      criterion averages over matched pairs.
    """
    tgt = safe_target_spans(target, mask)
    iou = span_ops.pairwise_iou(span_ops.cxw_to_xx(pred)[..., :, None, :],
                                span_ops.cxw_to_xx(tgt)[..., :, None, :])[..., 0, 0]
    iou = jax.lax.stop_gradient(iou)
    return jnp.where(mask, jnp.abs(pred_quality - iou), 0.0)
