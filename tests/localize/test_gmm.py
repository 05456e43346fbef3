"""Batched EM for two-component 1-D mixtures against sklearn's GaussianMixture."""

import warnings

import localize_testlib as helpers
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from amr_jax.localize import gmm


def _sklearn(trace):
    gm = GaussianMixture(n_components=2, n_init=5, random_state=42, tol=1e-3, max_iter=100,
                         reg_covar=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gm.fit(trace.astype(np.float64)[:, None])


@pytest.fixture(scope="module")
def separated():
    rng = np.random.default_rng(20)
    rows = [helpers.event_trace(rng, int(rng.integers(30, helpers.T_PAD + 1)),
                                separation=float(rng.uniform(0.08, 0.2)))[0] for _ in range(40)]
    x, mask = helpers.pad_rows(rows, rng=np.random.default_rng(21))
    return rows, x, mask, helpers.fit_mixture(x, mask)


def test_relevant_mean_matches_sklearn_on_separated_traces(separated):
    rows, _, _, fit = separated
    means = np.asarray(fit.means)
    for i, r in enumerate(rows):
        ref = _sklearn(r)
        assert abs(means[i].max() - ref.means_.max()) < 1e-3, f"row {i}"
        assert abs(means[i].min() - ref.means_.min()) < 1e-3, f"row {i}"
        assert abs(float(fit.lower_bound[i]) - ref.lower_bound_) < 1e-4, f"row {i}"


def test_initialization_follows_sklearn_random_stream(separated):
    # Same k-means++ draws and Lloyd steps -> the selected run converges after as many EM
    # iterations as sklearn's (a different start would almost never give the same count).
    rows, _, _, fit = separated
    n_iter = np.asarray(fit.n_iter)
    same = [n_iter[i] == _sklearn(r).n_iter_ for i, r in enumerate(rows[:20])]
    assert np.mean(same) >= 0.95, n_iter[:20]
    draws = gmm.kmeans_draws(42, 5)
    np.testing.assert_array_equal(draws.ravel(), np.random.RandomState(42).random_sample(15))


def test_posterior_matches_predict_proba(separated):
    rows, x, mask, fit = separated
    gamma = np.asarray(gmm.posterior(x, mask, fit))
    for i, r in enumerate(rows[:10]):
        ref = _sklearn(r)
        expected = ref.predict_proba(r.astype(np.float64)[:, None])[:, int(np.argmax(ref.means_))]
        np.testing.assert_allclose(gamma[i, : len(r)], expected, atol=2e-3)
        assert np.all(gamma[i, len(r):] == 0)


def test_padded_row_gives_unpadded_result(separated):
    rows, _, _, fit = separated
    longest = max(range(len(rows)), key=lambda i: len(rows[i]))
    r = rows[longest]
    tight_x, tight_mask = helpers.pad_rows([r], t_pad=len(r))
    alone = helpers.fit_mixture(tight_x, tight_mask)
    np.testing.assert_allclose(np.asarray(alone.means)[0], np.asarray(fit.means)[longest], atol=1e-6)
    np.testing.assert_allclose(np.asarray(alone.variances)[0],
                               np.asarray(fit.variances)[longest], rtol=1e-5)
