"""Embedding into MS-CLAP's joint space: audio frames, queries, the neutral background.

Every output is L2-normalized, so relevance is a dot product `s_t = <a_t, q>`.
The heads are applied to the *raw* 768-d features (they are not scale-invariant).
Work runs as jitted kernels on fixed-size chunks of rows; results come back as
host numpy arrays.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx

from amr_jax import saliency
from amr_jax.clap.heads import ClapModel
from amr_jax.norms import l2_normalize
from amr_jax.clap.tokenizer import ClapTokenizer, last_index
from amr_jax.data.features import load_text_features

NEUTRAL_PROMPTS = ("background sound", "ambient noise", "background audio")


def neutral_feature_path(directory: str | os.PathLike, prompt: str) -> Path:
    """`<directory>/background_sound.npz` for "background sound", etc."""
    return Path(directory) / (prompt.replace(" ", "_") + ".npz")


# --------------------------------------------------------------------------------------
# Jitted kernels (graphdef static, params traced: one compilation per shape).


@functools.partial(jax.jit, static_argnums=0)
def _project_rows(graphdef, state, x: jax.Array, mask: jax.Array) -> jax.Array:
    """Head + L2 norm on `x [C, ..., D]`; rows where `mask [C, ...]` is False give 0."""
    head = nnx.merge(graphdef, state)
    y = l2_normalize(head(x, deterministic=True))  # inference: never dropout
    return jnp.where(mask[..., None], y, 0.0)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _text_to_joint(gpt2_def, head_def, gpt2_state, head_state, ids, attention_mask, index):
    """GPT-2 over `ids [C, L]`, pick the row `index [C]`, caption head, L2 norm."""
    hidden = nnx.merge(gpt2_def, gpt2_state)(ids, attention_mask)
    pooled = jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]
    return l2_normalize(nnx.merge(head_def, head_state)(pooled, deterministic=True))


def _chunks(n: int, chunk_size: int):
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    if x.shape[0] == rows:
        return x
    pad = np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)
    return np.concatenate([x, pad])


def _run_chunked(fn, arrays: Sequence[np.ndarray], n: int, chunk_size: int, *, desc: str,
                 progress: bool, on_device: bool = False) -> list:
    """Applies `fn(*chunk_arrays)` on fixed-size row chunks (last one zero-padded).

    The next chunk is dispatched before the previous result is copied to host,
    so device work and transfers overlap. `on_device` keeps the results as device arrays
    (no host copy: for callers that continue on the device).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if n == 0:
        return []
    chunk = min(chunk_size, n)
    spans = _chunks(n, chunk)
    bar = None
    if progress and len(spans) > 1:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc, unit="rows")
    def finish(result, rows):
        if on_device:
            jax.block_until_ready(result)  # paces the progress bar; the next chunk is queued
            return result if rows == chunk else result[:rows]
        return np.asarray(result)[:rows]

    out, pending = [], None
    for s, e in spans:
        result = fn(*(_pad_rows(a[s:e], chunk) for a in arrays))
        if pending is not None:
            out.append(finish(*pending))
            if bar is not None:
                bar.update(pending[1])
        pending = (result, e - s)
    if pending is not None:
        out.append(finish(*pending))
        if bar is not None:
            bar.update(pending[1])
            bar.close()
    return out


def _check_features(x: np.ndarray, mask: np.ndarray, width: int, what: str, dims: str) -> None:
    if x.ndim != len(dims.split(",")):
        raise ValueError(f"{what} must be [{dims}], got shape {x.shape}")
    if x.shape[-1] != width:
        raise ValueError(f"{what} has width {x.shape[-1]}, the head expects {width}")
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"{what} mask shape {mask.shape} != feature shape {x.shape[:-1]}")
    bad = ~np.isfinite(x).all(axis=-1) & mask
    if bad.any():
        raise ValueError(f"{what} has non-finite values at (row, position) {np.argwhere(bad)[0]}")


# --------------------------------------------------------------------------------------
# Public API.


def project_audio(
    clap: ClapModel,
    audio: np.ndarray,
    mask: np.ndarray,
    *,
    chunk_size: int = 16,
    progress: bool = True,
    on_device: bool = False,
) -> np.ndarray | jax.Array:
    """Audio backbone frames -> joint space.

    Args:
      clap: model with `audio_head`.
      audio: `[N, T, 768]` float raw HTSAT embeddings, zero-padded past each
        recording's length.
      mask: `[N, T]` bool, True on valid frames.
      chunk_size: recordings per jitted call (all calls share one shape).
      progress: tqdm bar over recordings when there is more than one chunk.
      on_device: return a device array (the same values) without copying to host.

    Returns:
      `[N, T, out_dim]` float32 numpy (a jax array with `on_device`), L2-normalized on
      valid frames and exactly 0 on padded frames. Frames are independent, so padding
      never changes valid rows.
    """
    start = time.perf_counter()
    audio = np.asarray(audio, np.float32)
    mask = np.asarray(mask, bool)
    _check_features(audio, mask, clap.audio_head.in_dim, "audio features", "N, T, D")
    graphdef, state = nnx.split(clap.audio_head)
    parts = _run_chunked(
        lambda x, m: _project_rows(graphdef, state, x, m),
        (audio, mask), audio.shape[0], chunk_size,
        desc=f"project audio (rows of {audio.shape[1]} frames)", progress=progress,
        on_device=on_device,
    )
    if parts:
        out = (jnp.concatenate(parts) if len(parts) > 1 else parts[0]) if on_device \
            else np.concatenate(parts)
    else:
        out = np.zeros(audio.shape[:2] + (clap.joint_dim,), np.float32)
    seconds = time.perf_counter() - start
    frames = int(mask.sum())
    if progress and len(parts) > 1:
        logging.info(
            "projected %d rows of %d frames, %d valid frames in %.2f s (%.0f frames/s)",
            audio.shape[0], audio.shape[1], frames, seconds, frames / max(seconds, 1e-9),
        )
    return out


def embed_query_from_features(
    clap: ClapModel,
    text: np.ndarray,
    text_mask: np.ndarray,
    *,
    chunk_size: int = 256,
) -> np.ndarray:
    """Query embeddings from released GPT-2 text features.

    Args:
      clap: model with `caption_head`.
      text: `[B, L, 768]` per-token hidden states, zero-padded.
      text_mask: `[B, L]` bool; the last True row of each query is its
        end-of-text token, the row MS-CLAP pools.

    Returns:
      `[B, out_dim]` float32 numpy, L2-normalized.
    """
    text = np.asarray(text, np.float32)
    text_mask = np.asarray(text_mask, bool)
    _check_features(text, text_mask, clap.caption_head.in_dim, "text features", "B, L, D")
    pooled = saliency.end_of_text(text, text_mask)
    graphdef, state = nnx.split(clap.caption_head)
    valid = np.ones(pooled.shape[:1], bool)
    parts = _run_chunked(
        lambda x, m: _project_rows(graphdef, state, x, m),
        (pooled, valid), pooled.shape[0], chunk_size, desc="embed queries", progress=False,
    )
    return np.concatenate(parts) if parts else np.zeros((0, clap.joint_dim), np.float32)


def embed_query_from_text(
    clap: ClapModel,
    tokenizer: ClapTokenizer,
    texts: Sequence[str],
    *,
    chunk_size: int = 32,
    progress: bool = True,
) -> np.ndarray:
    """Query embeddings from raw text: MS-CLAP tokenization, GPT-2, caption head.

    The pooled row is `count(ids != 0) - 1` (see `amr_jax.clap.tokenizer`), as in
    MS-CLAP, including its shift for captions that contain "!".

    Returns:
      `[B, out_dim]` float32 numpy, L2-normalized.
    """
    if clap.gpt2 is None:
        raise ValueError(
            "this CLAP model has no GPT-2 weights: convert a checkpoint that holds "
            "caption_encoder.base.* or pass a local GPT-2 snapshot (--gpt2_dir), or "
            "embed from text features instead"
        )
    if tokenizer.vocab_size > clap.gpt2.config.vocab_size:
        raise ValueError(
            f"tokenizer has {tokenizer.vocab_size} tokens but GPT-2 only "
            f"{clap.gpt2.config.vocab_size} embeddings"
        )
    start = time.perf_counter()
    ids, attention_mask = tokenizer(texts)
    index = last_index(ids)
    gpt2_def, gpt2_state = nnx.split(clap.gpt2)
    head_def, head_state = nnx.split(clap.caption_head)
    parts = _run_chunked(
        lambda i, m, k: _text_to_joint(gpt2_def, head_def, gpt2_state, head_state, i, m, k),
        (ids, attention_mask, index), len(texts), chunk_size, desc="embed text",
        progress=progress,
    )
    if progress and len(parts) > 1:
        seconds = time.perf_counter() - start
        logging.info("embedded %d captions with GPT-2 in %.2f s (%.1f captions/s)",
                     len(texts), seconds, len(texts) / max(seconds, 1e-9))
    return np.concatenate(parts) if parts else np.zeros((0, clap.joint_dim), np.float32)


def neutral_embedding(
    clap: ClapModel,
    *,
    tokenizer: ClapTokenizer | None = None,
    neutral_feats_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """The neutral background direction `n` of the contrast trace.

    `n` is the L2-normalized mean of the joint embeddings of "background sound",
    "ambient noise" and "background audio": from raw text when the model has
    GPT-2 weights and a tokenizer is given, otherwise from the three text-feature
    files `<neutral_feats_dir>/{background_sound,ambient_noise,background_audio}.npz`.

    Returns:
      `[out_dim]` float32 numpy, unit norm.
    """
    if clap.gpt2 is not None and tokenizer is not None:
        emb = embed_query_from_text(clap, tokenizer, list(NEUTRAL_PROMPTS), progress=False)
    elif neutral_feats_dir is not None:
        width = clap.caption_head.in_dim
        rows = [
            load_text_features(neutral_feature_path(neutral_feats_dir, p), dim=width)
            for p in NEUTRAL_PROMPTS
        ]
        length = max(r.shape[0] for r in rows)
        text = np.zeros((len(rows), length, width), np.float32)
        mask = np.zeros((len(rows), length), bool)
        for i, r in enumerate(rows):
            text[i, : len(r)] = r
            mask[i, : len(r)] = True
        emb = embed_query_from_features(clap, text, mask)
    else:
        raise ValueError(
            "neutral_embedding needs GPT-2 weights and a tokenizer, or neutral_feats_dir "
            "with " + ", ".join(neutral_feature_path("", p).name for p in NEUTRAL_PROMPTS)
        )
    mean = emb.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
