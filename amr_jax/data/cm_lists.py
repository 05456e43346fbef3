"""Input lists of `clotho_moment_long` built from local Clotho and Walking Tours audio.

- Foreground: Clotho's captions CSV (`file_name,caption_1,...,caption_5`, as
  `clotho_captions_development.csv`) plus its WAV folder. Each clip is trimmed as the
  Clotho-Moment generator does (`4_clip_fg.py`): with P the clip's mean power, the onset is
  the first whole second whose mean power exceeds P * 10^(-clip_db / 10) and the offset the
  end of the last such second (whole seconds; a trailing partial second is dropped), so the
  foreground is [onset, offset) of the file. The list stores that as `offset`/`duration`
  instead of writing trimmed copies.
- Background: every `*.wav` of a folder (Walking Tours audio, converted to WAV beforehand) with
  its duration read from the header.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
from pathlib import Path

import numpy as np

from amr_jax.data import audio
from amr_jax.data.clotho_moment_long import InputListError


def trim_bounds(x: np.ndarray, rate: int, clip_db: float = 5.0) -> tuple[float, float]:
    """(onset s, offset s) of the active part of a clip, the generator's rule (see above).

    Args:
      x: [N] mono samples.
      rate: sample rate.
      clip_db: threshold below the clip's mean power (dB).
    """
    seconds = len(x) // rate
    threshold = float(np.mean(x ** 2)) * 10.0 ** (-clip_db / 10.0)
    power = (x[:seconds * rate].reshape(seconds, rate) ** 2).mean(axis=1)
    active = np.flatnonzero(power > threshold)
    onset = int(active[0]) if active.size else 0
    offset = int(active[-1]) + 1 if active.size else seconds
    return float(onset), float(offset)


def foreground_list_from_clotho(captions_csv: str | os.PathLike, audio_dir: str | os.PathLike, *,
                                clip_db: float = 5.0, num_workers: int = 2) -> list[dict]:
    """Foreground list lines `{"id", "duration", "offset", "captions", "path"}`, CSV order.

    `path` is relative to `audio_dir`. Clips whose trimmed part is empty are skipped (the
    generator would write an empty clip).

    Raises:
      InputListError: a missing CSV, a row without a file name or captions (file:line).
      FileNotFoundError / AudioError: a listed WAV that is missing or unreadable.
    """
    captions_csv, audio_dir = Path(captions_csv), Path(audio_dir)
    if not captions_csv.is_file():
        raise InputListError(f"{captions_csv}: captions CSV not found")
    rows = []
    with captions_csv.open(encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if lineno == 1 or not any(cell.strip() for cell in row):
                continue  # header
            name, captions = row[0].strip(), [c.strip() for c in row[1:] if c.strip()]
            if not name or not captions:
                raise InputListError(f"{captions_csv}:{lineno}: a row needs a file name and at "
                                     f"least one caption")
            rows.append((name, captions))

    def measure(item):
        name, captions = item
        x, rate = audio.read_wav(audio_dir / name)
        onset, offset = trim_bounds(x, rate, clip_db)
        if offset <= onset:
            return None
        return {"id": Path(name).stem, "duration": offset - onset, "offset": onset,
                "captions": captions, "path": name}

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        return [line for line in pool.map(measure, rows) if line is not None]


def background_list_from_folder(audio_dir: str | os.PathLike) -> list[dict]:
    """Background list lines `{"id", "duration", "path"}` for every `*.wav`, sorted by name.

    Raises:
      InputListError: the folder has no WAV files.
      AudioError: an unreadable WAV header.
    """
    audio_dir = Path(audio_dir)
    paths = sorted(audio_dir.glob("*.wav"))
    if not paths:
        raise InputListError(f"{audio_dir}: no .wav files for the background list")
    lines = []
    for path in paths:
        rate, _, _, _, frames = audio.wav_info(path)
        lines.append({"id": path.stem, "duration": frames / rate, "path": path.name})
    return lines
