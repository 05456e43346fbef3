"""Readers for the DCASE / lighthouse `.npz` feature layout.

- audio: `<audio_dir>/<vid>.npz`, key `features`, float32 [T, 768] MS-CLAP
  HTSAT embeddings before projection, one row per second.
- text: `<text_dir>/qid<qid>.npz`, key `last_hidden_state`, float32 [L, 768]
  GPT-2 hidden states; the last valid row is the end-of-text token. Some
  releases store 77 padded rows plus a mask key; only valid rows are returned.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from amr_jax.data.errors import FeatureError
from amr_jax.data.npz import NpzArchive

AUDIO_KEY = "features"
TEXT_KEY = "last_hidden_state"
FEATURE_DIM = 768
MIN_AUDIO_FRAMES = 2
TEXT_MASK_KEYS = ("attention_mask", "mask", "text_mask")


def audio_feature_path(audio_dir: str | os.PathLike, vid: str) -> Path:
    return Path(audio_dir) / f"{vid}.npz"


def text_feature_path(text_dir: str | os.PathLike, qid: str | int) -> Path:
    return Path(text_dir) / f"qid{qid}.npz"


def _open_npz(path: Path) -> NpzArchive:
    # Not numpy.load: its header parser is unsafe under the loader's threads (see npz.py).
    return NpzArchive(path)


def _check_matrix(x: np.ndarray, path: Path, key: str, dim: int) -> np.ndarray:
    if x.ndim == 3 and x.shape[0] == 1:  # some extractors keep the batch axis
        x = x[0]
    if x.ndim != 2:
        raise FeatureError(f"{path}: '{key}' must be 2-D [rows, {dim}], got shape {x.shape}")
    if x.shape[1] != dim:
        raise FeatureError(f"{path}: '{key}' has width {x.shape[1]}, expected {dim}")
    if not np.issubdtype(x.dtype, np.floating):
        raise FeatureError(f"{path}: '{key}' has dtype {x.dtype}, expected a float type")
    finite = np.isfinite(x)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise FeatureError(
            f"{path}: '{key}' has {int((~finite).sum())} NaN/inf values in rows {rows[:10].tolist()}"
            f"{' ...' if len(rows) > 10 else ''}")
    return x.astype(np.float32, copy=False)


def load_audio_features(path: str | os.PathLike, *, dim: int = FEATURE_DIM) -> np.ndarray:
    """Loads and validates [T, dim] float32 audio features (T >= 2)."""
    path = Path(path)
    with _open_npz(path) as npz:
        if AUDIO_KEY not in npz.files:
            raise FeatureError(f"{path}: missing key '{AUDIO_KEY}' (keys: {npz.files})")
        x = _check_matrix(npz[AUDIO_KEY], path, AUDIO_KEY, dim)
    if x.shape[0] < MIN_AUDIO_FRAMES:
        raise FeatureError(
            f"{path}: audio has {x.shape[0]} frame(s); at least {MIN_AUDIO_FRAMES} one-second frames "
            "are needed to localize anything")
    return x


def load_text_features(path: str | os.PathLike, *, dim: int = FEATURE_DIM) -> np.ndarray:
    """Loads [L, dim] float32 text features, valid rows only (L >= 1)."""
    path = Path(path)
    with _open_npz(path) as npz:
        if TEXT_KEY not in npz.files:
            raise FeatureError(f"{path}: missing key '{TEXT_KEY}' (keys: {npz.files})")
        raw = npz[TEXT_KEY]
        mask_key = next((k for k in TEXT_MASK_KEYS if k in npz.files), None)
        mask = None if mask_key is None else np.asarray(npz[mask_key]).reshape(-1)
    if mask is not None:
        if mask.dtype.kind not in "biuf":  # a string or void "mask" is not a mask
            raise FeatureError(f"{path}: mask '{mask_key}' has dtype {mask.dtype}, expected bool or "
                               "numbers")
        mask = mask.astype(bool)
    if raw.ndim == 3 and raw.shape[0] == 1:
        raw = raw[0]
    if mask is not None:
        if raw.ndim != 2 or mask.shape[0] != raw.shape[0]:
            raise FeatureError(
                f"{path}: mask '{mask_key}' has {mask.shape[0]} entries for {raw.shape} features")
        # Only valid rows carry meaning; padded rows may hold anything (even NaN).
        raw = raw[mask]
    x = _check_matrix(raw, path, TEXT_KEY, dim)
    if x.shape[0] == 0:
        raise FeatureError(f"{path}: no valid text rows")
    return x
