"""The hashed dropout: nnx.Dropout's math with masks from a keyed hash of the index."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import dropout as dropout_lib

SHAPE = (4, 8, 128, 129)  # ~530k elements, odd last dimension


def _mask(seed: int, rate: float = 0.1) -> np.ndarray:
    return np.asarray(dropout_lib.keep_mask(jax.random.key(seed), SHAPE, rate))


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_fraction_matches_the_rate(rate):
    mask = _mask(0, rate)
    n = mask.size
    sigma = np.sqrt(rate * (1 - rate) / n)
    assert abs(mask.mean() - (1 - rate)) < 5 * sigma


def test_elements_and_keys_are_independent():
    rate = 0.5
    a = _mask(0, rate).reshape(-1).astype(np.float64)
    b = _mask(1, rate).reshape(-1).astype(np.float64)
    n = a.size
    # Neighbours along every axis, and two keys, agree as often as independent coins would.
    for lag in (1, SHAPE[-1], SHAPE[-1] * SHAPE[-2]):
        agree = np.mean(a[lag:] == a[:-lag])
        assert abs(agree - 0.5) < 5 * np.sqrt(0.25 / (n - lag)), lag
    assert abs(np.mean(a == b) - 0.5) < 5 * np.sqrt(0.25 / n)
    # Runs of 8 consecutive keep bits take all 256 patterns about equally often.
    words = a[: n - n % 8].reshape(-1, 8) @ (2 ** np.arange(8))
    counts = np.bincount(words.astype(np.int64), minlength=256)
    expected = len(words) / 256
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 255 + 6 * np.sqrt(2 * 255)


def test_same_key_same_mask_and_inverted_scaling():
    np.testing.assert_array_equal(_mask(3), _mask(3))
    layer = dropout_lib.HashedDropout(0.25)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 33)), jnp.float32)
    y = np.asarray(layer(x, deterministic=False, rngs=nnx.Rngs(dropout=7)))
    kept = y != 0
    np.testing.assert_allclose(y[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
    np.testing.assert_array_equal(layer(x, deterministic=True), x)
    # Two calls on one stream draw two keys: different masks.
    rngs = nnx.Rngs(dropout=7)
    first = np.asarray(layer(x, deterministic=False, rngs=rngs)) != 0
    second = np.asarray(layer(x, deterministic=False, rngs=rngs)) != 0
    assert (first != second).any()


def test_training_mode_without_rngs_is_an_error():
    with pytest.raises(ValueError, match="rngs"):
        dropout_lib.HashedDropout(0.1)(jnp.ones(3), deterministic=False)


def _dropouts(model):
    return [type(m) for _, m in nnx.iter_graph(model)
            if isinstance(m, (nnx.Dropout, dropout_lib.HashedDropout))]


def test_default_model_keeps_nnx_dropout_and_the_switch_swaps_every_one():
    import test_model as tm

    from amr_jax.detr import model as qd
    from amr_jax.train import trainer

    config = tm.tiny_config()
    default = qd.QDDETR(config, rngs=nnx.Rngs(0))
    kinds = _dropouts(default)
    assert kinds and set(kinds) == {nnx.Dropout}
    hashed = qd.QDDETR(config, rngs=nnx.Rngs(0))
    assert dropout_lib.use_hashed_masks(hashed) == len(kinds)
    assert set(_dropouts(hashed)) == {dropout_lib.HashedDropout}
    # Same parameters (and checkpoint layout), same evaluation outputs.
    a, b = nnx.state(default, nnx.Param), nnx.state(hashed, nnx.Param)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    inputs = tm.make_inputs(0, tm.AUDIO_LENS, tm.TEXT_LENS, tm.FRAMES, tm.TOKENS)
    for x, y in zip(jax.tree.leaves(tm.forward(default, inputs, deterministic=True,
                                               negatives=True)),
                    jax.tree.leaves(tm.forward(hashed, inputs, deterministic=True,
                                               negatives=True)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # Training mode: both drop (outputs differ from evaluation) and stay finite.
    key = jax.random.key(0)
    for model in (default, hashed):
        out = model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=key))
        logits = np.asarray(out["pred_logits"])
        assert np.isfinite(logits).all()


@pytest.mark.parametrize("masks, kind", [("threefry", nnx.Dropout),
                                         ("hash", dropout_lib.HashedDropout)])
def test_trainer_builds_the_configured_masks(masks, kind):
    from amr_jax.configs import qd_detr
    from amr_jax.train import trainer

    config = qd_detr.get_config("runlocal")
    assert config.train.dropout_masks == "threefry"  # the verified default
    config.train.dropout_masks = masks
    programs, state = trainer.build_programs(config, steps_per_epoch=2,
                                             model_factory=trainer.build_qd_detr,
                                             mesh=trainer.data_mesh())
    model = nnx.merge(programs.graphdef, state.params, programs.rest)
    assert set(_dropouts(model)) == {kind}


def test_unknown_mask_kind_names_the_field():
    from amr_jax.configs import qd_detr
    from amr_jax.train import trainer

    config = qd_detr.get_config("runlocal")
    config.train.dropout_masks = "philox"
    with pytest.raises(ValueError, match="train.dropout_masks"):
        trainer.validate_config(config)
