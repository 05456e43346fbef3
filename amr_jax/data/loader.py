"""Loads a whole split (annotations + every feature file) once, in parallel."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tqdm
from absl import logging

from amr_jax.data import features
from amr_jax.data.errors import FeatureError
from amr_jax.data.records import QueryRecord, read_annotations

# Feature length may differ from `duration` by one frame in the released data
# (whole seconds vs. center padding); beyond this it is likely the wrong file.
DURATION_TOLERANCE_S = 2.0

# Keeps some of a split's queries (in file order), e.g. one host's shard of the training split.
RecordSelector = Callable[[list[QueryRecord]], list[QueryRecord]]


@dataclasses.dataclass
class Split:
    """A loaded split.

    Attributes:
      records: the queries, in file order.
      audio: vid -> [T, 768] float32 audio features.
      text: str(qid) -> [L, 768] float32 text features (valid rows).
      vids: distinct vids in order of first appearance.
      annotations: path of the annotation file.
    """

    records: list[QueryRecord]
    audio: dict[str, np.ndarray]
    text: dict[str, np.ndarray]
    vids: list[str]
    annotations: Path

    def vid_index(self) -> np.ndarray:
        """[num_queries] int32 index of each query's recording in `vids`."""
        position = {v: i for i, v in enumerate(self.vids)}
        return np.asarray([position[r.vid] for r in self.records], dtype=np.int32)


def loading_threads(num_workers: int) -> int:
    """Threads for reading feature files: `num_workers`, or with 0, min(8, CPUs).

    Reads from the page cache are copies bound by the cores (on 2 cores, 2 threads load a
    CASTELLA test split in 0.57 s, 8 in 0.75 s); network file systems want more threads than
    cores, so an explicit count is used as given.
    """
    return num_workers if num_workers > 0 else min(8, os.cpu_count() or 1)


def _map_parallel(fn, items, *, num_workers: int, desc: str, progress: bool):
    with concurrent.futures.ThreadPoolExecutor(max_workers=loading_threads(num_workers)) as pool:
        results = pool.map(fn, items)
        return list(tqdm.tqdm(results, total=len(items), desc=desc, unit="file",
                              disable=not progress, mininterval=1.0))


def check_missing(paths: list[Path], kind: str) -> None:
    """Raises one error listing every missing file (not only the first)."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:50])
        more = f"\n  ... and {len(missing) - 50} more" if len(missing) > 50 else ""
        raise FeatureError(f"{len(missing)} of {len(paths)} {kind} feature files are missing:\n  {shown}{more}")


def check_durations(records: list[QueryRecord], audio: dict[str, np.ndarray]) -> list[str]:
    """Warns for each recording whose frame count disagrees with `duration` by > 2 s.

    Returns the vids that were warned about.
    """
    warned = []
    seen = set()
    for r in records:
        if r.vid in seen:
            continue
        seen.add(r.vid)
        frames = audio[r.vid].shape[0]
        if abs(frames - r.duration) > DURATION_TOLERANCE_S:
            warned.append(r.vid)
            logging.warning("vid %s (qid %s): %d feature frames but duration %g s (difference > %g s); "
                            "check that the feature file matches the annotations",
                            r.vid, r.qid, frames, r.duration, DURATION_TOLERANCE_S)
    return warned


def load_split(annotations: str | os.PathLike, audio_dir: str | os.PathLike,
               text_dir: str | os.PathLike, *, num_workers: int = 0, progress: bool = True,
               select: RecordSelector | None = None) -> Split:
    """Reads the annotations and every audio/text feature file of a split.

    Each recording is read once even when several queries share it. All
    missing files are reported together before anything is read.

    `select`: keeps some of the queries before any feature is read, so only their
    recordings and texts are loaded (None: every query).

    Raises:
      AnnotationError, FeatureError: with the offending file, line or qid.
    """
    records = read_annotations(annotations)
    if select is not None:
        records = select(records)
    vids = list(dict.fromkeys(r.vid for r in records))
    audio_paths = [features.audio_feature_path(audio_dir, v) for v in vids]
    text_paths = [features.text_feature_path(text_dir, r.qid) for r in records]
    check_missing(audio_paths, "audio")
    check_missing(text_paths, "text")
    audio_arrays = _map_parallel(features.load_audio_features, audio_paths,
                                 num_workers=num_workers, desc="audio features", progress=progress)
    text_arrays = _map_parallel(features.load_text_features, text_paths,
                                num_workers=num_workers, desc="text features", progress=progress)
    audio = dict(zip(vids, audio_arrays))
    text = {r.key: t for r, t in zip(records, text_arrays)}
    check_durations(records, audio)
    logging.info("loaded %s: %d queries, %d recordings, %d audio frames",
                 annotations, len(records), len(vids), sum(a.shape[0] for a in audio_arrays))
    return Split(records=records, audio=audio, text=text, vids=vids, annotations=Path(annotations))


def select_records(split: Split, select: RecordSelector) -> Split:
    """The queries of a loaded split that `select` keeps, with only their features."""
    records = select(split.records)
    vids = list(dict.fromkeys(r.vid for r in records))
    return Split(records=records, audio={v: split.audio[v] for v in vids},
                 text={r.key: split.text[r.key] for r in records}, vids=vids,
                 annotations=split.annotations)
