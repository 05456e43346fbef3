"""Fused localizer: features against a numpy transcription, padded == unpadded, the fit,
the parameters file and the fit_fused -> localize binaries on a SYNTHETIC split."""

import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from amr_jax.errors import ConfigError
from amr_jax.localize import fused, fused_fit
from experiments.configs import localize as localize_configs

REPO = Path(__file__).resolve().parents[2]
GMM = {"sigma": 1.5, "truncate": 4.0, "n_init": 1, "tol": 1e-3, "max_iter": 20, "reg_covar": 1e-6,
       "seed": 0, "threshold": 0.45, "peak_weight": 0.3, "fallback_rel_height": 0.5,
       "flat_eps": 1e-6}
DP = {"tau": 0.5, "lam": 1.0, "log_mu": 1.5, "log_sigma": 1.1, "max_len": 30,
      "iou_threshold": 0.5}
WEIGHTS = (1.0, 0.2, 0.5, 0.3, 0.1, 0.4, -0.2, 0.3)
KW = {"smooth_k": 5, "rel_heights": (0.3, 0.5, 0.7), "min_prominence": 0.1, "per_source": 4,
      "gmm": GMM, "dp": DP}


def _rows(rng, count):
    rows = []
    for _ in range(count):
        n = int(rng.integers(12, 40))
        r = rng.normal(size=n) * 0.03
        a = int(rng.integers(0, n - 3))
        r[a:a + int(rng.integers(2, 9))] += rng.uniform(0.1, 0.3)
        rows.append(r.astype(np.float32))
    return rows


def _pad(rows, t_pad, rng):
    x = (rng.normal(size=(len(rows), t_pad)) * 5).astype(np.float32)
    mask = np.zeros((len(rows), t_pad), bool)
    for i, r in enumerate(rows):
        x[i, :len(r)] = r
        mask[i, :len(r)] = True
    return x, mask


def numpy_features(s, e, z, y, gamma, offset, log_mu, log_sigma):
    """One candidate's features, written from the fused.py docstring with plain numpy."""
    centres = np.arange(len(z)) + 0.5 + offset
    inside = (centres >= s) & (centres < e)
    w = e - s
    flank = ((centres >= s - w) & (centres < s)) | ((centres >= e) & (centres < e + w))
    mean_z = z[inside].mean() if inside.any() else 0.0
    contrast = mean_z - (z[flank].mean() if flank.any() else 0.0)
    height = y[inside].max() if inside.any() else 0.0
    post = gamma[inside].mean() if inside.any() else 0.0
    lp = -math.log(w) - math.log(log_sigma) - 0.5 * math.log(2 * math.pi) \
        - 0.5 * ((math.log(w) - log_mu) / log_sigma) ** 2
    return np.array([height, mean_z, contrast, post, lp])


@pytest.mark.parametrize("offset", [0.0, -0.5])
def test_features_match_numpy(offset):
    rng = np.random.default_rng(0)
    b, c, t = 5, 7, 30
    n = rng.integers(8, t + 1, size=b)
    mask = np.arange(t)[None] < n[:, None]
    z, y, g = (np.where(mask, rng.normal(size=(b, t)), 0).astype(np.float32) for _ in range(3))
    start = rng.integers(-2, t, size=(b, c)).astype(np.float32)
    end = start + rng.integers(1, 12, size=(b, c))
    present = rng.random((b, c)) < 0.8
    out = np.asarray(fused.candidate_features(start, end, present, z, y, g, mask, log_mu=1.2,
                                              log_sigma=0.8, frame_offset_s=offset))
    for i in range(b):
        for j in range(c):
            if not present[i, j]:
                assert not out[i, j].any()
                continue
            ref = numpy_features(start[i, j], end[i, j], z[i, :n[i]], y[i, :n[i]], g[i, :n[i]],
                                 offset, 1.2, 0.8)
            np.testing.assert_allclose(out[i, j], ref, rtol=1e-5, atol=1e-5)


_localize = jax.jit(functools.partial(
    fused.fused_localize, mean=(0.0,) * 8, scale=(1.0,) * 8, weights=WEIGHTS,
    nms_iou=0.5, num_windows=10, frame_offset_s=0.0, **KW))


def test_padded_equals_unpadded_and_windows_are_ranked():
    rng = np.random.default_rng(1)
    rows = _rows(rng, 6)
    dur = np.array([len(r) for r in rows], np.float32)
    a = _localize(*_pad(rows, 40, rng), dur)
    b = _localize(*_pad(rows, 48, rng), dur)
    np.testing.assert_array_equal(np.asarray(a.valid), np.asarray(b.valid))
    np.testing.assert_allclose(np.asarray(a.windows), np.asarray(b.windows), atol=1e-4)
    w, v = np.asarray(a.windows), np.asarray(a.valid)
    assert v[:, 0].all()
    for i in range(len(rows)):
        k = v[i].sum()
        assert np.all(np.diff(w[i, :k, 2]) <= 1e-6)             # best first
        assert np.all(w[i, :k, 1] - w[i, :k, 0] >= 1 - 1e-6)
        assert np.all((w[i, :k, 0] >= 0) & (w[i, :k, 1] <= dur[i]))
        # NMS: no two kept windows overlap by IoU > 0.5.
        for p in range(k):
            for q in range(p):
                inter = max(0, min(w[i, p, 1], w[i, q, 1]) - max(w[i, p, 0], w[i, q, 0]))
                union = max(w[i, p, 1], w[i, q, 1]) - min(w[i, p, 0], w[i, q, 0])
                assert inter / union <= 0.5 + 1e-6


def test_top_window_is_the_best_scored_candidate():
    rng = np.random.default_rng(2)
    rows = _rows(rng, 4)
    x, mask = _pad(rows, 40, rng)
    dur = np.array([len(r) for r in rows], np.float32)
    cands = jax.jit(functools.partial(fused.fused_candidates, frame_offset_s=0.0, **KW))(x, mask, dur)
    weights = np.array(WEIGHTS)
    out = _localize(x, mask, dur)
    feats, present = np.asarray(cands.features), np.asarray(cands.present)
    assert feats.shape[1] == (3 + 2) * KW["per_source"]
    # Source features: slot 0 is FWHM rank 0; slot 12 GMM rank 0; slot 17 DP rank 1.
    np.testing.assert_allclose(feats[0, [0, 12, 17], 5:], [[1, 0, 0], [1, 1, 0], [0.5, 0, 1]])
    for i in range(len(rows)):
        score = np.where(present[i], feats[i] @ weights, -np.inf)
        j = int(np.argmax(score))
        np.testing.assert_allclose(np.asarray(out.windows)[i, 0],
                                   [cands.start[i, j], cands.end[i, j], score[j]], atol=1e-4)


def test_listwise_loss_matches_numpy_and_fit_finds_the_informative_feature():
    rng = np.random.default_rng(3)
    b, c, f = 200, 12, 5
    feats = rng.normal(size=(b, c, f)).astype(np.float32)
    present = rng.random((b, c)) < 0.9
    # IoU driven by feature 2 only.
    iou = 1 / (1 + np.exp(-3 * feats[..., 2])) * present
    w = rng.normal(size=f).astype(np.float32)
    got = float(fused_fit.listwise_loss(w, feats, present, iou, thresholds=(0.5, 0.7), l2=0.01))
    terms = []
    for theta in (0.5, 0.7):
        vals = []
        for i in range(b):
            s = np.where(present[i], feats[i] @ w, -np.inf)
            p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
            pos = present[i] & (iou[i] >= theta)
            if pos.any():
                vals.append(-np.log(p[pos].sum()))
        terms.append(np.mean(vals))
    assert abs(got - (np.mean(terms) + 0.01 * np.sum(w * w))) < 1e-4
    fit = fused_fit.fit_weights(feats, present, iou, steps=300)
    assert int(np.argmax(fit["weights"])) == 2 and fit["weights"][2] > 1.0


def _config():
    return localize_configs.get_config("fused")


def _params(config):
    return {"features": list(fused.FEATURES), "mean": [0.0] * 8, "scale": [1.0] * 8,
            "weights": [1.0] + [0.0] * 7, "nms_iou": 0.5,
            "candidates": fused_fit.candidate_settings(config)}


def test_params_round_trip_and_errors(tmp_path):
    config = _config()
    path = tmp_path / "p.json"
    fused_fit.save_params(path, _params(config))
    assert fused_fit.load_params(path, config)["weights"] == (1.0,) + (0.0,) * 7
    bad = {"missing": {k: v for k, v in _params(config).items() if k != "nms_iou"},
           "features": dict(_params(config), features=["height"]),
           "weights": dict(_params(config), weights=[1.0, float("nan")] + [0.0] * 6),
           "candidates": dict(_params(config), candidates=dict(
               fused_fit.candidate_settings(config), smooth_k=7))}
    for name, obj in bad.items():
        path.write_text(json.dumps(obj))
        with pytest.raises(ConfigError, match=str(path)):
            fused_fit.load_params(path, config)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a fused parameters file"):
        fused_fit.load_params(path, config)


@pytest.fixture(scope="module")
def split_dir(synthetic_castella):
    from amr_jax.clap import convert

    if not (synthetic_castella / "clap_converted").exists():
        convert.convert_and_save(synthetic_castella / "msclap_synthetic.npz",
                                 synthetic_castella / "clap_converted")
    return synthetic_castella


def test_fit_fused_then_localize_binaries(split_dir, tmp_path):
    d = split_dir
    data = [f"--annotations={d / 'annotations.jsonl'}", f"--audio_feats={d / 'clap'}",
            f"--text_feats={d / 'clap_text'}", f"--clap={d / 'clap_converted'}",
            f"--neutral_feats={d / 'neutral_text'}"]
    params = tmp_path / "params.json"
    fit = subprocess.run([sys.executable, "-m", "experiments.fit_fused",
                          "--config=experiments/configs/localize.py:fused,runlocal", *data,
                          f"--output={params}"], cwd=REPO, capture_output=True, text=True,
                         timeout=600, check=False)
    assert fit.returncode == 0, fit.stderr[-3000:]
    stored = json.loads(params.read_text())
    assert stored["features"] == list(fused.FEATURES) and len(stored["weights"]) == 8
    assert json.loads(fit.stdout.strip().splitlines()[-1]) == stored["val_metrics"]
    pred = tmp_path / "pred.jsonl"
    run = subprocess.run([sys.executable, "-m", "experiments.localize",
                          "--config=experiments/configs/localize.py:fused,runlocal",
                          f"--config.fused_params={params}", *data, f"--output={pred}"],
                         cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    # Same split, same model and NMS threshold: the binary reproduces the fit's val metrics.
    assert json.loads(run.stdout.strip().splitlines()[-1]) == stored["val_metrics"]


def test_per_query_reference_gives_the_same_top_window():
    """reference.fused_reference (scipy / sklearn / numpy, the benchmark's baseline): same top
    window on nearly every row (the two EM fits may differ on a few)."""
    from amr_jax.localize import reference

    rng = np.random.default_rng(5)
    rows = _rows(rng, 6)
    x, mask = _pad(rows, 40, rng)
    dur = np.array([len(r) for r in rows], np.float32)
    out = np.asarray(_localize(x, mask, dur).windows)
    same = 0
    for i, r in enumerate(rows):
        ref = reference.fused_reference(r, float(dur[i]), mean=(0.0,) * 8, scale=(1.0,) * 8,
                                        weights=WEIGHTS, nms_iou=0.5,
                                        num_windows=10, frame_offset_s=0.0, **KW)
        same += bool(np.allclose(out[i, 0], ref[0], atol=1e-3))
    assert same >= len(rows) - 1, same
