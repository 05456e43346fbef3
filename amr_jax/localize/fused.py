"""Fused training-free localizer: the other localizers' windows, rescored together.

Not in the seed reports (this project's addition, issue 15). Candidates per query (`C` in all):
the FWHM windows of the standardized, box-smoothed curve at each relative height of
`rel_heights` (`systems.fwhm_localize`, `per_source` each), the GMM posterior runs
(`systems.gmm_localize`, same settings as gmm_simple) and the duration-prior windows
(`duration_dp.dp_localize`). Each candidate gets `FEATURES`, computed the same way whatever its
source, on the frames whose centre `i + 0.5 + o` lies in `[start, end)`:

  height      max of the smoothed standardized curve `y` inside;
  mean_z      mean of the standardized curve `z` inside;
  contrast    mean `z` inside minus mean `z` over the flanks `[start - w, start)` and
              `[end, end + w)` (w = the window's width; valid frames only; 0 without flanks);
  posterior   mean GMM posterior of the relevant component inside;
  log_prior   the duration prior's `log p(width)` (the log-normal of `config.dp`);
  source_rank `1 / (1 + r)`, r the window's rank within its own source (each source's
              ranking, which the linear model can trust more or less);
  from_gmm, from_dp  1 for the GMM / DP windows, 0 otherwise (FWHM is the base).

The score is `sum_f w_f (x_f - mean_f) / scale_f` (a linear model on standardized features;
`fit.py` fits it on a validation split), then greedy temporal NMS at `nms_iou`, top K.
Shapes are static: `[B, C]` candidates with a presence mask, so rows are independent and a
padded row gives the unpadded result.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

from amr_jax import saliency
from amr_jax.localize import duration_dp, nms, smoothing, systems

# The first five are computed from the window (`candidate_features`); the last three say where
# it comes from (its rank within its source, and which source).
FEATURES = ("height", "mean_z", "contrast", "posterior", "log_prior", "source_rank", "from_gmm",
            "from_dp")
WINDOW_FEATURES = 5


@flax.struct.dataclass
class Candidates:
    """All candidates of a batch.

    Attributes:
      start, end: `[B, C]` seconds.
      present: `[B, C]` bool.
      features: `[B, C, F]` in `FEATURES` order (0 where absent).
      curve: `[B, T]` the smoothed standardized curve `y`.
      posterior: `[B, T]` GMM posterior of the relevant component.
    """

    start: jax.Array
    end: jax.Array
    present: jax.Array
    features: jax.Array
    curve: jax.Array
    posterior: jax.Array


@flax.struct.dataclass
class FusedLocalization:
    """Predictions of one batch (the fields of `systems.Localization`, plus the posterior).

    Attributes:
      windows: `[B, K, 3]` float32 `(start_s, end_s, score)`, best first.
      valid: `[B, K]` bool.
      curve: `[B, T]` smoothed standardized curve.
      fallback: `[B]` bool, True where no window survived (never, as FWHM always gives one).
      posterior: `[B, T]` GMM posterior.
    """

    windows: jax.Array
    valid: jax.Array
    curve: jax.Array
    fallback: jax.Array
    posterior: jax.Array


def _masked_mean(values: jax.Array, inside: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean of `values [B, T]` over `inside [B, C, T]`: `([B, C] mean, [B, C] count)`."""
    count = jnp.sum(inside, axis=-1)
    total = jnp.sum(jnp.where(inside, values[:, None, :], 0.0), axis=-1)
    return total / jnp.maximum(count, 1), count


def candidate_features(start: jax.Array, end: jax.Array, present: jax.Array, z: jax.Array,
                       y: jax.Array, gamma: jax.Array, mask: jax.Array, *, log_mu: float,
                       log_sigma: float, frame_offset_s: float | jax.Array) -> jax.Array:
    """`[B, C, WINDOW_FEATURES]` window features (module docstring), windows `[B, C]` in s."""
    t_len = z.shape[1]
    centre = (jnp.arange(t_len, dtype=z.dtype) + 0.5 + frame_offset_s)[None, None, :]
    s, e = start[..., None], end[..., None]
    valid = mask[:, None, :]
    inside = valid & (centre >= s) & (centre < e)
    width = e - s
    flanks = valid & (((centre >= s - width) & (centre < s)) | ((centre >= e) & (centre < e + width)))
    mean_z, count = _masked_mean(z, inside)
    flank_z, flank_count = _masked_mean(z, flanks)
    contrast = mean_z - jnp.where(flank_count > 0, flank_z, 0.0)
    height = jnp.max(jnp.where(inside, y[:, None, :], -jnp.inf), axis=-1)
    height = jnp.where(count > 0, height, 0.0)
    posterior, _ = _masked_mean(gamma, inside)
    log_prior = duration_dp.lognormal_logpdf(jnp.maximum(end - start, 1e-3), log_mu=log_mu,
                                             log_sigma=log_sigma)
    feats = jnp.stack([height, mean_z, contrast, posterior, log_prior], axis=-1)
    return jnp.where(present[..., None], feats, 0.0)


def source_features(num_fwhm: int, per_source: int, present: jax.Array) -> jax.Array:
    """`[B, C, 3]` (source_rank, from_gmm, from_dp) of the candidate slots; 0 where absent.

    Slots are `num_fwhm` FWHM blocks, then the GMM block, then the DP block, `per_source`
    each, every block best first.
    """
    slot = jnp.arange((num_fwhm + 2) * per_source)
    source, rank = slot // per_source, slot % per_source
    feats = jnp.stack([1.0 / (1.0 + rank), source == num_fwhm, source == num_fwhm + 1], -1)
    return jnp.where(present[..., None], feats.astype(jnp.float32)[None], 0.0)


def fused_candidates(curve: jax.Array, mask: jax.Array, duration: jax.Array, *, smooth_k: int,
                     rel_heights: tuple[float, ...], min_prominence: float, per_source: int,
                     gmm: dict, dp: dict, frame_offset_s: float | jax.Array) -> Candidates:
    """Every source's windows with their features.

    Args:
      curve: `[B, T]` relevance.
      mask: `[B, T]` bool prefix mask.
      duration: `[B]` seconds.
      smooth_k, rel_heights, min_prominence: the FWHM sources (one per relative height).
      per_source: windows taken from each source.
      gmm: keyword arguments of `systems.gmm_localize` (no `num_windows` / offset).
      dp: keyword arguments of `duration_dp.dp_localize` (no `num_windows` / offset).
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s.

    Returns:
      Candidates with `C = (len(rel_heights) + 2) * per_source`.
    """
    parts = []
    for rel_height in rel_heights:
        out = systems.fwhm_localize(curve, mask, duration, smooth_k=smooth_k, rel_height=rel_height,
                                    min_prominence=min_prominence, num_windows=per_source,
                                    frame_offset_s=frame_offset_s)
        parts.append((out.windows, out.valid))
    mix = systems.gmm_localize(curve, mask, duration, num_windows=per_source,
                               frame_offset_s=frame_offset_s, **gmm)
    parts.append((mix.windows, mix.valid))
    dpw = duration_dp.dp_localize(curve, mask, duration, num_windows=per_source,
                                  frame_offset_s=frame_offset_s, **dp)
    parts.append((dpw.windows, dpw.valid))
    windows = jnp.concatenate([w for w, _ in parts], axis=1)
    present = jnp.concatenate([v for _, v in parts], axis=1)
    z = saliency.standardize(curve, mask)
    y = smoothing.box_smooth(z, mask, size=smooth_k)
    feats = candidate_features(windows[..., 0], windows[..., 1], present, z, y, mix.posterior,
                               mask, log_mu=dp["log_mu"], log_sigma=dp["log_sigma"],
                               frame_offset_s=frame_offset_s)
    feats = jnp.concatenate([feats, source_features(len(rel_heights), per_source, present)], -1)
    return Candidates(start=windows[..., 0], end=windows[..., 1], present=present,
                      features=feats, curve=y, posterior=mix.posterior)


def linear_score(features: jax.Array, present: jax.Array, *, mean, scale, weights) -> jax.Array:
    """`[B, C]` scores `sum_f w_f (x_f - mean_f) / scale_f`, `-inf` where absent."""
    x = (features - jnp.asarray(mean, features.dtype)) / jnp.asarray(scale, features.dtype)
    score = x @ jnp.asarray(weights, features.dtype)
    return jnp.where(present, score, -jnp.inf)


def fused_localize(curve: jax.Array, mask: jax.Array, duration: jax.Array, *, smooth_k: int,
                   rel_heights: tuple[float, ...], min_prominence: float, per_source: int,
                   gmm: dict, dp: dict, mean, scale, weights, nms_iou: float, num_windows: int,
                   frame_offset_s: float | jax.Array) -> FusedLocalization:
    """Candidates of every source, scored by the linear model, NMS, top K.

    Args:
      curve, mask, duration, smooth_k, rel_heights, min_prominence, per_source, gmm, dp,
        frame_offset_s: as `fused_candidates`.
      mean, scale, weights: `[F]` sequences, the linear model (`FEATURES` order).
      nms_iou: NMS threshold (a candidate overlapping a better kept one by more is dropped).
      num_windows: K.

    Returns:
      FusedLocalization.
    """
    cands = fused_candidates(curve, mask, duration, smooth_k=smooth_k, rel_heights=rel_heights,
                             min_prominence=min_prominence, per_source=per_source, gmm=gmm,
                             dp=dp, frame_offset_s=frame_offset_s)
    score = linear_score(cands.features, cands.present, mean=mean, scale=scale, weights=weights)
    windows, valid = nms.nms_top_windows(cands.start, cands.end, score, iou_threshold=nms_iou,
                                         num_windows=num_windows)
    return FusedLocalization(windows=windows, valid=valid, curve=cands.curve,
                             fallback=~jnp.any(valid, axis=-1), posterior=cands.posterior)
