"""The two L2 normalizations of `amr_jax.norms` against numpy (and torch's F.normalize)."""

import jax.numpy as jnp
import numpy as np
import pytest

from amr_jax import norms


def _rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 7)).astype(np.float32)
    x[2] = 0.0          # an all-zero row stays zero, never NaN
    x[3] *= 1e-8        # a tiny row: the floors differ between the two forms
    return x


def test_l2_normalize_is_f_normalize():
    x = _rows()
    got = np.asarray(norms.l2_normalize(jnp.asarray(x)))
    want = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert np.all(got[2] == 0)
    torch = pytest.importorskip("torch")
    ref = torch.nn.functional.normalize(torch.from_numpy(x), dim=-1).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)


def test_l2_normalize_plus_eps_keeps_the_array_kind():
    x = _rows()
    want = x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-5)
    host = norms.l2_normalize_plus_eps(x, 1e-5)
    assert isinstance(host, np.ndarray)
    np.testing.assert_allclose(host, want, rtol=1e-6)
    device = norms.l2_normalize_plus_eps(jnp.asarray(x), 1e-5)
    assert not isinstance(device, np.ndarray)
    np.testing.assert_allclose(np.asarray(device), want, rtol=1e-6, atol=1e-8)
    # The tiny row is shrunk by the added eps, unlike F.normalize's floor.
    assert np.linalg.norm(host[3]) < 0.1 < np.linalg.norm(np.asarray(norms.l2_normalize(x[3])))
