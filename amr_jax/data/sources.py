"""Where a split comes from: feature folders (default) or a built TFDS dataset.

A source string is
  "folders"                the annotation jsonl + audio / text feature folders (`load_split`);
  "tfds:<name>:<split>"    split `<split>` of TFDS dataset `<name>` in `data_dir`;
  "tfds:<name>"            the same, with the split named by the caller (training reads
                           `data.train_split` and `data.val_split` of one dataset).
Both give the same `Split` on the same data (tests/data/test_tfds.py), so nothing
downstream knows which one was used.
"""

from __future__ import annotations

import os

from amr_jax.data.loader import RecordSelector, Split, load_split, select_records
from amr_jax.errors import ConfigError

FOLDERS = "folders"
TFDS_PREFIX = "tfds:"


def parse_source(source: str) -> tuple[str, str | None]:
    """"tfds:<name>[:<split>]" -> (name, split or None).

    Raises:
      ConfigError: a source that is neither "folders" nor "tfds:<name>[:<split>]".
    """
    parts = source.split(":")
    if parts[0] + ":" != TFDS_PREFIX or len(parts) not in (2, 3) or not all(parts[1:]):
        raise ConfigError(f"source {source!r}: expected '{FOLDERS}', 'tfds:<name>:<split>' or "
                          "'tfds:<name>'")
    return parts[1], (parts[2] if len(parts) == 3 else None)


def load_source(source: str, *, annotations: str | os.PathLike | None = None,
                audio_dir: str | os.PathLike | None = None,
                text_dir: str | os.PathLike | None = None,
                data_dir: str | os.PathLike | None = None, split: str | None = None,
                num_workers: int = 0, progress: bool = True,
                select: RecordSelector | None = None) -> Split:
    """Loads a split from folders or from a TFDS dataset.

    Args:
      source: "folders", "tfds:<name>:<split>" or "tfds:<name>" (see the module docstring).
      annotations, audio_dir, text_dir: the folders source.
      data_dir: TFDS data folder (tfds sources).
      split: the TFDS split when `source` names none ("tfds:<name>").
      num_workers: feature loading threads (folders); 0: min(8, CPUs).
      progress: progress bars.
      select: keeps some of the queries (`load_split`); folders read only their features,
        a TFDS split is read whole and then cut.

    Raises:
      ConfigError: a malformed source, a missing data_dir or split, or a split
        given twice with different names.
    """
    if source == FOLDERS:
        if not (annotations and audio_dir and text_dir):
            raise ConfigError("source 'folders' needs the annotations, audio and text feature paths")
        return load_split(annotations, audio_dir, text_dir, num_workers=num_workers,
                          progress=progress, select=select)
    name, named_split = parse_source(source)
    if named_split and split and named_split != split:
        raise ConfigError(f"source {source!r} names split {named_split!r} but {split!r} is asked "
                          "for; give 'tfds:<name>' and the split separately")
    split = named_split or split
    if not split:
        raise ConfigError(f"source {source!r}: name the split, 'tfds:{name}:<split>'")
    if not data_dir:
        raise ConfigError(f"source {source!r} needs a TFDS data_dir")
    from amr_jax.data.tfds import reader  # tensorflow_datasets only when asked for

    loaded = reader.load_tfds_split(name, split, data_dir=data_dir, progress=progress)
    return loaded if select is None else select_records(loaded, select)
