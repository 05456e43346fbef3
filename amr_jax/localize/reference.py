"""Per-query numpy / scipy / sklearn implementations of the training-free localizers.

The same semantics as `amr_jax.localize.systems`, one query at a time, written the obvious way
with `scipy.ndimage`, `scipy.signal` and `sklearn.mixture`. Frame `i` covers seconds
`[i + frame_offset_s, i + 1 + frame_offset_s)`. Used by the parity tests and as the
baseline of `benchmarks/bench_localize.py`. scipy and sklearn are imported inside the functions.
"""

from __future__ import annotations

import warnings

import numpy as np


def standardize(x: np.ndarray) -> np.ndarray:
    """Z-score with the population std; a constant sequence maps to zeros."""
    x = np.asarray(x, np.float64)
    if x.size == 0 or not x.max() > x.min():
        return np.zeros_like(x)
    return (x - x.mean()) / x.std()


def clamp_window(start: float, end: float, duration: float) -> tuple[float, float]:
    """At least 1 s long, inside `[0, duration]` (see `ranking.clamp_window`)."""
    end = min(max(end, start + 1.0), duration)
    start = max(min(start, end - 1.0), 0.0)
    return start, end


def _fwhm_window(y: np.ndarray, peak: int, rel_height: float, duration: float,
                 frame_offset_s: float):
    from scipy.signal import peak_widths

    with warnings.catch_warnings():
        # A maximum at the row end has prominence 0 and zero width; scipy warns, we accept.
        warnings.simplefilter("ignore")
        _, _, left, right = peak_widths(y, [peak], rel_height=rel_height)
    # Frame i is centred on second i + 0.5 + frame_offset_s; boundaries are whole seconds.
    centre = 0.5 + frame_offset_s
    return clamp_window(float(np.round(left[0] + centre)), float(np.round(right[0] + centre)),
                        duration)


def fwhm_reference(curve: np.ndarray, duration: float, *, smooth_k: int, rel_height: float,
                   min_prominence: float, num_windows: int,
                   frame_offset_s: float) -> tuple[list[list[float]], bool]:
    """JointProj FWHM localization of one query.

    Args:
      curve: `[n]` relevance of the valid frames.
      duration: seconds.
      smooth_k, rel_height, min_prominence, num_windows, frame_offset_s: as
        `systems.fwhm_localize`.

    Returns:
      (windows `[[start_s, end_s, score], ...]` best first, used_fallback).
    """
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import find_peaks

    y = uniform_filter1d(standardize(curve), smooth_k, mode="nearest")
    found, _ = find_peaks(y, prominence=min_prominence)
    fallback = len(found) == 0
    if fallback:
        found = np.array([int(np.argmax(y))])
    order = np.argsort(-y[found], kind="stable")[:num_windows]
    out = []
    for p in found[order]:
        st, en = _fwhm_window(y, int(p), rel_height, duration, frame_offset_s)
        out.append([st, en, float(y[p])])
    return out, fallback


def fit_mixture_reference(c: np.ndarray, *, n_init: int, tol: float, max_iter: int,
                          reg_covar: float, seed: int):
    """sklearn's GaussianMixture on one trace (float64)."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(n_components=2, covariance_type="full", tol=tol, max_iter=max_iter,
                         reg_covar=reg_covar, n_init=n_init, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on hard traces: keep the result
        gm.fit(np.asarray(c, np.float64)[:, None])
    return gm


def gmm_reference(trace: np.ndarray, duration: float, *, sigma: float, truncate: float,
                  n_init: int, tol: float, max_iter: int, reg_covar: float, seed: int,
                  threshold: float, peak_weight: float, fallback_rel_height: float,
                  flat_eps: float, num_windows: int,
                  frame_offset_s: float) -> tuple[list[list[float]], dict]:
    """Background-contrast GMM localization of one query.

    Args:
      trace: `[n]` trace of the valid frames.
      duration: seconds.
      (rest): as `systems.gmm_localize`.

    Returns:
      (windows best first, info with `means`, `posterior`, `smoothed`, `fallback`, `flat`).
    """
    from scipy.ndimage import gaussian_filter1d

    c = gaussian_filter1d(np.asarray(trace, np.float64), sigma, mode="reflect", truncate=truncate)
    info = {"smoothed": c, "means": None, "posterior": np.zeros_like(c), "flat": False}
    flat = len(c) < 2 or not (c.max() - c.min()) > flat_eps
    info["flat"] = flat
    runs = []
    if not flat:
        gm = fit_mixture_reference(c, n_init=n_init, tol=tol, max_iter=max_iter,
                                   reg_covar=reg_covar, seed=seed)
        rel = int(np.argmax(gm.means_[:, 0]))
        gamma = gm.predict_proba(c[:, None])[:, rel]
        info["means"] = gm.means_[:, 0]
        info["posterior"] = gamma
        a = None
        for t, on in enumerate(np.append(gamma >= threshold, False)):
            if on and a is None:
                a = t
            elif not on and a is not None:
                score = gamma[a:t].mean() + peak_weight * c[a:t].max()
                runs.append((score, a, t))
                a = None
    info["fallback"] = not runs
    if not runs:
        p = int(np.argmax(c))
        st, en = _fwhm_window(c, p, fallback_rel_height, duration, frame_offset_s)
        return [[st, en, float(info["posterior"][p] + peak_weight * c[p])]], info
    order = sorted(range(len(runs)), key=lambda i: -runs[i][0])[:num_windows]  # stable
    out = []
    for i in order:
        score, a, b = runs[i]
        # Frames a .. b-1 span [a + o, b + o) seconds.
        st, en = clamp_window(a + frame_offset_s, b + frame_offset_s, duration)
        out.append([st, en, float(score)])
    return out, info


def dp_reference(curve: np.ndarray, duration: float, *, tau: float, lam: float, log_mu: float,
                 log_sigma: float, max_len: int, iou_threshold: float, num_windows: int,
                 frame_offset_s: float) -> list[list[float]]:
    """Duration-prior windows of one curve (`duration_dp`): numpy table, greedy suppression."""
    z = standardize(curve)
    n = len(z)
    cum = np.concatenate([[0.0], np.cumsum(z - tau)])
    cands = []
    for length in range(1, min(max_len, n) + 1):
        logp = (-np.log(length) - np.log(log_sigma) - 0.5 * np.log(2 * np.pi)
                - 0.5 * ((np.log(length) - log_mu) / log_sigma) ** 2)
        a = np.arange(n - length + 1)
        cands.append(np.stack([cum[a + length] - cum[a] + lam * logp, a, a + length], 1))
    cands = np.concatenate(cands)
    # Best first; ties: lower start, then shorter (lexsort's last key is the primary one).
    cands = cands[np.lexsort((cands[:, 2], cands[:, 1], -cands[:, 0]))]
    chosen = []
    alive = np.ones(len(cands), bool)
    for _ in range(num_windows):
        idx = np.flatnonzero(alive)
        if not len(idx):
            break
        score, a, b = cands[idx[0]]
        chosen.append((score, a, b))
        inter = np.clip(np.minimum(cands[:, 2], b) - np.maximum(cands[:, 1], a), 0, None)
        union = (cands[:, 2] - cands[:, 1]) + (b - a) - inter
        alive &= ~(inter / union > iou_threshold)
    out = []
    for score, a, b in chosen:
        st, en = clamp_window(a + frame_offset_s, b + frame_offset_s, duration)
        out.append([st, en, float(score)])
    return out


def greedy_nms(windows: list[list[float]], iou_threshold: float, num_windows: int
               ) -> list[list[float]]:
    """Greedy temporal NMS of `[start, end, score]` rows (stable on ties)."""
    order = sorted(range(len(windows)), key=lambda i: -windows[i][2])
    kept: list[list[float]] = []
    for i in order:
        s, e, _ = windows[i]
        if all(not (max(0.0, min(e, k[1]) - max(s, k[0])) / (max(e, k[1]) - min(s, k[0]))
                    > iou_threshold) for k in kept):
            kept.append(windows[i])
        if len(kept) == num_windows:
            break
    return kept


def fused_reference(curve: np.ndarray, duration: float, *, smooth_k: int, rel_heights,
                    min_prominence: float, per_source: int, gmm: dict, dp: dict, mean, scale,
                    weights, nms_iou: float, num_windows: int,
                    frame_offset_s: float) -> list[list[float]]:
    """The fused localizer of one curve from the per-query references (`fused.py`)."""
    from scipy.ndimage import uniform_filter1d

    cands, source = [], []
    for k, rel_height in enumerate(rel_heights):
        cands += fwhm_reference(curve, duration, smooth_k=smooth_k, rel_height=rel_height,
                                min_prominence=min_prominence, num_windows=per_source,
                                frame_offset_s=frame_offset_s)[0]
        source += [(k, r) for r in range(len(cands) - len(source))]
    gmm_windows, info = gmm_reference(curve, duration, num_windows=per_source,
                                      frame_offset_s=frame_offset_s, **gmm)
    cands += gmm_windows
    source += [(len(rel_heights), r) for r in range(len(gmm_windows))]
    dp_windows = dp_reference(curve, duration, num_windows=per_source,
                              frame_offset_s=frame_offset_s, **dp)
    cands += dp_windows
    source += [(len(rel_heights) + 1, r) for r in range(len(dp_windows))]
    z = standardize(curve)
    y = uniform_filter1d(z, size=smooth_k, mode="nearest")
    centre = np.arange(len(z)) + 0.5 + frame_offset_s
    rows = []
    for (s, e, _), (src, rank) in zip(cands, source):
        w = e - s
        inside = (centre >= s) & (centre < e)
        flank = ((centre >= s - w) & (centre < s)) | ((centre >= e) & (centre < e + w))
        mean_z = z[inside].mean() if inside.any() else 0.0
        feats = np.array([
            y[inside].max() if inside.any() else 0.0, mean_z,
            mean_z - (z[flank].mean() if flank.any() else 0.0),
            info["posterior"][inside].mean() if inside.any() else 0.0,
            -np.log(w) - np.log(dp["log_sigma"]) - 0.5 * np.log(2 * np.pi)
            - 0.5 * ((np.log(w) - dp["log_mu"]) / dp["log_sigma"]) ** 2,
            1.0 / (1.0 + rank), src == len(rel_heights), src == len(rel_heights) + 1])
        score = float(((feats - np.asarray(mean)) / np.asarray(scale)) @ np.asarray(weights))
        rows.append([s, e, score])
    return greedy_nms(rows, nms_iou, num_windows)


def to_arrays(windows: list[list[list[float]]], num_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query window lists -> `[B, K, 3]` float32 and `[B, K]` bool."""
    out = np.zeros((len(windows), num_windows, 3), np.float32)
    valid = np.zeros((len(windows), num_windows), bool)
    for i, w in enumerate(windows):
        k = min(len(w), num_windows)
        if k:
            out[i, :k] = np.asarray(w[:k], np.float32)
            valid[i, :k] = True
    return out, valid
