"""Padding to fixed maximum lengths with masks (static shapes for jit)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amr_jax.data.loader import Split
from amr_jax.data.records import QueryRecord
from amr_jax.types import QueryBatch


def pad_rows(arrays: Sequence[np.ndarray], max_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Stacks [n_i, D] arrays into [N, max_rows, D] + mask [N, max_rows].

    Rows beyond `max_rows` are truncated (the first `max_rows` are kept, as the
    reference loaders do for both audio and text).
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    dim = arrays[0].shape[-1] if arrays else 0
    out = np.zeros((len(arrays), max_rows, dim), np.float32)
    mask = np.zeros((len(arrays), max_rows), bool)
    for i, a in enumerate(arrays):
        n = min(a.shape[0], max_rows)
        out[i, :n] = a[:n]
        mask[i, :n] = True
    return out, mask


pad_audio = pad_rows
pad_text = pad_rows


def pad_windows(windows: Sequence[np.ndarray | None], max_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """[K_i, 2] windows (or None) -> [N, max_windows, 2] + mask; extra windows are cut."""
    out = np.zeros((len(windows), max_windows, 2), np.float32)
    mask = np.zeros((len(windows), max_windows), bool)
    for i, w in enumerate(windows):
        if w is None:
            continue
        n = min(len(w), max_windows)
        out[i, :n] = w[:n]
        mask[i, :n] = True
    return out, mask


def make_query_batch(split: Split, records: Sequence[QueryRecord], *, max_frames: int,
                     max_tokens: int, max_windows: int) -> QueryBatch:
    """Builds a host-side (numpy) QueryBatch for `records` of `split`."""
    audio, audio_mask = pad_rows([split.audio[r.vid] for r in records], max_frames)
    text, text_mask = pad_rows([split.text[r.key] for r in records], max_tokens)
    windows, window_mask = pad_windows([r.windows for r in records], max_windows)
    duration = np.asarray([r.duration for r in records], np.float32)
    return QueryBatch(audio=audio, audio_mask=audio_mask, text=text, text_mask=text_mask,
                      windows=windows, window_mask=window_mask, duration=duration)
