"""Duration-prior DP localizer: equals a brute-force search; padded == unpadded."""

import functools
import math

import jax
import numpy as np
import pytest

from amr_jax.localize import duration_dp

DP = {"tau": 0.5, "lam": 1.0, "log_mu": 1.5, "log_sigma": 1.1, "max_len": 12,
      "iou_threshold": 0.5, "num_windows": 10}
_dp = jax.jit(functools.partial(duration_dp.dp_localize, **DP))


def dp(curve, mask, duration, offset=0.0):
    return _dp(curve, mask, duration, frame_offset_s=np.float32(offset))


def brute_force(row, duration, *, offset, tau, lam, log_mu, log_sigma, max_len, iou_threshold,
                num_windows):
    """Every (start, end) by plain loops, written from DESIGN 9.9 without the kernel."""
    x = np.asarray(row, np.float64)
    std = x.std()
    z = np.zeros_like(x) if x.max() == x.min() else (x - x.mean()) / std
    cands = []
    for a in range(len(x)):
        for b in range(a + 1, min(a + max_len, len(x)) + 1):
            ln = b - a
            logp = (-math.log(ln) - math.log(log_sigma) - 0.5 * math.log(2 * math.pi)
                    - 0.5 * ((math.log(ln) - log_mu) / log_sigma) ** 2)
            cands.append((float(np.sum(z[a:b] - tau)) + lam * logp, a, b))
    # Best first; ties: lower start, then shorter.
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen = []
    for score, a, b in cands:
        ious = [(min(b, d) - max(a, c)) / (max(b, d) - min(a, c)) if min(b, d) > max(a, c) else 0.0
                for _, c, d in chosen]
        if all(i <= iou_threshold for i in ious):
            chosen.append((score, a, b))
        if len(chosen) == num_windows:
            break
    out = []
    for score, a, b in chosen:
        st, en = a + offset, b + offset
        en = min(max(en, st + 1), duration)
        st = max(min(st, en - 1), 0.0)
        out.append((st, en, score))
    return out


def _rows(rng, count):
    rows = []
    for _ in range(count):
        n = int(rng.integers(1, 40))
        r = rng.normal(size=n) * 0.05
        for _ in range(int(rng.integers(0, 3))):
            a = int(rng.integers(0, n))
            r[a:a + int(rng.integers(1, 10))] += rng.uniform(0.1, 0.4)
        rows.append(r.astype(np.float32))
    rows += [np.full(6, 0.3, np.float32), np.array([0.2, 0.9], np.float32)]
    return rows


def _pad(rows, t_pad, rng):
    x = (rng.normal(size=(len(rows), t_pad)) * 5).astype(np.float32)
    mask = np.zeros((len(rows), t_pad), bool)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
        mask[i, :len(r)] = True
    return x, mask


@pytest.mark.parametrize("offset", [0.0, -0.5])
def test_equals_brute_force(offset):
    rng = np.random.default_rng(0)
    rows = _rows(rng, 40)
    dur = np.array([len(r) - (0 if offset == 0 else 1) for r in rows], np.float32)
    dur = np.maximum(dur, 1.0)
    x, mask = _pad(rows, 48, rng)
    out = dp(x, mask, dur, offset)
    w, v = np.asarray(out.windows), np.asarray(out.valid)
    for i, r in enumerate(rows):
        ref = brute_force(r, float(dur[i]), offset=offset, **DP)
        assert int(v[i].sum()) == len(ref), f"row {i}"
        np.testing.assert_allclose(w[i, :len(ref)], np.asarray(ref), rtol=1e-4, atol=1e-3,
                                   err_msg=f"row {i}: {r}")


def test_padded_equals_unpadded():
    rng = np.random.default_rng(1)
    rows = _rows(rng, 12)
    dur = np.array([len(r) for r in rows], np.float32)
    x1, m1 = _pad(rows, 40, rng)
    x2, m2 = _pad(rows, 64, rng)   # other length, other junk in the padding
    a, b = dp(x1, m1, dur), dp(x2, m2, dur)
    np.testing.assert_array_equal(np.asarray(a.valid), np.asarray(b.valid))
    np.testing.assert_allclose(np.asarray(a.windows), np.asarray(b.windows), rtol=1e-5, atol=1e-5)
    for i, r in enumerate(rows):  # and a row alone, unpadded
        alone = dp(r[None], np.ones((1, len(r)), bool), dur[i:i + 1])
        np.testing.assert_allclose(np.asarray(alone.windows)[0], np.asarray(a.windows)[i],
                                   rtol=1e-5, atol=1e-5)


def test_prior_pulls_towards_typical_length():
    # A flat plateau of 20 frames: with a strong prior centred on 4 s the best window is short.
    row = np.concatenate([np.zeros(10), np.ones(20), np.zeros(10)]).astype(np.float32)
    mask = np.ones((1, 40), bool)
    kw = dict(DP, max_len=40, num_windows=1, lam=0.0)
    free = duration_dp.dp_localize(row[None], mask, np.array([40.0], np.float32),
                                   frame_offset_s=0.0, **kw)
    kw["lam"], kw["log_mu"], kw["log_sigma"] = 30.0, math.log(4.0), 0.2
    tight = duration_dp.dp_localize(row[None], mask, np.array([40.0], np.float32),
                                    frame_offset_s=0.0, **kw)
    assert np.asarray(free.windows)[0, 0, :2].tolist() == [10.0, 30.0]
    assert np.asarray(tight.windows)[0, 0, 1] - np.asarray(tight.windows)[0, 0, 0] == 4.0


def test_fit_lognormal():
    rng = np.random.default_rng(2)
    x = np.exp(rng.normal(1.2, 0.7, size=20000))
    mu, sigma = duration_dp.fit_lognormal(x)
    assert abs(mu - 1.2) < 0.02 and abs(sigma - 0.7) < 0.02
    # The density integrates to 1 (checks the normalizing constant).
    grid = np.linspace(1e-4, 200, 400001)
    pdf = np.exp(np.asarray(duration_dp.lognormal_logpdf(grid, log_mu=1.2, log_sigma=0.7)))
    assert abs(np.trapezoid(pdf, grid) - 1.0) < 1e-3
    with pytest.raises(ValueError, match="at least 2"):
        duration_dp.fit_lognormal([3.0])


@pytest.mark.parametrize("offset", [0.0, -0.5])
def test_numpy_reference_matches_kernel(offset):
    """reference.dp_reference (the benchmark's baseline) is the same search."""
    from amr_jax.localize import reference

    rng = np.random.default_rng(4)
    rows = _rows(rng, 20)
    dur = np.array([len(r) for r in rows], np.float32)
    out = dp(*_pad(rows, 48, rng), dur, offset)
    for i, r in enumerate(rows):
        ref = reference.dp_reference(r, float(dur[i]), frame_offset_s=offset, **DP)
        assert int(np.asarray(out.valid)[i].sum()) == len(ref)
        np.testing.assert_allclose(np.asarray(out.windows)[i, :len(ref)], ref, rtol=1e-4, atol=1e-3)
