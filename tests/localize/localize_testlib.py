"""Shared traces and jitted kernels for the localize tests (one compilation per kernel)."""

from __future__ import annotations

import functools

import jax
import numpy as np

from amr_jax.localize import gmm, peaks, smoothing, systems

T_PAD = 96  # every test batch is padded to this many frames

FWHM_S1 = {"smooth_k": 5, "rel_height": 0.5, "min_prominence": 0.1, "num_windows": 10}
FWHM_S3 = {"smooth_k": 5, "rel_height": 0.45, "min_prominence": 0.1, "num_windows": 10}
GMM = {"sigma": 1.5, "truncate": 4.0, "n_init": 5, "tol": 1e-3, "max_iter": 100, "reg_covar": 1e-6,
       "seed": 42, "threshold": 0.45, "peak_weight": 0.3, "fallback_rel_height": 0.5,
       "flat_eps": 1e-6, "num_windows": 10}

box_smooth = jax.jit(smoothing.box_smooth, static_argnames="size")
gaussian_smooth = jax.jit(smoothing.gaussian_smooth, static_argnames=("sigma", "truncate"))
local_maxima = jax.jit(peaks.local_maxima)
peak_properties = jax.jit(peaks.peak_properties, static_argnames="rel_height")
prominent_peaks = jax.jit(peaks.prominent_peaks,
                          static_argnames=("min_prominence", "rel_height", "num_peaks"))
fit_mixture = jax.jit(functools.partial(gmm.fit_mixture, **{k: GMM[k] for k in (
    "n_init", "tol", "max_iter", "reg_covar", "seed")}))
# The frame offset is a traced argument, so both conventions share one compilation.
_fwhm_s1 = jax.jit(functools.partial(systems.fwhm_localize, **FWHM_S1))
_fwhm_s3 = jax.jit(functools.partial(systems.fwhm_localize, **FWHM_S3))
_gmm_localize = jax.jit(functools.partial(systems.gmm_localize, **GMM))


def fwhm_s1(curve, mask, duration, frame_offset_s=0.0):
    return _fwhm_s1(curve, mask, duration, frame_offset_s=np.float32(frame_offset_s))


def fwhm_s3(curve, mask, duration, frame_offset_s=0.0):
    return _fwhm_s3(curve, mask, duration, frame_offset_s=np.float32(frame_offset_s))


def gmm_localize(trace, mask, duration, frame_offset_s=0.0):
    return _gmm_localize(trace, mask, duration, frame_offset_s=np.float32(frame_offset_s))


def pad_rows(rows: list[np.ndarray], t_pad: int = T_PAD, *, fill: float = 0.0,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pads 1-D rows to `[B, t_pad]`; padding is `fill` or random junk when `rng` is given."""
    x = np.full((len(rows), t_pad), fill, np.float32)
    if rng is not None:
        x = (rng.normal(size=x.shape) * 7.0).astype(np.float32)
    mask = np.zeros((len(rows), t_pad), bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        mask[i, : len(r)] = True
    return x, mask


def fill_batch(rows: int, *arrays: np.ndarray) -> list[np.ndarray]:
    """Appends zero rows up to `rows`, so that small cases reuse a compiled batch shape."""
    return [np.concatenate([a, np.zeros((rows - len(a),) + a.shape[1:], a.dtype)]) for a in arrays]


def adversarial_rows() -> list[np.ndarray]:
    """Plateaus, ties, peaks at the edges, very short and constant rows."""
    rows = [
        np.array([1.0]), np.array([1.0, 2.0]), np.array([2.0, 1.0]), np.array([1.0, 3.0, 1.0]),
        np.array([3.0, 1.0, 3.0]), np.array([1.0, 1.0, 1.0]), np.zeros(20), np.full(7, 0.25),
        np.array([0, 1, 1, 0, 1, 1, 1, 0, 2, 2, 0], float),           # plateaus of 2 and 3
        np.array([0, 2, 2, 2, 2, 1, 2, 0], float),                    # even plateau, tie heights
        np.array([5, 1, 5, 1, 5, 1, 5], float),                       # equal peaks, edge maxima
        np.array([0, 3, 3, 3], float),                                # plateau running to the end
        np.array([3, 3, 0, 1, 0, 3, 3], float),                       # plateaus at both edges
        np.array([0, 1, 0, 1, 0, 1, 0, 1, 0], float) * 0.05,          # low-prominence ripples
        np.array([0, 4, 1, 3, 1, 4, 0, 2, 2, 0], float),
        np.repeat(np.array([0, 2, 1, 3, 0, 3, 1, 2, 0], float), 3),   # wide plateaus everywhere
    ]
    # Many high ripples of tiny prominence above lower prominent peaks: the prominent peaks
    # rank beyond the first block of local maxima.
    ripple = 10.0 + 0.05 * (np.arange(70) % 2)
    rows.append(np.concatenate([ripple, [0.0, 3.0, 0.0, 5.0, 0.0, 4.0, 0.0, 2.0, 0.0]]))
    return [r.astype(np.float32) for r in rows]


def random_rows(rng: np.random.Generator, count: int, *, t_max: int = T_PAD) -> list[np.ndarray]:
    """Noise, integer-valued (ties), random walks and bumpy relevance-like rows.

    Ties come from the integer rows only, where `x - prominence * rel_height` is computed the
    same in float32 and float64; a tie that depends on rounding is not a semantic difference.
    """
    rows = []
    for i in range(count):
        n = int(rng.integers(1, t_max + 1))
        kind = i % 4
        if kind == 0:
            r = rng.normal(size=n)
        elif kind == 1:
            r = rng.integers(0, 4, size=n).astype(float)
        elif kind == 2:
            r = np.cumsum(rng.normal(size=n))
        else:
            r = rng.normal(0.1, 0.02, size=n)
            for _ in range(int(rng.integers(1, 4))):
                a = int(rng.integers(0, n))
                r[a:a + int(rng.integers(1, 15))] += rng.uniform(0.03, 0.12)
        rows.append(r.astype(np.float32))
    return rows


def event_trace(rng: np.random.Generator, n: int, *, separation: float,
                noise: float = 0.02) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A relevance-like trace: background noise plus 1-3 raised events."""
    r = rng.normal(0.1, noise, size=n)
    events = []
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.integers(2, max(3, n // 6)))
        a = int(rng.integers(0, n - length))
        r[a:a + length] += separation
        events.append((a, a + length))
    return r.astype(np.float32), events
