"""Reads a built TFDS dataset (array_record, `tfds.data_source`) back into a `Split`.

The result equals `load_split` on the folders the dataset was built from: records in
annotation-file order (restored from each example's `index`, TFDS reorders), the same
cleaned and raw windows (rebuilt by `records.parse_record`), the same arrays bit for bit.
No TensorFlow: `tfds.data_source` decodes array_record examples with numpy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from absl import logging

from amr_jax.data.errors import AnnotationError, FeatureError
from amr_jax.data.loader import Split, check_durations
from amr_jax.data.records import WINDOWS_FIELD, QueryRecord, parse_record
from amr_jax.data.tfds import builders

_READ_BATCH = 256  # examples per array_record read


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _record(example: dict, *, where: str) -> QueryRecord:
    qid = _text(example["qid"])
    line = {"qid": int(qid) if bool(example["qid_is_int"]) else qid,
            "query": _text(example["query"]), "vid": _text(example["vid"]),
            "duration": float(example["duration"])}
    if bool(example["has_windows"]):
        line[WINDOWS_FIELD] = np.asarray(example["relevant_windows"], np.float64).tolist()
    line.update(json.loads(_text(example["extra"])))
    # The same parser as the jsonl reader, so cleaned windows and checks are identical.
    return parse_record(line, where=where)


def load_tfds_split(name: str, split: str, *, data_dir: str | os.PathLike,
                    progress: bool = True) -> Split:
    """Loads one split of a built dataset as a `Split`.

    Args:
      name: dataset name (`builders.BUILDERS`).
      split: split name (e.g. "test").
      data_dir: the TFDS data folder the dataset was built into.
      progress: show a progress bar.

    Returns:
      The split; `Split.annotations` is the label `<data_dir>/<name>/tfds:<name>:<split>`
      (only used in messages).

    Raises:
      TfdsSourceError: the dataset or split does not exist.
      FeatureError: a recording whose examples carry different audio arrays.
      AnnotationError: duplicate qids or a split mixing blind and annotated queries.
    """
    if name not in builders.BUILDERS:
        raise builders.TfdsSourceError(
            f"unknown TFDS dataset {name!r}; expected one of {sorted(builders.BUILDERS)}")
    label = f"tfds:{name}:{split}"
    try:
        source = tfds.data_source(name, split=split, data_dir=os.fspath(data_dir), download=False,
                                  try_gcs=False)
    except (AssertionError, ValueError, KeyError, FileNotFoundError) as e:
        raise builders.TfdsSourceError(f"{data_dir}: cannot read {label} ({e})") from None
    examples = []
    for start in tqdm.trange(0, len(source), _READ_BATCH, desc=label, unit="batch",
                             disable=not progress, mininterval=1.0):
        stop = min(start + _READ_BATCH, len(source))
        examples.extend(source.__getitems__(list(range(start, stop))))
    examples.sort(key=lambda e: int(e["index"]))

    records, audio, text = [], {}, {}
    for position, example in enumerate(examples):
        where = f"{data_dir} {label} index={int(example['index'])}"
        if int(example["index"]) != position:
            raise builders.TfdsSourceError(f"{where}: example indices are not 0..N-1 (found "
                                           f"{int(example['index'])} at position {position})")
        r = _record(example, where=where)
        if r.key in text:
            raise AnnotationError(f"{where}: duplicate qid {r.qid!r}")
        records.append(r)
        text[r.key] = np.asarray(example["text"], dtype=np.float32)
        a = np.asarray(example["audio"], dtype=np.float32)
        if r.vid not in audio:
            audio[r.vid] = a
        elif not np.array_equal(audio[r.vid], a):
            raise FeatureError(f"{where}: qid {r.qid!r} carries audio for vid {r.vid} that differs "
                               "from another query's; rebuild the dataset")
    if not records:
        raise builders.TfdsSourceError(f"{data_dir}: {label} has no examples")
    if len({r.has_windows for r in records}) > 1:
        raise AnnotationError(f"{data_dir} {label}: mixes queries with and without windows")
    vids = list(dict.fromkeys(r.vid for r in records))
    check_durations(records, audio)
    logging.info("loaded %s from %s: %d queries, %d recordings", label, data_dir, len(records),
                 len(vids))
    return Split(records=records, audio=audio, text=text, vids=vids,
                 annotations=Path(data_dir) / name / label)
