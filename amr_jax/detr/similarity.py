"""UVCOM's multi-aspect contrastive similarity loss and similarity-selected negatives.

DESIGN 9.6 (lighthouse `lighthouse/common/uvcom.py` `SetCriterion.get_sim_loss`,
`CIM.forward`). The model projects its global audio token, its mean text
embedding and every pre-encoder audio frame with small MLPs and unit-normalizes
them; from those

* `sim_global` [B, B]: cosine of audio row i's global token with text j
  ("video-level alignment over the batch");
* `sim_clip` [B, T]: cosine of each frame of row i with its own text
  ("clip-text alignment within the moment").

    loss_sim = -(0.5 * (mean_i log softmax_j S[i, j] |_{j=i} + same over S^T) / 2
                 + 0.5 * mean_i sum_{t in moment_i} log softmax_t C[i, t] / n_i)

with the moment the first target window mapped to frames
`[floor(start * n_i), floor(end * n_i))` of the `n_i` valid frames. Both
similarities enter with temperature 1, as in the reference, so the loss is not
0 at perfect alignment (its floor depends on the batch size and moment
lengths); it is 0 only for arbitrarily sharp logits and one-frame moments.

Deviations from the reference (so padded rows give the unpadded result): the
clip softmax runs over valid frames only and the clip term is averaged over each
row's valid frames (the reference divides by the padded batch length and
includes padded frames in the softmax). Without padding both agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from amr_jax import spans as span_ops

# Weights of the two aspects inside the loss (fixed in the reference).
GLOBAL_WEIGHT = 0.5
CLIP_WEIGHT = 0.5



def moment_frames(first_span: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Frames of the first target window, as the reference's clip-text targets.

    Args:
      first_span: [B, 2] normalized (center, width) of each row's first window.
      frame_mask: [B, T] bool valid frames.

    Returns:
      [B, T] bool, True on frames `floor(start * n) <= t < floor(end * n)`, n = valid count.
    """
    n = frame_mask.sum(axis=-1).astype(jnp.float32)
    xx = span_ops.cxw_to_xx(first_span)
    start = jnp.floor(xx[:, 0] * n)
    end = jnp.floor(xx[:, 1] * n)
    t = jnp.arange(frame_mask.shape[1], dtype=jnp.float32)[None, :]
    return (t >= start[:, None]) & (t < end[:, None]) & frame_mask


def global_alignment(sim_global: jax.Array) -> jax.Array:
    """Mean log-probability of the matching pair, audio->text and text->audio averaged.

    Args:
      sim_global: [B, B] logits, rows audio, columns text.

    Returns:
      scalar <= 0 (the negative of a symmetric InfoNCE loss).
    """
    diag = jnp.arange(sim_global.shape[0])
    a2t = jax.nn.log_softmax(sim_global, axis=-1)[diag, diag].mean()
    t2a = jax.nn.log_softmax(sim_global.T, axis=-1)[diag, diag].mean()
    return 0.5 * (a2t + t2a)


def clip_alignment(sim_clip: jax.Array, moment: jax.Array, frame_mask: jax.Array) -> jax.Array:
    """Mean over rows of `sum_{t in moment} log softmax_t(sim_clip) / n_valid`.

    Args:
      sim_clip: [B, T] logits of each frame with its row's text.
      moment: [B, T] bool target frames (`moment_frames`).
      frame_mask: [B, T] bool valid frames.

    Returns:
      scalar <= 0.
    """
    logits = jnp.where(frame_mask, sim_clip, -jnp.inf)
    log_prob = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.where(moment & frame_mask, log_prob, 0.0).sum(axis=-1)
    return (picked / jnp.maximum(frame_mask.sum(axis=-1), 1)).mean()


def similarity_loss(sim_global: jax.Array, sim_clip: jax.Array, first_span: jax.Array,
                    frame_mask: jax.Array) -> jax.Array:
    """UVCOM's `loss_sim` (see the module docstring); scalar >= 0."""
    moment = moment_frames(first_span, frame_mask)
    return -(GLOBAL_WEIGHT * global_alignment(sim_global)
             + CLIP_WEIGHT * clip_alignment(sim_clip, moment, frame_mask))


def select_negative_text(sim_global: jax.Array, sim_frames_text: jax.Array) -> jax.Array:
    """Index of the least similar *other* text for every audio row.

    The reference's score: the mean of `softmax_j(sim_global[i, j])` and
    `softmax_j(mean_t cos(frame_it, text_j))`; the smallest wins. The diagonal
    is excluded (a deviation: the reference can pick the row's own text in
    principle, which would make the "negative" a positive).

    Args:
      sim_global: [B, B] audio-global x text cosine similarities.
      sim_frames_text: [B, B] mean over each row's valid frames of frame x text cosines.

    Returns:
      [B] int32 text row to pair with each audio row (its own row only when B == 1).
    """
    score = 0.5 * (jax.nn.softmax(sim_global, axis=-1) + jax.nn.softmax(sim_frames_text, axis=-1))
    batch = score.shape[0]
    if batch > 1:
        score = jnp.where(jnp.eye(batch, dtype=bool), jnp.inf, score)
    return jnp.argmin(score, axis=-1).astype(jnp.int32)
