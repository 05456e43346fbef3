"""TFDS builders (array_record) for the DCASE feature layout, built from a local download.

Every dataset is built from a `manual_dir` holding the features as released (or as
`experiments.make_synthetic` writes them); nothing is downloaded. A split is found in one
of three layouts, tried in this order:

1. `<manual_dir>/<split>/annotations.jsonl` + `<split>/clap/` + `<split>/clap_text/`
   (one `make_synthetic --output=<manual_dir>/<split>` run per split);
2. `<manual_dir>/<release file of split>` (e.g. `castella_test_release.jsonl`) with the
   shared `<manual_dir>/clap/` and `<manual_dir>/clap_text/` (the real release);
3. only when neither finds any split: `<manual_dir>/annotations.jsonl` + `clap/` +
   `clap_text/` (one flat `make_synthetic` output) becomes the builder's `FLAT_SPLIT`.

One example per query (TFDS reorders examples, so every id travels inside it):

  index             int64, the query's line position in its annotation file
  qid               text, `str(qid)`; `qid_is_int` bool says whether the file had an int
  query, vid        text
  duration          float64 seconds
  has_windows       bool (False on blind sets)
  relevant_windows  [K, 2] float64 windows exactly as in the file (K may be 0)
  extra             text, JSON of the line's other keys (e.g. `fg_dB`)
  audio             [T, 768] float32 audio features of `vid` (repeated per query)
  text              [L, 768] float32 valid text-feature rows

Features are stored as raw bytes (`Encoding.BYTES`), so reading gives the arrays bit for
bit. Building and reading need `tensorflow-datasets` and `array_record` only; TensorFlow
is never imported (checked by tests/data/test_tfds.py with TensorFlow import blocked).
Real datasets refuse a folder marked `SYNTHETIC.json`; synthetic ones require the mark, so
synthetic data never carries a real dataset's name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from amr_jax.data import features as features_lib
from amr_jax.data.errors import DataError
from amr_jax.data.loader import check_durations, check_missing
from amr_jax.data.records import QueryRecord, read_annotations

ANNOTATIONS_FILE = "annotations.jsonl"
AUDIO_DIR = "clap"
TEXT_DIR = "clap_text"
SYNTHETIC_MARK = "SYNTHETIC.json"
DIM = features_lib.FEATURE_DIM


class TfdsSourceError(DataError):
    """A manual_dir without the expected layout, or a TFDS dataset that cannot be read."""

    hint = ("manual_dir layouts: WORKSPACE.md 'TFDS datasets'; a dataset is read after "
            "`python -m experiments.build_tfds --dataset=NAME --manual_dir=DIR --data_dir=DIR`")


def example_features() -> tfds.features.FeaturesDict:
    """The per-query example spec (see the module docstring)."""
    raw = tfds.features.Encoding.BYTES
    return tfds.features.FeaturesDict({
        "index": tfds.features.Scalar(dtype=np.int64),
        "qid": tfds.features.Text(),
        "qid_is_int": tfds.features.Scalar(dtype=np.bool_),
        "query": tfds.features.Text(),
        "vid": tfds.features.Text(),
        "duration": tfds.features.Scalar(dtype=np.float64),
        "has_windows": tfds.features.Scalar(dtype=np.bool_),
        "relevant_windows": tfds.features.Tensor(shape=(None, 2), dtype=np.float64, encoding=raw),
        "extra": tfds.features.Text(),
        "audio": tfds.features.Tensor(shape=(None, DIM), dtype=np.float32, encoding=raw),
        "text": tfds.features.Tensor(shape=(None, DIM), dtype=np.float32, encoding=raw),
    })


def to_example(index: int, record: QueryRecord, audio: np.ndarray, text: np.ndarray) -> dict:
    """One query as a TFDS example dict (numpy values)."""
    windows = record.raw_windows if record.raw_windows is not None else np.zeros((0, 2))
    return {
        "index": index,
        "qid": record.key,
        "qid_is_int": isinstance(record.qid, int),
        "query": record.query,
        "vid": record.vid,
        "duration": record.duration,
        "has_windows": record.has_windows,
        "relevant_windows": np.asarray(windows, dtype=np.float64).reshape(-1, 2),
        "extra": json.dumps(record.extra, sort_keys=True),
        "audio": audio,
        "text": text,
    }


def generate_examples(annotations: str | os.PathLike, audio_dir: str | os.PathLike,
                      text_dir: str | os.PathLike):
    """Yields (key, example) per query, reading each recording once.

    Validation is the folder loader's: all missing files listed at once, feature
    checks of `features.py`, the duration warning. Memory holds one recording at a
    time, so the whole split never has to fit.
    """
    records = read_annotations(annotations)
    by_vid: dict[str, list[tuple[int, QueryRecord]]] = {}
    for i, r in enumerate(records):
        by_vid.setdefault(r.vid, []).append((i, r))
    check_missing([features_lib.audio_feature_path(audio_dir, v) for v in by_vid], "audio")
    check_missing([features_lib.text_feature_path(text_dir, r.qid) for r in records], "text")
    for vid, queries in by_vid.items():
        audio = features_lib.load_audio_features(features_lib.audio_feature_path(audio_dir, vid))
        check_durations([queries[0][1]], {vid: audio})
        for i, r in queries:
            text = features_lib.load_text_features(features_lib.text_feature_path(text_dir, r.qid))
            yield r.key, to_example(i, r, audio, text)


def find_splits(manual_dir: str | os.PathLike, splits: tuple[str, ...], release_files: dict[str, str],
                flat_split: str) -> dict[str, tuple[Path, Path, Path]]:
    """Split name -> (annotations, audio_dir, text_dir) found in `manual_dir` (layouts 1-3).

    Args:
      manual_dir: the local download.
      splits: split names looked for as subfolders (layout 1).
      release_files: split -> release annotation file name (layout 2).
      flat_split: the split name of a flat folder (layout 3).

    Raises:
      TfdsSourceError: no split found; the message lists every path looked for.
    """
    root = Path(manual_dir)
    found: dict[str, tuple[Path, Path, Path]] = {}
    looked = []
    for split in dict.fromkeys(list(splits) + list(release_files) + [flat_split]):
        sub = root / split
        candidates = [(sub / ANNOTATIONS_FILE, sub)]
        if split in release_files:
            candidates.append((root / release_files[split], root))
        for ann, base in candidates:
            looked.append(ann)
            if ann.is_file():
                found[split] = (ann, base / AUDIO_DIR, base / TEXT_DIR)
                break
    if not found and (root / ANNOTATIONS_FILE).is_file():
        found[flat_split] = (root / ANNOTATIONS_FILE, root / AUDIO_DIR, root / TEXT_DIR)
    looked.append(root / ANNOTATIONS_FILE)
    if not found:
        shown = "\n  ".join(str(p) for p in looked)
        raise TfdsSourceError(f"{root}: no split found; looked for:\n  {shown}")
    return found


def _check_synthetic_mark(annotations: Path, synthetic: bool, name: str) -> None:
    marked = (annotations.parent / SYNTHETIC_MARK).is_file()
    if synthetic and not marked:
        raise TfdsSourceError(f"{annotations.parent}: no {SYNTHETIC_MARK}; {name} is built from "
                              "experiments.make_synthetic output only")
    if not synthetic and marked:
        raise TfdsSourceError(f"{annotations.parent}: holds SYNTHETIC features ({SYNTHETIC_MARK}); "
                              f"build synthetic_<preset>, not {name}")


class _DcaseFeatures(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder: one example per query from a local feature download."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (array_record, one example per query)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Place the annotation jsonl and the clap/ and clap_text/ feature folders in manual_dir "
        "(layouts: amr_jax/data/tfds/builders.py).")
    SPLITS: tuple[str, ...] = ("train", "val", "test")
    RELEASE_FILES: dict[str, str] = {}
    FLAT_SPLIT = "test"
    SYNTHETIC = False
    DESCRIPTION = ""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # tfds's own lookup touches `importlib_resources`, which tensorflow-datasets 4.9.10
        # uses without declaring it; this module's file is the answer it would find.
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        # Not dataset_info_from_configs: it reads metadata files beside the class module.
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                     features=example_features(), supervised_keys=None)

    def _split_generators(self, dl_manager):
        splits = find_splits(dl_manager.manual_dir, self.SPLITS, self.RELEASE_FILES,
                             self.FLAT_SPLIT)
        for ann, _, _ in splits.values():
            _check_synthetic_mark(ann, self.SYNTHETIC, self.name)
        return {split: self._generate_examples(*paths) for split, paths in splits.items()}

    def _generate_examples(self, annotations, audio_dir, text_dir):
        return generate_examples(annotations, audio_dir, text_dir)


class Castella(_DcaseFeatures):
    """CASTELLA (MS-CLAP features of the DCASE 2026 Task 6 release)."""

    RELEASE_FILES = {s: f"castella_{s}_release.jsonl" for s in ("train", "val", "test")}
    DESCRIPTION = "CASTELLA audio moment retrieval: MS-CLAP audio and GPT-2 text features."


class ClothoMoment(_DcaseFeatures):
    """Clotho-Moment (MS-CLAP features)."""

    RELEASE_FILES = {s: f"clotho_moment_{s}_release.jsonl" for s in ("train", "val", "test")}
    DESCRIPTION = "Clotho-Moment audio moment retrieval: MS-CLAP audio and GPT-2 text features."


class Dcase2026Evaluation(_DcaseFeatures):
    """The blind DCASE 2026 Task 6 evaluation set (no windows)."""

    SPLITS = ("evaluation",)
    RELEASE_FILES = {"evaluation": "dcase2026_evaluation.jsonl"}
    FLAT_SPLIT = "evaluation"
    DESCRIPTION = "DCASE 2026 Task 6 blind evaluation set: MS-CLAP features, no windows."


class SyntheticCastella(_DcaseFeatures):
    """SYNTHETIC features with CASTELLA structure (experiments.make_synthetic --preset=castella)."""

    SYNTHETIC = True
    DESCRIPTION = "SYNTHETIC stand-in features (not real data), CASTELLA structure."


class SyntheticClothoMoment(_DcaseFeatures):
    """SYNTHETIC features with Clotho-Moment structure."""

    SYNTHETIC = True
    DESCRIPTION = "SYNTHETIC stand-in features (not real data), Clotho-Moment structure."


BUILDERS = {cls.name: cls for cls in (Castella, ClothoMoment, Dcase2026Evaluation,
                                      SyntheticCastella, SyntheticClothoMoment)}


def build(name: str, *, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
          overwrite: bool = False) -> Path:
    """Builds dataset `name` from `manual_dir` into `data_dir` (array_record files).

    Args:
      name: one of `BUILDERS` (castella, clotho_moment, dcase2026_evaluation,
        synthetic_castella, synthetic_clotho_moment).
      manual_dir: the local feature download (layouts in the module docstring).
      data_dir: TFDS data folder; the dataset lands in `<data_dir>/<name>/<version>`.
      overwrite: rebuild when the dataset already exists (default: reuse it).

    Returns:
      The dataset folder.
    """
    if name not in BUILDERS:
        raise TfdsSourceError(f"unknown TFDS dataset {name!r}; expected one of {sorted(BUILDERS)}")
    # Checked here: tfds reports a missing manual_dir with a bare AssertionError.
    find_splits(manual_dir, BUILDERS[name].SPLITS, BUILDERS[name].RELEASE_FILES,
                BUILDERS[name].FLAT_SPLIT)
    builder = BUILDERS[name](data_dir=os.fspath(data_dir), file_format="array_record")
    mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), download_mode=mode, try_download_gcs=False))
    return Path(builder.data_dir)
