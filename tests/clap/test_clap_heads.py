"""ProjectionHead against a torch module with MS-CLAP's `Projection` structure."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import clap_testlib as lib
from amr_jax.clap import convert
from amr_jax.clap.heads import ClapModel, ProjectionHead


def _flax_head_from_torch(module) -> ProjectionHead:
    sd = {f"p.{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    params = {
        "linear1": {"kernel": sd["p.linear1.weight"].T},
        "linear2": {"kernel": sd["p.linear2.weight"].T},
        "layer_norm": {"scale": sd["p.layer_norm.weight"], "bias": sd["p.layer_norm.bias"]},
    }
    return convert.build_head(params)


@pytest.mark.parametrize("d_in,d_out,scale", [(768, 1024, 1.0), (768, 1024, 8.0), (32, 48, 1.0)])
def test_head_matches_torch_projection(d_in, d_out, scale):
    module = lib.random_torch_projection(d_in, d_out, seed=d_in + int(scale))
    head = _flax_head_from_torch(module)
    x = (scale * np.random.default_rng(0).normal(size=(3, 17, d_in))).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    ours = lib.jit_call(head, jnp.asarray(x))
    assert ours.shape == (3, 17, d_out)
    assert np.abs(ours - ref).max() <= 1e-5


def test_dropout_acts_only_in_training():
    head = ProjectionHead(16, 24, dropout=0.5, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16)), jnp.float32)
    head.train()
    train_out = np.asarray(head(x))
    det_out = np.asarray(head(x, deterministic=True))
    head.eval()
    eval_out = np.asarray(head(x))
    np.testing.assert_array_equal(det_out, eval_out)
    assert np.abs(train_out - eval_out).max() > 1e-3

    no_drop = ProjectionHead(16, 24, dropout=0.0, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(no_drop(x)), eval_out, atol=1e-6)


def test_wrong_width_raises():
    head = ProjectionHead(16, 24, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width 16"):
        head(jnp.zeros((2, 15)))


def test_clap_model_rejects_different_joint_dims():
    a = ProjectionHead(16, 24, rngs=nnx.Rngs(0))
    c = ProjectionHead(24, 16, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="joint space"):
        ClapModel(a, c)
