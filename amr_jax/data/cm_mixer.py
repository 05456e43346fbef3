"""Renders Clotho-Moment(-Long) recipes to WAV files from local audio (Clotho, Walking Tours).

The level rules are the Clotho-Moment generator's (`6_create_dataset.py` of lighthouse's
wrapper), applied to mono audio at one sample rate (default 32 kHz, the generator's):

  background b = the recipe's segment of the recording, P = mean(b^2);
  mix = 10^(bg_dB / 20) * b;
  each occurrence: f = 10^(fg_dB / 20) * sqrt(P) * s / max|s| (s the foreground clip, peak
    normalized), added from sample floor(start * rate);
  out = mix / max|mix| (peak normalization).

So a foreground's peak sits (fg_dB - bg_dB) dB above the scaled background's RMS before the
final normalization (20 to 30 dB for U[-5, 5] and U[-25, -15]).

Deviations from the reference generator (each only where the reference would fail or is
undefined): a foreground file is played from the recipe's `offset` for its `duration` (the
reference writes trimmed copies first and plays them whole: the same samples when the list
comes from `cm_lists`; here a file shorter than asked by more than `duration_tolerance_s` is
an error); an occurrence is cut at the
clip end (the reference's recipes never reach it); a silent background or foreground is an
error naming the file (the reference would write NaNs). Resampling is our Kaiser-windowed
sinc (`amr_jax.data.audio.resample`), not librosa's soxr; channels are averaged as librosa
does. Outputs are written atomically; existing ones are kept (rerunning resumes).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tqdm

from amr_jax.data import audio
from amr_jax.data.audio import AudioError
from amr_jax.io_utils import atomic_write_bytes


@dataclasses.dataclass(frozen=True)
class MixConfig:
    sample_rate: int = 32000
    encoding: str = "pcm16"            # "pcm16" (the reference's soundfile default) | "float32"
    duration_tolerance_s: float = 0.1  # a file may be this much shorter than the recipe says


def load_clip(path: str | os.PathLike, *, start_s: float, duration_s: float,
              config: MixConfig) -> np.ndarray:
    """[round(duration_s * rate)] mono samples at `config.sample_rate` from [start, +duration).

    Raises:
      FileNotFoundError: no such file.
      AudioError: unreadable, or shorter than asked by more than the tolerance.
    """
    x, rate = audio.read_wav(path, start_s=start_s, duration_s=duration_s)
    if len(x) < (duration_s - config.duration_tolerance_s) * rate:
        raise AudioError(f"{path}: has {len(x) / rate:.3f} s from {start_s:g} s, the recipe "
                         f"needs {duration_s:g} s")
    x = audio.resample(x, rate, config.sample_rate)
    n = int(round(duration_s * config.sample_rate))
    return np.pad(x[:n], (0, max(0, n - len(x))))


def mix(background: np.ndarray, bg_db: float,
        occurrences: Sequence[tuple[np.ndarray, float, float]], rate: int, *,
        names: tuple[str, Sequence[str]] = ("background", ())) -> np.ndarray:
    """Applies the generator's level rules and peak normalization.

    Args:
      background: [N] mono samples of the clip's background segment.
      bg_db: background level (dB).
      occurrences: (foreground samples [n], start s, fg_dB) per occurrence.
      rate: sample rate (start times -> samples).
      names: file names for error messages (background, one per occurrence).

    Returns:
      [N] float64 mixture with max |x| == 1.

    Raises:
      AudioError: silent background or foreground.
    """
    power = float(np.mean(background ** 2))
    if power == 0.0:
        raise AudioError(f"{names[0]}: the background segment is silent")
    out = 10.0 ** (bg_db / 20.0) * background
    for i, (fg, start_s, fg_db) in enumerate(occurrences):
        peak = float(np.max(np.abs(fg))) if fg.size else 0.0
        if peak == 0.0:
            name = names[1][i] if i < len(names[1]) else f"foreground {i}"
            raise AudioError(f"{name}: the foreground clip is silent")
        first = int(start_s * rate)  # the reference's floor(start * rate)
        part = fg[:max(0, len(out) - first)]
        out[first:first + len(part)] += 10.0 ** (fg_db / 20.0) * np.sqrt(power) * part / peak
    return out / np.max(np.abs(out))


def render_recipe(recipe: dict, *, fg_root: str | os.PathLike, bg_root: str | os.PathLike,
                  config: MixConfig = MixConfig()) -> np.ndarray:
    """[round(duration * rate)] mixture of one recipe (see `clotho_moment_long`)."""
    bg = recipe["background"]
    bg_path = Path(bg_root) / bg["path"]
    background = load_clip(bg_path, start_s=float(bg["start"]),
                           duration_s=float(recipe["duration"]), config=config)
    occurrences, names = [], []
    for event in recipe["events"]:
        fg_path = Path(fg_root) / event["path"]
        fg = load_clip(fg_path, start_s=float(event["offset"]), duration_s=float(event["duration"]),
                       config=config)
        for o in event["occurrences"]:
            occurrences.append((fg, float(o["start"]), float(o["dB"])))
            names.append(str(fg_path))
    return mix(background, float(bg["dB"]), occurrences, config.sample_rate,
               names=(str(bg_path), names))


def render_recipes(recipes: Sequence[dict], output: str | os.PathLike, *,
                   fg_root: str | os.PathLike, bg_root: str | os.PathLike,
                   config: MixConfig = MixConfig(), num_workers: int = 2,
                   progress: bool = True) -> tuple[list[Path], int]:
    """Writes `<output>/<vid>.wav` per recipe; keeps existing files (resume).

    Returns:
      (paths of all the recipes' files, number written by this call).
    """
    output = Path(output)

    def one(recipe: dict) -> tuple[Path, bool]:
        path = output / f"{recipe['vid']}.wav"
        if path.is_file():
            return path, False
        x = render_recipe(recipe, fg_root=fg_root, bg_root=bg_root, config=config)
        atomic_write_bytes(path, audio.wav_bytes(x, config.sample_rate, encoding=config.encoding))
        return path, True

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        done = list(tqdm.tqdm(pool.map(one, recipes), total=len(recipes), desc="render",
                              unit="clip", disable=not progress, mininterval=1.0))
    return [p for p, _ in done], sum(w for _, w in done)
