"""Box and Gaussian smoothing against scipy.ndimage, per valid length."""

import localize_testlib as helpers
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d, uniform_filter1d


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(0)
    return helpers.adversarial_rows() + helpers.random_rows(rng, 60)


@pytest.mark.parametrize("size", [4, 5, 7])
def test_box_smooth_matches_uniform_filter1d(rows, size):
    x, mask = helpers.pad_rows(rows, rng=np.random.default_rng(1))
    y = np.asarray(helpers.box_smooth(x, mask, size=size))
    for i, r in enumerate(rows):
        ref = uniform_filter1d(r.astype(np.float64), size, mode="nearest")
        np.testing.assert_allclose(y[i, : len(r)], ref, atol=2e-5, err_msg=f"row {i} n={len(r)}")
        assert np.all(y[i, len(r):] == 0)


def test_gaussian_smooth_matches_gaussian_filter1d(rows):
    x, mask = helpers.pad_rows(rows, rng=np.random.default_rng(2))
    y = np.asarray(helpers.gaussian_smooth(x, mask, sigma=1.5, truncate=4.0))
    for i, r in enumerate(rows):
        # Lengths 1-3 are shorter than the radius 6: scipy reflects repeatedly.
        ref = gaussian_filter1d(r.astype(np.float64), 1.5, mode="reflect", truncate=4.0)
        np.testing.assert_allclose(y[i, : len(r)], ref, atol=2e-5, err_msg=f"row {i} n={len(r)}")


def test_padded_row_gives_unpadded_result(rows):
    r = rows[-1]
    tight, tight_mask = helpers.pad_rows([r], t_pad=len(r))
    loose, loose_mask = helpers.pad_rows([r], rng=np.random.default_rng(3))
    for fn in (lambda x, m: helpers.box_smooth(x, m, size=5),
               lambda x, m: helpers.gaussian_smooth(x, m, sigma=1.5, truncate=4.0)):
        a = np.asarray(fn(tight, tight_mask))[0]
        b = np.asarray(fn(loose, loose_mask))[0, : len(r)]
        np.testing.assert_allclose(a, b, atol=1e-6)
