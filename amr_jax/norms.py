"""The one home of L2 normalization (the last axis), in the two forms the references use.

- `l2_normalize`: `x / max(||x||, eps)`, torch's `F.normalize` (MS-CLAP's heads, cosine
  relevance, UVCOM's similarity loss and negative selection). All-zero rows stay zero.
- `l2_normalize_plus_eps`: `x / (||x|| + eps)`, the reference's own formula for QD-DETR's input
  rows and UVCOM's EM bases (`calculate_l1_norm` in the reference, despite its name an L2 norm).
  Works on numpy arrays (host input pipeline) and jax arrays alike.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# torch.nn.functional.normalize's default floor.
F_NORMALIZE_EPS = 1e-12


def l2_normalize(x: jax.Array, eps: float = F_NORMALIZE_EPS) -> jax.Array:
    """`x / max(||x||_2, eps)` over the last axis, as `torch.nn.functional.normalize`."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def l2_normalize_plus_eps(x, eps: float):
    """`x / (||x||_2 + eps)` over the last axis; numpy in, numpy out (jax likewise)."""
    xp = np if isinstance(x, np.ndarray) else jnp
    return x / (xp.linalg.norm(x, axis=-1, keepdims=True) + eps)
