"""QD-DETR outputs -> ranked windows in seconds (reference `PostProcessorDETR`).

Spans are de-normalized with the annotation duration, scored by the softmax
foreground probability (class 0), sorted by score (descending), rounded to 4
decimals, clamped to `[0, max_ts_val]` (a constant, not the duration) and
rounded to multiples of `clip_length`. No NMS.

Seed-003 options (off by default, `config.postprocess`):
  * quality re-ranking: the score becomes `p_fg * q ** gamma` (q from the
    quality head, gamma 1.5), which only re-orders the candidates;
  * short proposals (DESIGN 9.5): the decoder windows (with their final
    scores) and the saliency-peak proposals of `amr_jax.detr.proposals` are
    clipped to the duration, rounded to the clip grid and filtered by greedy
    temporal NMS (`amr_jax.localize.nms`), top K.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from amr_jax import spans as span_ops
from amr_jax.detr.proposals import saliency_peak_proposals
from amr_jax.localize.nms import nms_top_windows

PostprocessFn = Callable[[Mapping[str, jax.Array], jax.Array, jax.Array],
                         tuple[jax.Array, jax.Array]]


def candidate_scores(pred_logits: jax.Array, quality: jax.Array | None = None, *,
                     quality_gamma: float = 1.5) -> jax.Array:
    """[B, Q] score of each decoder candidate: p_fg, or p_fg * q ** gamma with `quality` [B, Q]."""
    score = jax.nn.softmax(pred_logits.astype(jnp.float32), axis=-1)[..., 0]
    if quality is not None:
        score = score * quality.astype(jnp.float32) ** quality_gamma
    return score


def postprocess(pred_logits: jax.Array, pred_spans: jax.Array, duration: jax.Array, *,
                max_ts_val: float, clip_length: float, top_k: int,
                quality: jax.Array | None = None, quality_gamma: float = 1.5
                ) -> tuple[jax.Array, jax.Array]:
    """Ranked windows of every query.

    Args:
      pred_logits: [B, Q, 2] logits, class 0 = foreground.
      pred_spans: [B, Q, 2] normalized (center, width).
      duration: [B] seconds.
      max_ts_val: upper clamp in seconds.
      clip_length: rounding grid in seconds.
      top_k: number of windows to return (K).
      quality: optional [B, Q] quality-head output; when given, candidates are
        scored (and ordered) by `p_fg * quality ** quality_gamma`.
      quality_gamma: exponent of the quality (1.5).

    Returns:
      windows [B, K, 3] (start_s, end_s, score) best first, and valid [B, K]
      bool (False only where Q < K).
    """
    num_queries = pred_logits.shape[1]
    score = candidate_scores(pred_logits, quality, quality_gamma=quality_gamma)
    xx = span_ops.cxw_to_xx(pred_spans.astype(jnp.float32)) * duration[:, None, None]
    order = jnp.argsort(-score, axis=1, stable=True)
    score = jnp.take_along_axis(score, order, axis=1)
    xx = jnp.take_along_axis(xx, order[..., None], axis=1)
    xx = jnp.round(xx, 4)
    xx = jnp.clip(xx, 0.0, max_ts_val)
    xx = jnp.round(xx / clip_length) * clip_length
    windows = jnp.concatenate([xx, jnp.round(score, 4)[..., None]], axis=-1)
    k = min(top_k, num_queries)
    windows = windows[:, :k]
    valid = jnp.ones(windows.shape[:2], bool)
    if k < top_k:
        pad = top_k - k
        windows = jnp.pad(windows, ((0, 0), (0, pad), (0, 0)))
        valid = jnp.pad(valid, ((0, 0), (0, pad)))
    return windows, valid


def postprocess_with_proposals(pred_logits: jax.Array, pred_spans: jax.Array,
                               saliency: jax.Array, audio_mask: jax.Array, duration: jax.Array,
                               *, max_ts_val: float, clip_length: float, top_k: int,
                               num_peaks: int, coefficient: float, nms_iou: float,
                               quality: jax.Array | None = None, quality_gamma: float = 1.5
                               ) -> tuple[jax.Array, jax.Array]:
    """Decoder windows + short saliency-peak proposals, clipped, rounded, NMS, top K.

    Args:
      pred_logits, pred_spans, duration, max_ts_val, clip_length, top_k,
        quality, quality_gamma: as in `postprocess` (decoder windows are
        de-normalized, rounded to 4 decimals and clamped to [0, max_ts_val]
        as there).
      saliency: [B, T] positive-pair saliency scores.
      audio_mask: [B, T] bool valid frames.
      num_peaks, coefficient: see `saliency_peak_proposals`.
      nms_iou: NMS suppression threshold (IoU strictly above it suppresses).

    Returns:
      windows [B, K, 3] (start_s, end_s, score) best first (score rounded to 4
      decimals), valid [B, K] bool; invalid rows are zero.
    """
    score = candidate_scores(pred_logits, quality, quality_gamma=quality_gamma)
    xx = span_ops.cxw_to_xx(pred_spans.astype(jnp.float32)) * duration[:, None, None]
    xx = jnp.clip(jnp.round(xx, 4), 0.0, max_ts_val)
    p_start, p_end, p_score = saliency_peak_proposals(
        saliency, audio_mask, num_peaks=num_peaks, coefficient=coefficient,
        clip_length=clip_length)
    start = jnp.concatenate([xx[..., 0], p_start], axis=1)
    end = jnp.concatenate([xx[..., 1], p_end], axis=1)
    score = jnp.concatenate([score, p_score], axis=1)
    dur = duration.astype(jnp.float32)[:, None]
    start = jnp.round(jnp.clip(start, 0.0, dur) / clip_length) * clip_length
    end = jnp.round(jnp.clip(end, 0.0, dur) / clip_length) * clip_length
    windows, valid = nms_top_windows(start, end, score, iou_threshold=nms_iou,
                                     num_windows=top_k)
    windows = windows.at[..., 2].set(jnp.round(windows[..., 2], 4))
    return windows, valid


def build_postprocess(config: ml_collections.ConfigDict, *, clip_length: float
                      ) -> PostprocessFn:
    """`fn(outputs, audio_mask, duration) -> (windows, valid)` from `config.postprocess`.

    `quality_rerank` reads `outputs["pred_quality"]` (the model needs
    `quality_head`); `short_proposals` reads `outputs["saliency_scores"]`.
    """
    common = dict(max_ts_val=config.max_ts_val, clip_length=clip_length, top_k=config.top_k,
                  quality_gamma=config.quality_gamma)

    def quality_of(outputs):
        if not config.quality_rerank:
            return None
        if "pred_quality" not in outputs:
            raise KeyError("postprocess.quality_rerank needs `pred_quality` in the model "
                           "outputs: set config.model.quality_head = True")
        return outputs["pred_quality"]

    def fn(outputs, audio_mask, duration):
        if config.short_proposals:
            return postprocess_with_proposals(
                outputs["pred_logits"], outputs["pred_spans"], outputs["saliency_scores"],
                audio_mask, duration, num_peaks=config.short_num_peaks,
                coefficient=config.short_coefficient, nms_iou=config.nms_iou,
                quality=quality_of(outputs), **common)
        return postprocess(outputs["pred_logits"], outputs["pred_spans"], duration,
                           quality=quality_of(outputs), **common)

    return fn
