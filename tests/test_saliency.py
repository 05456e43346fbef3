"""Relevance curves and standardization against plain numpy."""

import jax
import numpy as np
import pytest

from amr_jax import saliency


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n_rec, t_len, dim = 4, 12, 16
    audio = rng.normal(size=(n_rec, t_len, dim)).astype(np.float32)
    lengths = np.array([12, 7, 1, 9])
    audio_mask = np.arange(t_len)[None] < lengths[:, None]
    audio[~audio_mask] = 0.0
    # Queries: recording 0 has 3, recording 1 none, recordings 2 and 3 one each.
    query_recording = np.array([0, 2, 0, 3, 0], np.int32)
    query_slot = np.array([0, 0, 1, 0, 2], np.int32)
    slot_query = np.full((n_rec, 3), -1, np.int32)
    slot_query[query_recording, query_slot] = np.arange(5)
    queries = rng.normal(size=(5, dim)).astype(np.float32)
    return audio, audio_mask, queries, query_recording, query_slot, slot_query


def _np_cos(a, q):
    return (a @ q) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(q), 1e-12)


def test_grouped_relevance_equals_per_query_dot(data):
    audio, audio_mask, queries, rec, slot, slot_query = data
    got = np.asarray(jax.jit(saliency.grouped_relevance)(audio, audio_mask, queries, rec, slot,
                                                         slot_query))
    for b in range(len(queries)):
        n = audio_mask[rec[b]].sum()
        np.testing.assert_allclose(got[b, :n], audio[rec[b], :n] @ queries[b], rtol=1e-5, atol=1e-5)
        assert np.all(got[b, n:] == 0)


def test_relevance_curves_cosine_joint_and_contrast(data):
    # The function localize's program runs, against plain numpy definitions of the three
    # relevances (cosine of raw rows; dot of unit vectors; dot minus the neutral's dot).
    audio, audio_mask, queries, rec, slot, slot_query = data
    layout = (rec, slot, slot_query)
    frames, mask = audio[rec], audio_mask[rec]
    cos = np.asarray(saliency.relevance_curves("backbone", audio, audio_mask, queries, None,
                                               *layout))
    for b in range(len(queries)):
        n = mask[b].sum()
        np.testing.assert_allclose(cos[b, :n], _np_cos(frames[b, :n], queries[b]), atol=1e-5)
        assert np.all(cos[b, n:] == 0)
    unit_audio = audio / np.maximum(np.linalg.norm(audio, axis=-1, keepdims=True), 1e-12)
    q = queries / np.linalg.norm(queries, axis=-1, keepdims=True)
    neutral = q[0] + q[1]
    neutral /= np.linalg.norm(neutral)
    joint = np.asarray(saliency.relevance_curves("joint", unit_audio, audio_mask, q, None,
                                                 *layout))
    contrast = np.asarray(saliency.relevance_curves("contrast", unit_audio, audio_mask, q,
                                                    neutral, *layout))
    unit = unit_audio[rec]
    want_joint = np.where(mask, np.einsum("btd,bd->bt", unit, q), 0)
    np.testing.assert_allclose(joint, want_joint, atol=1e-5)
    np.testing.assert_allclose(contrast, np.where(mask, want_joint - unit @ neutral, 0), atol=1e-5)
    with pytest.raises(ValueError, match="unknown relevance"):
        saliency.relevance_curves("cosine", audio, audio_mask, queries, None, *layout)


def test_end_of_text_is_last_valid_row():
    rng = np.random.default_rng(1)
    text = rng.normal(size=(3, 6, 4)).astype(np.float32)
    mask = np.arange(6)[None] < np.array([[6], [2], [1]])
    got = np.asarray(saliency.end_of_text(text, mask))
    np.testing.assert_array_equal(got, text[[0, 1, 2], [5, 1, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\] have no valid token"):
        saliency.end_of_text(text, np.arange(6)[None] < np.array([[6], [0], [1]]))


def test_standardize_population_std_and_padding():
    rng = np.random.default_rng(2)
    rows = [rng.normal(size=n) for n in (1, 2, 5, 30)] + [np.full(7, 0.3)]
    x = rng.normal(size=(len(rows), 30)).astype(np.float32) * 9  # junk padding
    mask = np.zeros(x.shape, bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        mask[i, : len(r)] = True
    z = np.asarray(saliency.standardize(x, mask))
    for i, r in enumerate(rows):
        r = r.astype(np.float32).astype(np.float64)
        expected = np.zeros_like(r) if np.ptp(r) == 0 else (r - r.mean()) / r.std()
        np.testing.assert_allclose(z[i, : len(r)], expected, atol=1e-5)
        assert np.all(z[i, len(r):] == 0)
