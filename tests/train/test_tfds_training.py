"""QD-DETR training on a TFDS source equals training on the folders it was built from."""

import shutil

import jax
import numpy as np

import detr_fixtures as fx
from amr_jax.data.tfds import builders
from amr_jax.train import trainer
from test_trainer import tiny_config

_TIMING_KEYS = ("steps_per_s", "eta_s")  # wall-clock figures of each epoch record


def _without_timings(history):
    return [{k: v for k, v in h.items() if k not in _TIMING_KEYS} for h in history]


def test_train_on_tfds_source_equals_folders(tmp_path):
    split_dir = tmp_path / "manual" / "train"
    fx.write_tiny_split(split_dir, num_recordings=4, queries_per_recording=3, frames=(20, 30),
                        seed=0)
    (split_dir / "SYNTHETIC.json").write_text('{"SYNTHETIC": "test data"}\n')
    shutil.copytree(split_dir, tmp_path / "manual" / "val")  # trained and validated on one split
    builders.build("synthetic_castella", manual_dir=tmp_path / "manual", data_dir=tmp_path / "data")

    config = tiny_config(split_dir)
    config.train.num_epochs = 1  # 3 steps and one validation are enough to compare
    folders = trainer.train_and_evaluate(config, tmp_path / "folders",
                                         model_factory=fx.tiny_model_factory)
    for role in ("train", "val"):  # the TFDS source must not read the folders
        for field in ("annotations", "audio_feats", "text_feats"):
            config.data[f"{role}_{field}"] = ""
    config.data.source = "tfds:synthetic_castella"
    config.data.data_dir = str(tmp_path / "data")
    tfds_run = trainer.train_and_evaluate(config, tmp_path / "tfds",
                                          model_factory=fx.tiny_model_factory)

    assert tfds_run["step"] == folders["step"] == 3
    assert "R1@0.7" in folders["history"][-1]["val"]  # validation ran on both sources
    assert _without_timings(tfds_run["history"]) == _without_timings(folders["history"])
    assert tfds_run["best"] == folders["best"]
    for x, y in zip(jax.tree.leaves(tfds_run["params"]), jax.tree.leaves(folders["params"])):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
