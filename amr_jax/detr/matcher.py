"""Hungarian matching of predicted spans to padded target spans, on device.

Cost (lighthouse `HungarianMatcher`): `w_span * L1(cxw) - w_giou * gIoU(xx) -
w_class * p_fg`, with class index 0 the foreground. Padded target columns get
one finite constant cost for every query, so they cannot change which queries
the real targets choose: any optimal assignment of the padded problem
restricted to the real columns is optimal for the unpadded one (this needs
Q >= W, checked). Non-finite costs are replaced by finite bounds
(`nan_to_num`) so the solver always terminates.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from amr_jax import spans as span_ops

# Cost of every (query, padded target) pair. Any constant works (see above);
# a value of the order of real costs keeps the solver's float32 duals precise.
PAD_COST = 0.0
# Bound that replaces non-finite costs: far worse than any real pair
# (|L1| <= 4 per unit weight for spans in [-1, 2], |gIoU| <= 1, p in [0, 1]).
NONFINITE_COST = 1e4
# A valid, non-degenerate span used in place of padded targets so that no
# NaN/inf appears in the cost (and in gradients of the losses that reuse it).
SAFE_SPAN = (0.5, 0.5)


@flax.struct.dataclass
class Matching:
    """Result of matching one layer's predictions to the targets.

    Attributes:
      src_for_target: [B, W] int32 query index matched to each target slot
        (arbitrary but in range for padded slots).
      target_mask: [B, W] bool, True on real targets (the only matched pairs).
      query_matched: [B, Q] bool, True for queries matched to a real target.
    """

    src_for_target: jax.Array
    target_mask: jax.Array
    query_matched: jax.Array


def safe_target_spans(spans: jax.Array, mask: jax.Array) -> jax.Array:
    """Replaces padded [..., W, 2] (center, width) targets by a valid span."""
    return jnp.where(mask[..., None], spans, jnp.asarray(SAFE_SPAN, spans.dtype))


def match_cost(pred_logits: jax.Array, pred_spans: jax.Array, tgt_spans: jax.Array,
               tgt_mask: jax.Array, *, cost_span: float, cost_giou: float,
               cost_class: float) -> jax.Array:
    """Matching cost of every (query, target) pair.

    Args:
      pred_logits: [B, Q, 2] logits, class 0 = foreground.
      pred_spans: [B, Q, 2] normalized (center, width).
      tgt_spans: [B, W, 2] normalized (center, width), padded.
      tgt_mask: [B, W] bool.
      cost_span, cost_giou, cost_class: weights of the three terms.

    Returns:
      [B, Q, W] finite cost; padded columns equal PAD_COST.
    """
    tgt = safe_target_spans(tgt_spans, tgt_mask)
    prob_fg = jax.nn.softmax(pred_logits, axis=-1)[..., 0]
    l1 = jnp.abs(pred_spans[..., :, None, :] - tgt[..., None, :, :]).sum(-1)
    giou = span_ops.pairwise_giou(span_ops.cxw_to_xx(pred_spans), span_ops.cxw_to_xx(tgt))
    cost = cost_span * l1 - cost_giou * giou - cost_class * prob_fg[..., :, None]
    cost = jnp.nan_to_num(cost, nan=NONFINITE_COST, posinf=NONFINITE_COST,
                          neginf=-NONFINITE_COST)
    return jnp.where(tgt_mask[..., None, :], cost, PAD_COST)


def assign(cost: jax.Array) -> jax.Array:
    """[B, Q, W] cost (Q >= W) -> [B, W] int32 query index for each target."""
    num_queries, num_targets = cost.shape[-2:]
    if num_queries < num_targets:
        raise ValueError(f"need at least as many queries ({num_queries}) as target slots "
                         f"({num_targets})")

    def one(c):
        rows, cols = optax.assignment.hungarian_algorithm(c)
        return jnp.zeros((num_targets,), jnp.int32).at[cols].set(rows.astype(jnp.int32))

    return jax.vmap(one)(cost)


def hungarian_match(pred_logits: jax.Array, pred_spans: jax.Array, tgt_spans: jax.Array,
                    tgt_mask: jax.Array, *, cost_span: float, cost_giou: float,
                    cost_class: float) -> Matching:
    """Matches one layer's predictions to the targets (no gradient flows through).

    Shapes as in `match_cost`; returns a `Matching` with fixed shapes.
    """
    cost = match_cost(jax.lax.stop_gradient(pred_logits), jax.lax.stop_gradient(pred_spans),
                      tgt_spans, tgt_mask, cost_span=cost_span, cost_giou=cost_giou,
                      cost_class=cost_class)
    src = assign(cost)
    num_queries = pred_logits.shape[-2]
    hit = jax.nn.one_hot(src, num_queries, dtype=jnp.bool_) & tgt_mask[..., None]
    return Matching(src_for_target=src, target_mask=tgt_mask, query_matched=hit.any(axis=-2))
