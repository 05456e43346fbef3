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
