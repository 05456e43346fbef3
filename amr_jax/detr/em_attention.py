"""UVCOM's EM attention and bipartite random-walk refinement as pure masked functions.

Both come from UVCOM's Comprehensive Integration Module (lighthouse
`lighthouse/common/CIM.py`, `EM_RBF` and `BMRW`; DESIGN 9.6):

* `em_bases`: expectation-maximization of `K` bases over a sequence `x` [B, T, d].
  With unit-normalized bases `m_k` and frames `x_t`, each iteration computes
  responsibilities `z[k, t] = softmax_k(-|m_k - x_t|^2 / (2 sigma^2))` (sigma 1.2),
  normalizes them over frames `z[k, t] / (sum_t z[k, t] + 1e-9)` and re-estimates
  the bases as the weighted means of the *unnormalized* frames. Runs `num_iters`
  iterations in a `lax.fori_loop` over an `EMState`.
* `random_walk_refine`: one bipartite random walk between frames and bases,
  `(1 - w) (I - w^2 A) (w Z^T y + x)` with `A = Z^T Zn` (frames x frames through
  the bases). The reference builds `A` [T, T] and calls `torch.linalg.solve(I,
  I - w^2 A)`, which is just `I - w^2 A`; here `A` is applied through the bases
  (`Z^T (Zn s)`), never formed, so the cost is O(T K d) instead of O(T^2 d).

Masking (a deviation from the reference, which sums over padded frames too):
padded frames get zero responsibility, so they never enter a normalization or a
weighted sum, and a padded row gives the same bases and refined frames as the
unpadded row. Without padding the results equal the reference's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from amr_jax.norms import l2_normalize_plus_eps

# `calculate_l1_norm` of the reference (an L2 normalization despite its name).
NORM_EPS = 1e-9
# Bandwidth of the RBF responsibilities, fixed in the reference.
RBF_SIGMA = 1.2
# Temperature of the random walk's frame-to-basis affinities, fixed in the reference.
WALK_SCALE = 5.0


class EMState(NamedTuple):
    """Loop state of `em_bases`.

    Attributes:
      bases: [B, K, d] current bases (unnormalized).
      responsibilities: [B, K, T] frame-normalized responsibilities of the last iteration.
    """

    bases: jax.Array
    responsibilities: jax.Array


def unit_normalize(x: jax.Array) -> jax.Array:
    """`x / (|x|_2 + 1e-9)` over the last axis (the reference's `calculate_l1_norm`)."""
    return l2_normalize_plus_eps(x, NORM_EPS)


def _rbf_responsibilities(bases: jax.Array, unit_x: jax.Array, valid: jax.Array,
                          sigma: float) -> jax.Array:
    """Frame-normalized responsibilities [B, K, T] of unit bases for unit frames."""
    unit_mu = unit_normalize(bases)
    # |m - x|^2 expanded: avoids the [B, K, T, d] difference tensor of the reference.
    sq = (jnp.sum(unit_mu**2, -1)[:, :, None] + jnp.sum(unit_x**2, -1)[:, None, :]
          - 2.0 * jnp.einsum("bkd,btd->bkt", unit_mu, unit_x))
    z = jax.nn.softmax(-0.5 * sq / sigma**2, axis=1) * valid[:, None, :]
    return z / (z.sum(axis=-1, keepdims=True) + NORM_EPS)


def em_bases(init_bases: jax.Array, x: jax.Array, mask: jax.Array, *, num_iters: int,
             sigma: float = RBF_SIGMA) -> EMState:
    """EM attention: `num_iters` re-estimations of `K` bases over the valid frames of `x`.

    Args:
      init_bases: [B, K, d] or [K, d] (learned bases, broadcast over the batch).
      x: [B, T, d] frames.
      mask: [B, T] bool, True on valid frames.
      num_iters: EM iterations (UVCOM's `em_iter`, 5); 0 returns the initial bases.
      sigma: RBF bandwidth.

    Returns:
      `EMState` with `bases` [B, K, d] and the last `responsibilities` [B, K, T]
      (zeros when `num_iters` is 0).
    """
    batch, frames, dim = x.shape
    bases = jnp.broadcast_to(init_bases, (batch,) + init_bases.shape[-2:]).astype(x.dtype)
    valid = mask.astype(x.dtype)
    unit_x = unit_normalize(x)

    def step(_, state: EMState) -> EMState:
        z = _rbf_responsibilities(state.bases, unit_x, valid, sigma)
        return EMState(bases=jnp.einsum("bkt,btd->bkd", z, x), responsibilities=z)

    init = EMState(bases=bases, responsibilities=jnp.zeros(
        (batch, bases.shape[1], frames), x.dtype))
    del dim
    return jax.lax.fori_loop(0, num_iters, step, init)


def random_walk_refine(x: jax.Array, bases: jax.Array, mask: jax.Array, *,
                       weight: float = 0.5, scale: float = WALK_SCALE) -> jax.Array:
    """UVCOM's bipartite random walk (`BMRW`): frames refined through the bases.

    Args:
      x: [B, T, d] frames (the locally convolved audio).
      bases: [B, K, d] (the EM text bases).
      mask: [B, T] bool, True on valid frames.
      weight: walk weight `w` (0.5 in UVCOM).
      scale: affinity temperature (5.0).

    Returns:
      [B, T, d] `(1 - w) (s - w^2 Z^T (Zn s))` with `s = w Z^T bases + x`, where
      `Z` [B, K, T] = softmax over bases of `scale * cos(basis, frame)` (zero on
      padded frames) and `Zn` = `Z` normalized over frames. Padded frames hold
      `(1 - w) s` and must be masked by the caller.
    """
    valid = mask.astype(x.dtype)
    affinity = jnp.einsum("bkd,btd->bkt", unit_normalize(bases), unit_normalize(x))
    z = jax.nn.softmax(affinity * scale, axis=1) * valid[:, None, :]
    zn = z / (z.sum(axis=-1, keepdims=True) + NORM_EPS)
    s = weight * jnp.einsum("bkt,bkd->btd", z, bases) + x
    walked = jnp.einsum("bkt,bkd->btd", z, jnp.einsum("bkt,btd->bkd", zn, s))
    return (1.0 - weight) * (s - weight**2 * walked)
