"""Local maxima, prominences, widths and ranked prominent peaks against scipy.signal."""

import warnings

import localize_testlib as helpers
import numpy as np
import pytest
from scipy.signal import find_peaks, peak_prominences, peak_widths


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(10)
    return helpers.adversarial_rows() + helpers.random_rows(rng, 80)


@pytest.fixture(scope="module")
def padded(rows):
    return helpers.pad_rows(rows, rng=np.random.default_rng(11))


def test_local_maxima_match_find_peaks(rows, padded):
    got = np.asarray(helpers.local_maxima(*padded))
    for i, r in enumerate(rows):
        expected, _ = find_peaks(r.astype(np.float64))
        np.testing.assert_array_equal(np.flatnonzero(got[i]), expected, err_msg=f"row {i}: {r}")


@pytest.mark.parametrize("rel_height", [0.5, 0.45])
def test_properties_at_every_frame_match_scipy(rows, padded, rel_height):
    x, mask = padded
    positions = np.broadcast_to(np.arange(x.shape[1], dtype=np.int32), x.shape)
    props = helpers.peak_properties(x, mask, positions, rel_height=rel_height)
    for i, r in enumerate(rows):
        n = len(r)
        xv = r.astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zero-prominence frames (edges, slopes) warn
            prom, lb, rb = peak_prominences(xv, np.arange(n))
            _, height, left, right = peak_widths(xv, np.arange(n), rel_height=rel_height,
                                                 prominence_data=(prom, lb, rb))
        np.testing.assert_allclose(np.asarray(props.prominence)[i, :n], prom, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(props.left_base)[i, :n], lb, err_msg=f"row {i}")
        np.testing.assert_array_equal(np.asarray(props.right_base)[i, :n], rb, err_msg=f"row {i}")
        np.testing.assert_allclose(np.asarray(props.width_height)[i, :n], height, atol=1e-5)
        np.testing.assert_allclose(np.asarray(props.left_ips)[i, :n], left, atol=1e-4)
        np.testing.assert_allclose(np.asarray(props.right_ips)[i, :n], right, atol=1e-4)


def test_prominent_peaks_match_find_peaks_ranked_by_height(rows, padded):
    out = helpers.prominent_peaks(*padded, min_prominence=0.1, rel_height=0.5, num_peaks=10)
    pos, valid = np.asarray(out.position), np.asarray(out.valid)
    for i, r in enumerate(rows):
        xv = r.astype(np.float64)
        found, _ = find_peaks(xv, prominence=0.1)
        order = found[np.argsort(-xv[found], kind="stable")][:10]
        assert valid[i].sum() == len(order), f"row {i}"
        np.testing.assert_array_equal(pos[i, : len(order)], order, err_msg=f"row {i}")
        if len(order):
            _, _, left, right = peak_widths(xv, order, rel_height=0.5)
            np.testing.assert_allclose(np.asarray(out.left_ips)[i, : len(order)], left, atol=1e-4)
            np.testing.assert_allclose(np.asarray(out.right_ips)[i, : len(order)], right, atol=1e-4)


def test_prominent_peaks_beyond_the_first_block():
    row = helpers.adversarial_rows()[-1]
    assert len(find_peaks(row)[0]) > 32  # the ripples fill the first blocks
    x, mask = helpers.pad_rows([row], t_pad=len(row))
    out = helpers.prominent_peaks(x, mask, min_prominence=0.1, rel_height=0.5, num_peaks=10)
    found, _ = find_peaks(row.astype(np.float64), prominence=0.1)
    expected = found[np.argsort(-row[found], kind="stable")]
    np.testing.assert_array_equal(np.asarray(out.position)[0, : len(expected)], expected)


def test_padded_row_gives_unpadded_result(rows):
    r = rows[20]
    tight = helpers.pad_rows([r], t_pad=len(r))
    loose = helpers.pad_rows([r], rng=np.random.default_rng(12))
    a = helpers.prominent_peaks(*tight, min_prominence=0.1, rel_height=0.5, num_peaks=10)
    b = helpers.prominent_peaks(*loose, min_prominence=0.1, rel_height=0.5, num_peaks=10)
    for name in ("position", "left_ips", "right_ips", "valid"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)))
