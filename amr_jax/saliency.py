"""Relevance curves: per-frame query relevance for the training-free systems.

All functions work on padded batches. Frames are `[B, T]` (or `[N, T]` per recording) with a
boolean mask whose valid frames come first; padded frames of every output are 0, so a padded
row gives the same valid values as the unpadded sequence.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from amr_jax.norms import l2_normalize


def end_of_text(text: np.ndarray, text_mask: np.ndarray) -> np.ndarray:
    """Each query's last valid token row (the end-of-text token CLAP pools), on the host.

    Args:
      text: `[B, L, D]` per-token features.
      text_mask: `[B, L]` bool (the last True is taken, wherever the valid rows are).

    Returns:
      `[B, D]`.

    Raises:
      ValueError: naming the rows without any valid token.
    """
    text_mask = np.asarray(text_mask, bool)
    empty = ~text_mask.any(axis=-1)
    if empty.any():
        raise ValueError(f"text rows {np.flatnonzero(empty)[:10].tolist()} have no valid token")
    idx = text_mask.shape[-1] - 1 - np.argmax(text_mask[:, ::-1], axis=-1)
    return np.take_along_axis(np.asarray(text), idx[:, None, None], axis=1)[:, 0]


def grouped_relevance(audio: jax.Array, audio_mask: jax.Array, queries: jax.Array,
                      query_recording: jax.Array, query_slot: jax.Array,
                      slot_query: jax.Array) -> jax.Array:
    """Dot products of each query with the frames of its own recording.

    The recordings are embedded once (`[N, T, E]`); instead of gathering a copy of the audio
    per query (`[B, T, E]`, gigabytes on a full split), the at most `S` queries of each
    recording are gathered next to it and scored with one batched contraction.

    Args:
      audio: `[N, T, E]` frames per recording (use normalized rows for cosine relevance).
      audio_mask: `[N, T]` bool.
      queries: `[B, E]` query vectors.
      query_recording: `[B]` int, the recording row of each query.
      query_slot: `[B]` int, the slot of each query within its recording, `< S`.
      slot_query: `[N, S]` int, the query in each slot, -1 for an empty slot.

    Returns:
      `[B, T]` relevance, 0 on padded frames.
    """
    slot_vectors = jnp.where((slot_query >= 0)[..., None], queries[jnp.maximum(slot_query, 0)], 0.0)
    # [N, T, E] @ [N, E, S]: a plain batched matmul (XLA:CPU runs it ~6x faster than the
    # "nte,nse->nst" contraction order).
    scores = jnp.matmul(audio, jnp.swapaxes(slot_vectors, 1, 2))  # [N, T, S]
    out = scores[query_recording, :, query_slot]
    return jnp.where(audio_mask[query_recording], out, 0.0)


RELEVANCES = ("backbone", "joint", "contrast")


def relevance_curves(relevance: str, audio: jax.Array, audio_mask: jax.Array, queries: jax.Array,
                     neutral: jax.Array | None, query_recording: jax.Array,
                     query_slot: jax.Array, slot_query: jax.Array) -> jax.Array:
    """`[B, T]` relevance of every query on the frames of its recording.

    - "backbone": cosine of the raw rows (both sides L2-normalized here);
    - "joint": `<a_t, q>` of MS-CLAP joint-space embeddings (already normalized);
    - "contrast": the background contrast `<a_t, q> - <a_t, n>`, i.e. `<a_t, q - n>` with the
      neutral direction `n` (`[E]`).

    Args:
      audio: `[N, T, E]` frames per recording; audio_mask: `[N, T]` bool.
      queries: `[B, E]`; neutral: `[E]` for "contrast", else unused.
      query_recording, query_slot, slot_query: the layout of `grouped_relevance`.

    Returns:
      `[B, T]`, 0 on padded frames.
    """
    if relevance == "backbone":
        audio, queries = l2_normalize(audio), l2_normalize(queries)
    elif relevance == "contrast":
        queries = queries - neutral[None, :]
    elif relevance != "joint":
        raise ValueError(f"unknown relevance {relevance!r}; expected one of {RELEVANCES}")
    return grouped_relevance(audio, audio_mask, queries, query_recording, query_slot, slot_query)


def standardize(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Z-score over the valid frames of each row (population standard deviation).

    A row whose valid values are all equal maps to all zeros rather than NaN or rounding noise.

    Args:
      x: `[B, T]`.
      mask: `[B, T]` bool.

    Returns:
      `[B, T]`, 0 on padded frames.
    """
    m = mask.astype(x.dtype)
    n = jnp.maximum(jnp.sum(m, axis=-1, keepdims=True), 1.0)
    mean = jnp.sum(x * m, axis=-1, keepdims=True) / n
    centered = (x - mean) * m
    std = jnp.sqrt(jnp.sum(centered * centered, axis=-1, keepdims=True) / n)
    hi = jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1, keepdims=True)
    lo = jnp.min(jnp.where(mask, x, jnp.inf), axis=-1, keepdims=True)
    flat = ~(hi > lo)
    z = centered / jnp.where(flat | (std <= 0), 1.0, std)
    return jnp.where(mask & ~flat, z, 0.0)
