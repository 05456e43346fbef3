"""Trainer: determinism, resume equivalence, best checkpoint, non-finite loss, prediction."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import detr_fixtures as fx
from amr_jax.eval.predictions import read_predictions
from amr_jax.train import trainer
from amr_jax.train.predict import predict_to_file
from experiments.configs import qd_detr

HERE = Path(__file__).parent
REPO = HERE.parent.parent


def tiny_config(root):
    config = qd_detr.get_config("runlocal")
    fx.data_fields(config, root)
    config.data.max_frames = 32
    config.data.max_tokens = 8
    config.data.num_workers = 1
    config.train.batch_size = 4
    config.train.eval_batch_size = 4
    config.train.num_epochs = 2
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.optim.learning_rate = 1e-2  # make parameter differences visible in few steps
    return config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    fx.write_tiny_split(root, num_recordings=4, queries_per_recording=3, frames=(20, 30), seed=0)
    return root


@pytest.fixture(scope="module")
def full_run(data_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("full")
    out = trainer.train_and_evaluate(tiny_config(data_root), workdir,
                                     model_factory=fx.tiny_model_factory)
    return workdir, out


def _assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_run_is_deterministic_and_resume_matches(full_run, data_root, tmp_path):
    _, full = full_run
    assert full["step"] == 6  # 12 queries / batch 4 = 3 steps x 2 epochs
    config = tiny_config(data_root)
    first = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory,
                                       stop_after_steps=4)  # preempted mid-epoch 2
    assert first["step"] == 4
    resumed = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory)
    assert resumed["step"] == 6
    _assert_same_params(resumed["params"], full["params"])
    # Training moved the parameters (the comparison above is not vacuous).
    model = fx.tiny_model_factory(config.model, __import__("flax").nnx.Rngs(config.seed))
    init = trainer.split_model(model)[1]
    assert any(not np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree.leaves(init), jax.tree.leaves(full["params"])))
    # A finished run resumes to a no-op.
    again = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory)
    assert again["step"] == 6 and again["history"] == []


def test_best_checkpoint_and_metrics_log(full_run):
    workdir, out = full_run
    lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    values = [x["val"]["R1@0.7"] for x in lines]
    best = json.loads((workdir / "best.json").read_text())
    assert best["value"] == max(values) and best["epoch"] == 1 + int(np.argmax(values))
    assert out["best"] == best
    assert all(np.isfinite(x["train"]["loss"]) and x["steps_per_s"] > 0 for x in lines)


def test_predict_uses_best_checkpoint(full_run, data_root, tmp_path, capsys):
    workdir, out = full_run
    metrics = predict_to_file(workdir, data_root / "annotations.jsonl", data_root / "clap",
                              data_root / "clap_text", tmp_path / "pred.jsonl",
                              model_factory=fx.tiny_model_factory)
    assert metrics["brief"] == out["best"]["brief"]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == out["best"]["brief"]
    preds = read_predictions(tmp_path / "pred.jsonl")
    assert len(preds) == 12 and all(len(p["pred_relevant_windows"]) == 10 for p in preds)


class NanDetr(fx.TinyDetr):
    def __call__(self, inputs, *, deterministic, rngs=None):
        out = super().__call__(inputs, deterministic=deterministic, rngs=rngs)
        out["saliency_scores"] = out["saliency_scores"] * jnp.nan
        return out


def test_non_finite_loss_raises_naming_step_terms_and_qids(data_root, tmp_path):
    from amr_jax.data.records import read_annotations

    config = tiny_config(data_root)
    with pytest.raises(trainer.NonFiniteLossError) as raised:
        trainer.train_and_evaluate(config, tmp_path,
                                   model_factory=lambda c, rngs: NanDetr(c, rngs=rngs))
    message = str(raised.value)
    assert "at step 1 (epoch 1, batch 0)" in message and "saliency" in message
    # The first batch of epoch 0: the documented order (a permutation seeded by [seed, epoch]).
    records = read_annotations(data_root / "annotations.jsonl")
    order = np.random.default_rng([config.seed, 0]).permutation(len(records))
    expected = [records[i].qid for i in order[:config.train.batch_size]]
    assert message.endswith("batch qids: " + ", ".join(repr(q) for q in expected))


DP_SCRIPT = """
import json, sys
sys.path.insert(0, {here!r})
import jax, numpy as np
from pathlib import Path
import detr_fixtures as fx
import test_trainer as tt
from amr_jax.train import trainer
assert jax.local_device_count() == 4, jax.local_devices()
root = Path({root!r})
out = {{}}
for name, devices in (("dp4", jax.local_devices()), ("dp1", jax.local_devices()[:1])):
    res = trainer.train_and_evaluate(tt.tiny_config(root), Path({work!r}) / name,
                                     model_factory=fx.tiny_model_factory, devices=devices)
    out[name] = res["params"]
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
           for a, b in zip(jax.tree.leaves(out["dp4"]), jax.tree.leaves(out["dp1"])))
print(json.dumps({{"max_abs_diff": diff}}))
"""


def test_data_parallel_over_four_cpu_devices_matches_one(data_root, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    script = DP_SCRIPT.format(here=str(HERE), root=str(data_root), work=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["max_abs_diff"] < 1e-4, result


def test_queries_without_a_window_in_the_audio_are_skipped(tmp_path):
    from amr_jax.data.loader import load_split
    from amr_jax.train import pipeline
    root = tmp_path / "d"
    fx.write_tiny_split(root, num_recordings=2, queries_per_recording=2, frames=(20, 20), seed=1)
    ann = root / "annotations.jsonl"
    lines = [json.loads(x) for x in ann.read_text().splitlines()]
    lines[1]["relevant_windows"] = [[25, 30]]  # entirely past the 20 frames
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    split = load_split(ann, root / "clap", root / "clap_text", num_workers=1, progress=False)
    config = tiny_config(root)
    np.testing.assert_array_equal(pipeline.trainable_queries(split, config.data), [0, 2, 3])


def test_training_warns_once_about_windows_clipped_away(caplog):
    import logging as py_logging

    from amr_jax.data.loader import Split
    from amr_jax.data.records import parse_record
    from amr_jax.train import pipeline

    records = [parse_record({"qid": q, "query": "q", "duration": 10, "vid": "v",
                             "relevant_windows": windows}, where=f"f:{q}")
               for q, windows in ((1, [[2, 4]]), (2, [[2, 4], [10, 12]]), (3, [[11, 12]]))]
    split = Split(records=records, audio={"v": np.zeros((10, 768), np.float32)}, text={},
                  vids=["v"], annotations=Path("f"))
    import ml_collections

    data = ml_collections.ConfigDict({"max_frames": 300, "clip_length": 1.0})
    with caplog.at_level(py_logging.WARNING):
        keep = pipeline.trainable_queries(split, data)
    assert keep.tolist() == [0, 1]
    messages = [r.getMessage() for r in caplog.records]
    assert any("1 queries lose windows that are empty after clipping" in m and "2" in m
               for m in messages), messages
    assert any("skipping 1 queries with no window inside the audio: 3" in m for m in messages)


def test_corrupt_checkpoint_is_one_clear_error_naming_the_folder(full_run, data_root, tmp_path):
    import shutil

    from amr_jax.errors import CheckpointError
    from amr_jax.train.checkpointing import restore_params

    workdir = tmp_path / "copy"
    shutil.copytree(full_run[0], workdir)
    shutil.rmtree(workdir / "best")
    step_dir = max((workdir / "checkpoints").iterdir(), key=lambda p: p.name)
    for f in step_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:7])  # every file truncated: a half-written save
    programs, state = trainer.build_programs(tiny_config(data_root), steps_per_epoch=1,
                                             model_factory=fx.tiny_model_factory,
                                             mesh=trainer.data_mesh())
    with pytest.raises(CheckpointError, match=str(step_dir)):
        restore_params(workdir, state)


def test_predictor_with_a_workdir_equals_predict_detr(full_run, data_root, tmp_path):
    from amr_jax import Predictor
    from amr_jax.data.loader import load_split

    workdir, _ = full_run
    output = tmp_path / "pred.jsonl"
    predict_to_file(workdir, data_root / "annotations.jsonl", data_root / "clap",
                    data_root / "clap_text", output, model_factory=fx.tiny_model_factory)
    written = {str(p["qid"]): p["pred_relevant_windows"] for p in read_predictions(output)}
    split = load_split(data_root / "annotations.jsonl", data_root / "clap", data_root / "clap_text",
                       num_workers=1, progress=False)
    predictor = Predictor(detr_workdir=workdir, model_factory=fx.tiny_model_factory)
    vid = split.vids[0]
    records = [r for r in split.records if r.vid == vid]
    results = predictor.predict(split.audio[vid], [split.text[r.key] for r in records],
                                duration=records[0].duration)
    for record, result in zip(records, results):
        assert [[round(v, 4) for v in w] for w in result.windows] == written[record.key]


def test_workdir_from_before_the_seed003_switches_still_loads(full_run, tmp_path):
    import shutil

    workdir = tmp_path / "old"
    shutil.copytree(full_run[0], workdir)
    saved = json.loads((workdir / "config.json").read_text())
    for section, key in (("model", "quality_head"), ("postprocess", "short_proposals"),
                         ("data", "saliency_labels"), ("data", "source")):
        saved[section].pop(key, None)
    (workdir / "config.json").write_text(json.dumps(saved))
    config = trainer.load_config(workdir)
    assert config.data.saliency_labels == "first_window" and config.data.source == "folders"
    assert not config.postprocess.short_proposals and not config.model.quality_head
