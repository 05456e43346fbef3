"""Fitting and storing the fused localizer's few parameters (on a validation split only).

The linear model of `fused.py` is fitted by a listwise objective: for each query, the softmax
of the candidate scores should put its mass on the candidates whose IoU with a ground-truth
window reaches a threshold, `-log sum_{c: IoU_c >= theta} softmax(s)_c`, averaged over the
queries that have such a candidate and over `thresholds` (0.5 and 0.7: R1@0.7 is the target,
0.5 steadies the fit), plus `l2 * |w|^2`. The features are standardized by their mean and
standard deviation over the split's present candidates, so the weights are comparable. Then
the NMS threshold is chosen from a grid by the split's mAP (R1 does not depend on it);
`fit_split` also chooses, by cross-validation, whether the source features are used.

Parameters file (`save_params` / `load_params`, JSON): `features` (names, must equal
`fused.FEATURES`), `mean`, `scale`, `weights` (`[F]` each), `nms_iou`, `candidates` (the
candidate settings they were fitted with; a run whose settings differ is refused), and
free-form `fitted_on` / `val_metrics` for the record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from amr_jax.errors import ConfigError
from amr_jax.io_utils import atomic_write_text
from amr_jax.localize import fused


def candidate_settings(config: ml_collections.ConfigDict) -> dict:
    """What the candidates depend on: the fused block's candidate fields and the dp block."""
    return {"smooth_k": config.fused.smooth_k, "rel_heights": list(config.fused.rel_heights),
            "min_prominence": config.fused.min_prominence, "per_source": config.fused.per_source,
            "dp": config.dp.to_dict()}


def best_iou(start: np.ndarray, end: np.ndarray, gt_windows: Sequence[np.ndarray]) -> np.ndarray:
    """`[B, C]` best IoU of each candidate with its query's ground-truth windows (seconds)."""
    out = np.zeros(start.shape, np.float64)
    for b, gt in enumerate(gt_windows):
        gt = np.asarray(gt, np.float64).reshape(-1, 2)
        if not len(gt):
            continue
        s, e = start[b][:, None], end[b][:, None]
        inter = np.clip(np.minimum(e, gt[None, :, 1]) - np.maximum(s, gt[None, :, 0]), 0, None)
        union = np.maximum(e, gt[None, :, 1]) - np.minimum(s, gt[None, :, 0])
        out[b] = np.max(np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0), axis=1)
    return out


def listwise_loss(weights: jax.Array, x: jax.Array, present: jax.Array, iou: jax.Array, *,
                  thresholds: Sequence[float], l2: float) -> jax.Array:
    """The objective of the module docstring; `x [B, C, F]` standardized features."""
    score = jnp.where(present, x @ weights, -jnp.inf)
    log_p = jax.nn.log_softmax(score, axis=-1)
    terms = []
    for theta in thresholds:
        pos = present & (iou >= theta)
        has = jnp.any(pos, axis=-1)
        ll = jax.nn.logsumexp(jnp.where(pos, log_p, -jnp.inf), axis=-1)
        terms.append(-jnp.sum(jnp.where(has, ll, 0.0)) / jnp.maximum(jnp.sum(has), 1))
    return sum(terms) / len(terms) + l2 * jnp.sum(weights * weights)


def fit_weights(features: np.ndarray, present: np.ndarray, iou: np.ndarray, *,
                thresholds: Sequence[float] = (0.5, 0.7), l2: float = 1e-3, steps: int = 400,
                learning_rate: float = 0.05, num_used: int | None = None) -> dict:
    """Standardization and weights of the linear model (module docstring).

    Args:
      features: `[B, C, F]`; present: `[B, C]` bool; iou: `[B, C]` best IoU with the truth.
      num_used: fit only the first `num_used` features; the others get weight 0 (mean 0,
        scale 1). None: all.

    Returns:
      {"mean", "scale", "weights"} lists of F floats, and "loss" (final objective).
    """
    total = features.shape[-1]
    if num_used is not None and num_used < total:
        fit = fit_weights(features[..., :num_used], present, iou, thresholds=thresholds, l2=l2,
                          steps=steps, learning_rate=learning_rate)
        pad = total - num_used
        return {"mean": fit["mean"] + [0.0] * pad, "scale": fit["scale"] + [1.0] * pad,
                "weights": fit["weights"] + [0.0] * pad, "loss": fit["loss"]}
    feats = features[present]
    if not len(feats):
        raise ValueError("no candidates to fit the fused localizer on")
    mean = feats.mean(0)
    scale = feats.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    x = jnp.asarray((features - mean) / scale, jnp.float32)
    pres, lab = jnp.asarray(present), jnp.asarray(iou, jnp.float32)
    loss_fn = lambda w: listwise_loss(w, x, pres, lab, thresholds=tuple(thresholds), l2=l2)
    opt = optax.adam(learning_rate)
    w = jnp.zeros(features.shape[-1], jnp.float32).at[0].set(1.0)   # start: rank by height

    @jax.jit
    def step(w, state):
        loss, grad = jax.value_and_grad(loss_fn)(w)
        updates, state = opt.update(grad, state, w)
        return optax.apply_updates(w, updates), state, loss

    state = opt.init(w)
    for _ in range(steps):
        w, state, _ = step(w, state)
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale],
            "weights": [float(v) for v in np.asarray(w)], "loss": float(loss_fn(w))}


def save_params(path: str | os.PathLike, params: dict) -> None:
    """Writes a parameters file atomically (module docstring)."""
    atomic_write_text(path, json.dumps(params, indent=2) + "\n")


def load_params(path: str | os.PathLike, config: ml_collections.ConfigDict) -> dict:
    """Reads and checks a parameters file against `config`'s candidate settings.

    Returns:
      {"mean", "scale", "weights" (tuples of F floats), "nms_iou"}.

    Raises:
      FileNotFoundError: no such file.
      ConfigError: malformed file, wrong features, non-finite values, or candidate settings
        that differ from the config's (naming the file and field).
    """
    text = open(path, encoding="utf-8").read()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: not a fused parameters file ({e.msg}); write one "
                          "with python -m experiments.fit_fused") from None
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: expected a JSON object (python -m experiments.fit_fused)")
    for key in ("features", "mean", "scale", "weights", "nms_iou", "candidates"):
        if key not in obj:
            raise ConfigError(f"{path}: field {key!r} is missing; write the file with "
                              "python -m experiments.fit_fused")
    if list(obj["features"]) != list(fused.FEATURES):
        raise ConfigError(f"{path}: field 'features' is {obj['features']}, this version uses "
                          f"{list(fused.FEATURES)}; refit with python -m experiments.fit_fused")
    out = {}
    for key in ("mean", "scale", "weights"):
        vals = obj[key]
        if (not isinstance(vals, list) or len(vals) != len(fused.FEATURES)
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in vals)):
            raise ConfigError(f"{path}: field {key!r} must be {len(fused.FEATURES)} finite numbers")
        out[key] = tuple(float(v) for v in vals)
    if any(v <= 0 for v in out["scale"]):
        raise ConfigError(f"{path}: field 'scale' must be positive")
    nms_iou = obj["nms_iou"]
    if not isinstance(nms_iou, (int, float)) or not 0.0 <= nms_iou <= 1.0:
        raise ConfigError(f"{path}: field 'nms_iou' must be a number in [0, 1], got {nms_iou!r}")
    out["nms_iou"] = float(nms_iou)
    expected = json.loads(json.dumps(candidate_settings(config)))
    if obj["candidates"] != expected:
        diff = sorted(k for k in set(expected) | set(obj["candidates"])
                      if obj["candidates"].get(k) != expected.get(k))
        raise ConfigError(f"{path}: fitted with other candidate settings ({', '.join(diff)}: file "
                          f"{[obj['candidates'].get(k) for k in diff]}, config "
                          f"{[expected.get(k) for k in diff]}); refit or use the same config")
    return out


def resolve_params(config: ml_collections.ConfigDict) -> dict:
    """The linear model a run uses: `config.fused_params` when set, else the config's defaults."""
    if config.fused_params:
        return load_params(config.fused_params, config)
    return {"mean": tuple(config.fused.mean), "scale": tuple(config.fused.scale),
            "weights": tuple(config.fused.weights), "nms_iou": float(config.fused.nms_iou)}


def fused_kwargs(config: ml_collections.ConfigDict, params: dict) -> dict:
    """Keyword arguments of `fused.fused_localize` (besides curves, offset and K)."""
    return {"smooth_k": config.fused.smooth_k, "rel_heights": tuple(config.fused.rel_heights),
            "min_prominence": config.fused.min_prominence,
            "per_source": config.fused.per_source, "gmm": config.gmm.to_dict(),
            "dp": config.dp.to_dict(), **params}
