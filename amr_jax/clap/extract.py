"""Feature extraction in the release layout: wav -> `clap/<vid>.npz`, text -> `clap_text/qid<qid>.npz`.

Audio: `audio_frontend` (load, resample to 44.1 kHz, 1 s windows with the CASTELLA or
Clotho-Moment cut) then `htsat.HTSAT` -> `features` `[T, 768]` float32, one row per
window, as the released files hold. Windows go through one jitted program in fixed-size
batches (the last batch zero-padded, its padded rows dropped), so a file of any length
compiles once per batch size.

Text: MS-CLAP tokenization, Flax GPT-2, `last_hidden_state` rows `[:count(mask)]` (the
extractors' `hidden_states[0, :len_output]`), before the projection head.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from absl import logging
from flax import nnx

from amr_jax.clap import audio_frontend
from amr_jax.clap.htsat import HTSAT
from amr_jax.data import features as features_lib
from amr_jax.errors import UsageError
from amr_jax.io_utils import atomic_save_npz

AUDIO_SUBDIR, TEXT_SUBDIR = "clap", "clap_text"
AUDIO_SUFFIXES = (".wav",)


@jax.jit
def _encode(graphdef, state, windows: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    return model(audio_frontend.log_mel(windows))


class AudioEncoder:
    """Jitted window -> 768-d feature program around a converted HTS-AT.

    Args:
      model: `HTSAT` (e.g. `convert.load_converted(dir).htsat_module()`).
      batch_size: windows per device call (fixed, so one compilation).
    """

    def __init__(self, model: HTSAT, *, batch_size: int = 16):
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        self.graphdef, self.state = nnx.split(model)
        self.batch_size = batch_size
        self.dim = model.cfg.num_features

    def encode_windows(self, windows: np.ndarray) -> np.ndarray:
        """`[T, 44100]` windows -> `[T, 768]` float32 features."""
        n = len(windows)
        out = np.zeros((n, self.dim), np.float32)
        for start in range(0, n, self.batch_size):
            chunk = windows[start:start + self.batch_size]
            padded = np.zeros((self.batch_size, windows.shape[1]), np.float32)
            padded[: len(chunk)] = chunk
            out[start:start + len(chunk)] = np.asarray(
                _encode(self.graphdef, self.state, padded))[: len(chunk)]
        return out

    def encode_signal(self, signal: np.ndarray, sample_rate: int, layout: str) -> np.ndarray:
        """A mono signal at any rate -> `[T, 768]` features (resampled, windowed by `layout`)."""
        x = audio_frontend.resample(signal, sample_rate, audio_frontend.SAMPLE_RATE)
        return self.encode_windows(audio_frontend.window_audio(x, layout))

    def encode_file(self, path: str | os.PathLike, layout: str) -> np.ndarray:
        signal, rate = audio_frontend.load_wav(path)
        feats = self.encode_signal(signal, rate, layout)
        if len(feats) == 0:
            raise UsageError(f"{path}: shorter than one 1 s window ({len(signal) / rate:.2f} s)")
        return feats


def audio_files(audio: str | os.PathLike) -> list[Path]:
    """A wav file, or the wav files of a folder (sorted)."""
    audio = Path(audio)
    if audio.is_file():
        return [audio]
    if not audio.is_dir():
        raise FileNotFoundError(f"audio not found: {audio}")
    files = sorted(p for p in audio.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise UsageError(f"{audio}: no {'/'.join(AUDIO_SUFFIXES)} files")
    return files


def extract_audio(encoder: AudioEncoder, files: Sequence[Path], output: str | os.PathLike,
                  layout: str, *, progress: bool = True) -> dict[str, int]:
    """Writes `output/clap/<stem>.npz` (key `features`) per file, atomically.

    Returns:
      vid -> number of frames written.
    """
    out_dir = Path(output) / AUDIO_SUBDIR
    out_dir.mkdir(parents=True, exist_ok=True)
    iterator: Iterable[Path] = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="extract audio", unit="file")
    frames = {}
    for path in iterator:
        feats = encoder.encode_file(path, layout)
        atomic_save_npz(features_lib.audio_feature_path(out_dir, path.stem),
                        **{features_lib.AUDIO_KEY: feats})
        frames[path.stem] = len(feats)
    logging.info("wrote %d audio feature files to %s", len(frames), out_dir)
    return frames


@nnx.jit
def _gpt2_states(gpt2, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return gpt2(ids, mask)


def text_hidden_states(gpt2, tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    """Per-token GPT-2 states `[L_i, 768]` of each caption (L_i = its non-pad tokens)."""
    ids, mask = tokenizer(texts)
    hidden = np.asarray(_gpt2_states(gpt2, ids, mask))
    return [hidden[i, : int(mask[i].sum())].astype(np.float32) for i in range(len(texts))]


def extract_text(gpt2, tokenizer, queries: Sequence[tuple[str, str]],
                 output: str | os.PathLike, *, batch_size: int = 32,
                 progress: bool = True) -> int:
    """Writes `output/clap_text/qid<qid>.npz` (key `last_hidden_state`) per (qid, text)."""
    out_dir = Path(output) / TEXT_SUBDIR
    out_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(queries), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="extract text", unit="batch")
    for start in starts:
        batch = queries[start:start + batch_size]
        # Pad the batch to a fixed size so GPT-2 compiles once.
        texts = [t for _, t in batch] + [""] * (batch_size - len(batch))
        for (qid, _), rows in zip(batch, text_hidden_states(gpt2, tokenizer, texts)):
            atomic_save_npz(features_lib.text_feature_path(out_dir, qid),
                            **{features_lib.TEXT_KEY: rows})
    return len(queries)
