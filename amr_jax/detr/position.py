"""Sine position encodings used by QD-DETR.

Two encodings, both with interleaved `(sin, cos)` pairs: feature `2k` is
`sin(x / t_k)` and feature `2k + 1` is `cos(x / t_k)` with
`t_k = temperature ** (2k / num_feats)`.

* `masked_sine_positions`: frame positions of a padded sequence, normalized per
  sample by its number of valid frames, so a recording's encoding depends on
  its own length and not on how far the batch was padded.
* `anchor_sine_embedding`: the decoder's embedding of 2-d anchors
  `(center, width)` in [0, 1], 128 features per coordinate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Added to the valid-frame count before dividing, as the reference does.
_NORMALIZE_EPS = 1e-6


def _interleaved_sine(x: jax.Array, num_feats: int, temperature: float) -> jax.Array:
    """`[...]` positions -> `[..., num_feats]` interleaved (sin, cos) features."""
    # t_k repeats for each (sin, cos) pair: exponents 0, 0, 2/n, 2/n, 4/n, ...
    exponent = 2.0 * (jnp.arange(num_feats) // 2) / num_feats
    dim_t = jnp.asarray(temperature, jnp.float32) ** exponent.astype(jnp.float32)
    angles = x[..., None].astype(jnp.float32) / dim_t
    is_even = (jnp.arange(num_feats) % 2) == 0
    return jnp.where(is_even, jnp.sin(angles), jnp.cos(angles))


def masked_sine_positions(
    mask: jax.Array,
    num_feats: int,
    *,
    temperature: float = 10000.0,
    scale: float = 2.0 * math.pi,
) -> jax.Array:
    """Sine encoding of frame positions normalized by each sample's valid length.

    Position of frame `t` is `cumsum(mask)[t] / (num_valid + 1e-6) * scale`, so
    valid frames span `(0, scale]`; padded frames (after the valid ones) repeat
    the last valid position and must be masked by the caller.

    Args:
        mask: [B, T] bool, True on valid frames (valid frames first).
        num_feats: output width (the model width).
        temperature: frequency base.
        scale: value of the last valid position.

    Returns:
        [B, T, num_feats] float32.
    """
    x = jnp.cumsum(mask.astype(jnp.float32), axis=1)
    x = x / (x[:, -1:] + _NORMALIZE_EPS) * scale
    return _interleaved_sine(x, num_feats, temperature)


def anchor_sine_embedding(
    anchors: jax.Array,
    *,
    num_feats: int = 128,
    temperature: float = 10000.0,
) -> jax.Array:
    """Sine embedding of 2-d anchors, center features first then width features.

    Args:
        anchors: [..., 2] (center, width) in [0, 1].
        num_feats: features per coordinate (the reference fixes 128, so the
            embedding is 256 wide).
        temperature: frequency base.

    Returns:
        [..., 2 * num_feats] float32.
    """
    scaled = anchors * (2.0 * math.pi)
    center = _interleaved_sine(scaled[..., 0], num_feats, temperature)
    width = _interleaved_sine(scaled[..., 1], num_feats, temperature)
    return jnp.concatenate([center, width], axis=-1)
