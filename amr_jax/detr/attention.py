"""Multi-head attention with key padding masks, in the two forms QD-DETR uses.

* `MultiHeadAttention`: PyTorch `nn.MultiheadAttention` semantics (fused input
  projection, zero input/output biases, dropout on the attention weights). Used
  by the text-to-audio and self-attention encoder layers.
* `ProjectionFreeAttention`: the conditional-DETR attention of the decoder,
  whose callers project queries, keys and values themselves. Query/key width
  and value width may differ (the decoder cross-attention uses 512-wide
  queries/keys, content and position concatenated per head, and 256-wide
  values).

Layout is batch-major: `[B, L, D]`. Masks are True on valid keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from amr_jax.detr import layers


def masked_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    key_mask: jax.Array | None,
    *,
    num_heads: int,
    dropout: nnx.Dropout,
    deterministic: bool,
    rngs=None,
    attn_mask: jax.Array | None = None,
) -> jax.Array:
    """Scaled dot-product attention over heads split from the last axis.

    Args:
        query: [B, Lq, H * dk] (already projected).
        key: [B, Lk, H * dk].
        value: [B, Lk, H * dv].
        key_mask: [B, Lk] bool, True on keys that may be attended to, or None.
        num_heads: H.
        dropout: dropout applied to the attention weights in training.
        deterministic: disables dropout.
        rngs: dropout RNGs (Rngs, RngStream or key), or None to use the module's.
        attn_mask: optional bool mask broadcastable to [B, H, Lq, Lk], True
            where attention is allowed; combined with `key_mask`.

    Returns:
        [B, Lq, H * dv]. A query whose keys are all masked gets the uniform
        average of the values instead of NaN.
    """
    batch, q_len, qk_dim = query.shape
    v_dim = value.shape[-1]
    if qk_dim % num_heads or v_dim % num_heads:
        raise ValueError(
            f"attention widths {qk_dim} (query/key) and {v_dim} (value) must be "
            f"divisible by num_heads={num_heads}"
        )
    head_dim = qk_dim // num_heads
    q = query.reshape(batch, q_len, num_heads, head_dim) * (head_dim**-0.5)
    k = key.reshape(batch, key.shape[1], num_heads, head_dim)
    v = value.reshape(batch, value.shape[1], num_heads, v_dim // num_heads)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
    allowed = None if key_mask is None else key_mask[:, None, None, :]
    if attn_mask is not None:
        allowed = attn_mask if allowed is None else allowed & attn_mask
    if allowed is not None:
        logits = jnp.where(allowed, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = dropout(weights, deterministic=deterministic, rngs=rngs)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(batch, q_len, v_dim)


class MultiHeadAttention(nnx.Module):
    """`nn.MultiheadAttention(d, num_heads, dropout)` of PyTorch, batch-major.

    Parameters: `in_proj_kernel` [d, 3d] (query, key, value blocks; one
    xavier-uniform draw over the whole fused matrix as in the reference),
    `in_proj_bias` [3d] zeros, `out_proj` Linear(d, d) with zero bias.
    """

    def __init__(self, dim: int, num_heads: int, *, dropout: float, rngs: nnx.Rngs):
        self.dim = dim
        self.num_heads = num_heads
        self.in_proj_kernel = nnx.Param(layers.xavier_uniform(rngs.params(), (dim, 3 * dim)))
        self.in_proj_bias = nnx.Param(jnp.zeros((3 * dim,), jnp.float32))
        self.out_proj = layers.linear(dim, dim, xavier=True, zero_bias=True, rngs=rngs)
        self.attn_dropout = nnx.Dropout(dropout)

    def __call__(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        key_mask: jax.Array | None,
        *,
        deterministic: bool,
        rngs=None,
        attn_mask: jax.Array | None = None,
    ) -> jax.Array:
        """Attends `query` [B, Lq, d] to `key`/`value` [B, Lk, d]; returns [B, Lq, d].

        `key_mask` [B, Lk] and the optional `attn_mask` [B, H, Lq, Lk] are True
        where attention is allowed.
        """
        w = self.in_proj_kernel[...]
        b = self.in_proj_bias[...]
        d = self.dim
        q = query @ w[:, :d] + b[:d]
        k = key @ w[:, d : 2 * d] + b[d : 2 * d]
        v = value @ w[:, 2 * d :] + b[2 * d :]
        out = masked_attention(
            q,
            k,
            v,
            key_mask,
            num_heads=self.num_heads,
            dropout=self.attn_dropout,
            deterministic=deterministic,
            rngs=rngs,
            attn_mask=attn_mask,
        )
        return self.out_proj(out)


class ProjectionFreeAttention(nnx.Module):
    """Attention without input projections; only `out_proj` Linear(dv, dv), zero bias.

    Query/key width `qk_dim` sets the head size (so the scaling is
    `(qk_dim / num_heads) ** -0.5`); values are `v_dim` wide.
    """

    def __init__(
        self, qk_dim: int, v_dim: int, num_heads: int, *, dropout: float, rngs: nnx.Rngs
    ):
        self.qk_dim = qk_dim
        self.num_heads = num_heads
        self.out_proj = layers.linear(v_dim, v_dim, xavier=True, zero_bias=True, rngs=rngs)
        self.attn_dropout = nnx.Dropout(dropout)

    def __call__(
        self,
        query: jax.Array,
        key: jax.Array,
        value: jax.Array,
        key_mask: jax.Array | None,
        *,
        deterministic: bool,
        rngs=None,
    ) -> jax.Array:
        """query [B, Lq, qk_dim], key [B, Lk, qk_dim], value [B, Lk, v_dim] -> [B, Lq, v_dim]."""
        if query.shape[-1] != self.qk_dim or key.shape[-1] != self.qk_dim:
            raise ValueError(
                f"query/key width must be {self.qk_dim}, got {query.shape[-1]} and {key.shape[-1]}"
            )
        out = masked_attention(
            query,
            key,
            value,
            key_mask,
            num_heads=self.num_heads,
            dropout=self.attn_dropout,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.out_proj(out)
