"""Pretrain -> fine-tune: `config.train.init_from` loads exact weights, fresh optimizer."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import detr_fixtures as fx
from amr_jax.train import trainer
from amr_jax.train.checkpointing import CheckpointMismatchError
from amr_jax.train.optimizer import make_optimizer
from test_trainer import tiny_config


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_init")
    fx.write_tiny_split(root, num_recordings=4, queries_per_recording=3, frames=(20, 30), seed=0)
    return root


@pytest.fixture(scope="module")
def pretrained(data_root, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pretrain")
    out = trainer.train_and_evaluate(tiny_config(data_root), workdir,
                                     model_factory=fx.tiny_model_factory)
    return workdir, out


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _saved_state(workdir):
    with ocp.CheckpointManager(workdir / "checkpoints") as mgr:
        step = mgr.latest_step()
        return step, mgr.restore(step, args=ocp.args.StandardRestore())


def _best_params(workdir):
    with ocp.CheckpointManager(workdir / "best") as mgr:
        return mgr.restore(mgr.latest_step(), args=ocp.args.StandardRestore())


@pytest.mark.parametrize("which", ["best", "latest"])
def test_fine_tune_starts_from_exact_weights_with_fresh_optimizer(pretrained, data_root,
                                                                  tmp_path, which):
    pre_dir, pre = pretrained
    config = tiny_config(data_root)
    config.train.init_from = str(pre_dir)
    config.train.init_from_checkpoint = which
    out = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory,
                                     stop_after_steps=0)
    expected = _best_params(pre_dir) if which == "best" else _saved_state(pre_dir)[1]["params"]
    assert out["step"] == 0
    for got, want in zip(_leaves(out["params"]), _leaves(expected)):
        np.testing.assert_array_equal(got, want)
    if which == "latest":  # the last step's weights, not the initialization's
        for got, want in zip(_leaves(out["params"]), _leaves(pre["params"])):
            np.testing.assert_array_equal(got, want)
    # The fine-tune's own step-0 checkpoint: fresh optimizer state (Adam moments zero,
    # counts zero) for these weights, not the pretraining run's state.
    step, state = _saved_state(tmp_path)
    assert step == 0 and int(state["step"]) == 0
    fresh = _leaves(make_optimizer(config.optim, 3).init(out["params"]))
    saved = _leaves(state["opt_state"])
    assert sorted(x.shape for x in saved) == sorted(x.shape for x in fresh)
    assert all((x == 0).all() for x in fresh) and all((x == 0).all() for x in saved)
    _, pre_state = _saved_state(pre_dir)
    assert any(np.abs(x).sum() > 0 for x in _leaves(pre_state["opt_state"]))


def test_fine_tune_trains_on_and_resumes_from_its_own_checkpoint(pretrained, data_root,
                                                                 tmp_path):
    pre_dir, _ = pretrained
    config = tiny_config(data_root)
    config.train.init_from = str(pre_dir)
    first = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory,
                                       stop_after_steps=2)
    assert first["step"] == 2
    # A restart resumes the fine-tune (step 2), not the pretrained weights.
    again = trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory,
                                       stop_after_steps=2)
    assert again["step"] == 2
    for got, want in zip(_leaves(again["params"]), _leaves(first["params"])):
        np.testing.assert_array_equal(got, want)
    # Training moved away from the pretrained weights.
    start = _best_params(pre_dir)
    assert any(not np.array_equal(a, b) for a, b in zip(_leaves(first["params"]), _leaves(start)))


def test_mismatched_model_lists_every_difference(pretrained, data_root, tmp_path):
    pre_dir, _ = pretrained
    config = tiny_config(data_root)
    config.train.init_from = str(pre_dir)
    config.model.num_queries = 12   # queries [12, 16] vs [10, 16]
    config.model.dec_layers = 3     # an extra head the checkpoint lacks
    with pytest.raises(CheckpointMismatchError) as err:
        trainer.train_and_evaluate(config, tmp_path, model_factory=fx.tiny_model_factory,
                                   stop_after_steps=0)
    message = str(err.value)
    assert str(pre_dir) in message
    assert "missing from the checkpoint: heads/2/bias" in message
    assert "missing from the checkpoint: heads/2/kernel" in message
    assert "shape queries: checkpoint (10, 16) vs model (12, 16)" in message
    config = tiny_config(data_root)
    config.train.init_from = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        trainer.train_and_evaluate(config, tmp_path / "ft2", model_factory=fx.tiny_model_factory,
                                   stop_after_steps=0)
