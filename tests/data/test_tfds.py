"""TFDS datasets (array_record): built and read without TensorFlow, equal to the folders.

Data: a small SYNTHETIC split (`generate_split`, 4 recordings).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from amr_jax.data import sources
from amr_jax.data.loader import Split, load_split
from amr_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter. TensorFlow is not a dependency; where someone installed it,
# it is made unimportable (a None entry in sys.modules: `import tensorflow` fails and
# `find_spec` reports it absent, exactly as when it is not installed).
_BUILD_AND_READ = textwrap.dedent("""
    import importlib.util, json, sys

    installed = importlib.util.find_spec("tensorflow") is not None
    if installed:
        sys.modules["tensorflow"] = None

    def tf_loaded():
        if not installed:
            return "tensorflow" in sys.modules
        return any(m is not None for n, m in sys.modules.items()
                   if n == "tensorflow" or n.startswith("tensorflow."))

    from amr_jax.data.tfds import builders, reader
    manual_dir, data_dir = sys.argv[1], sys.argv[2]
    builders.build("synthetic_castella", manual_dir=manual_dir, data_dir=data_dir)
    after_build = tf_loaded()
    split = reader.load_tfds_split("synthetic_castella", "test", data_dir=data_dir,
                                   progress=False)
    print(json.dumps({"tf_after_build": after_build, "tf_after_read": tf_loaded(),
                      "num_queries": len(split.records)}))
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folders split dir, TFDS data_dir, subprocess report) for synthetic_castella:test."""
    from amr_jax.data.synthetic import generate_split

    root = tmp_path_factory.mktemp("tfds")
    split_dir = root / "manual" / "test"
    generate_split("castella", split_dir, seed=3, num_recordings=4, progress=False)
    data_dir = root / "data"
    proc = subprocess.run([sys.executable, "-c", _BUILD_AND_READ, str(root / "manual"),
                           str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return split_dir, data_dir, report


def _folders(split_dir: Path) -> Split:
    return load_split(split_dir / "annotations.jsonl", split_dir / "clap", split_dir / "clap_text",
                      num_workers=2, progress=False)


def assert_splits_equal(got: Split, want: Split) -> None:
    assert [r.qid for r in got.records] == [r.qid for r in want.records]
    for g, w in zip(got.records, want.records):
        assert type(g.qid) is type(w.qid)
        assert (g.query, g.vid, g.duration, g.extra) == (w.query, w.vid, w.duration, w.extra)
        for name in ("windows", "raw_windows"):
            gw, ww = getattr(g, name), getattr(w, name)
            assert (gw is None) == (ww is None), (g.qid, name)
            if ww is not None:
                assert gw.dtype == ww.dtype and np.array_equal(gw, ww), (g.qid, name)
    assert got.vids == want.vids
    assert got.audio.keys() == want.audio.keys() and got.text.keys() == want.text.keys()
    for table in ("audio", "text"):
        for key, want_array in getattr(want, table).items():
            got_array = getattr(got, table)[key]
            assert got_array.dtype == np.float32 and got_array.shape == want_array.shape
            # Bit-equal, not close: the bytes must survive the round trip.
            assert got_array.tobytes() == want_array.tobytes(), (table, key)


def test_build_and_read_without_tensorflow(built):
    split_dir, data_dir, report = built
    assert report == {"tf_after_build": False, "tf_after_read": False,
                      "num_queries": len(_folders(split_dir).records)}
    assert list((data_dir / "synthetic_castella" / "1.0.0").glob("*.array_record-*"))


def test_tfds_split_equals_folders_split(built):
    split_dir, data_dir, _ = built
    got = sources.load_source("tfds:synthetic_castella:test", data_dir=data_dir, progress=False)
    assert_splits_equal(got, _folders(split_dir))


def test_localize_same_metrics_and_predictions(built, tmp_path):
    from amr_jax.localize import pipeline
    from experiments.configs import localize as localize_configs

    split_dir, data_dir, _ = built
    config = localize_configs.get_config("backbone_cosine,runlocal")
    folders = pipeline.run_localization(
        config, annotations=split_dir / "annotations.jsonl", audio_feats=split_dir / "clap",
        text_feats=split_dir / "clap_text", output=tmp_path / "folders.jsonl", print_report=False)
    config.source, config.data_dir = "tfds:synthetic_castella:test", str(data_dir)
    tfds_out = pipeline.run_localization(config, annotations=None, audio_feats=None,
                                         text_feats=None, output=tmp_path / "tfds.jsonl",
                                         print_report=False)
    assert folders["metrics"]["num_queries"] == len(_folders(split_dir).records)
    assert tfds_out["metrics"] == folders["metrics"]
    assert (tmp_path / "tfds.jsonl").read_bytes() == (tmp_path / "folders.jsonl").read_bytes()


def test_blind_flat_layout_int_qids_and_extra_keys(built, tmp_path):
    """dcase2026_evaluation from one flat folder: int qids, extra keys, no windows."""
    from amr_jax.data.tfds import builders, reader

    split_dir, _, _ = built
    source = _folders(split_dir)
    manual = tmp_path / "manual"
    (manual / "clap").mkdir(parents=True)
    (manual / "clap_text").mkdir()
    lines = []
    for qid, r in enumerate(source.records[:5], start=100):
        lines.append(json.dumps({"qid": qid, "query": r.query, "duration": r.duration,
                                 "vid": r.vid, "fg_dB": -3.5 - qid / 7}))
        shutil.copy(split_dir / "clap_text" / f"qid{r.qid}.npz", manual / "clap_text" / f"qid{qid}.npz")
        shutil.copy(split_dir / "clap" / f"{r.vid}.npz", manual / "clap" / f"{r.vid}.npz")
    (manual / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    builders.build("dcase2026_evaluation", manual_dir=manual, data_dir=tmp_path / "data")
    got = reader.load_tfds_split("dcase2026_evaluation", "evaluation", data_dir=tmp_path / "data",
                                 progress=False)
    want = _folders(manual)
    assert all(isinstance(r.qid, int) and not r.has_windows and "fg_dB" in r.extra
               for r in got.records)
    assert_splits_equal(got, want)


def test_layout_and_source_errors(built, tmp_path):
    from amr_jax.data.tfds import builders, reader

    split_dir, data_dir, _ = built
    for manual in (tmp_path, tmp_path / "missing"):
        with pytest.raises(builders.TfdsSourceError, match="no split found"):
            builders.build("castella", manual_dir=manual, data_dir=tmp_path / "d")
    # Synthetic features never get a real dataset's name.
    with pytest.raises(builders.TfdsSourceError, match="SYNTHETIC"):
        builders.build("castella", manual_dir=split_dir.parent, data_dir=tmp_path / "d")
    with pytest.raises(builders.TfdsSourceError, match="unknown TFDS dataset"):
        reader.load_tfds_split("castela", "test", data_dir=data_dir)
    with pytest.raises(builders.TfdsSourceError, match="cannot read"):
        reader.load_tfds_split("synthetic_castella", "train", data_dir=data_dir)
    for bad in ("tfds:", "tfds:a:b:c", "folder", "tfds::test"):
        with pytest.raises(ConfigError):
            sources.parse_source(bad)
    with pytest.raises(ConfigError, match="names split"):
        sources.load_source("tfds:synthetic_castella:test", data_dir=data_dir, split="val")
    with pytest.raises(ConfigError, match="name the split"):
        sources.load_source("tfds:synthetic_castella", data_dir=data_dir)
