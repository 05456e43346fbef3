"""Flax GPT-2 against transformers.GPT2Model built from small random configs."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import clap_testlib as lib
from amr_jax.clap import gpt2


@pytest.mark.parametrize("n_embd,n_layer,n_head", [(48, 2, 4), (32, 3, 2)])
def test_matches_transformers_with_right_padding(n_embd, n_layer, n_head):
    hf = lib.tiny_gpt2(vocab_size=101, seed=n_layer, n_embd=n_embd, n_layer=n_layer, n_head=n_head)
    weights = {k: v.numpy() for k, v in hf.state_dict().items()}
    cfg = gpt2.config_from_weights(weights, n_head=n_head)
    assert (cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.n_positions) == (n_layer, n_embd, 101, 80)
    params, converted, ignored = gpt2.state_dict_to_params(weights, cfg)
    assert ignored == [] and len(converted) == len(weights)
    model = gpt2.build_gpt2(cfg, params)

    rng = np.random.default_rng(n_embd)
    ids = rng.integers(0, 101, size=(3, 13))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref = ref.last_hidden_state.numpy()
    ours = lib.jit_call(model, jnp.asarray(ids), jnp.asarray(mask))
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= 1e-4
    # Causal attention: the valid prefix does not depend on what is padded after it.
    ours_short = lib.jit_call(model, jnp.asarray(ids[2:, :4]), jnp.asarray(mask[2:, :4]))
    assert np.abs(ours_short[0] - ours[2, :4]).max() <= 1e-5


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="not divisible"):
        gpt2.GPT2Config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation_function"):
        gpt2.GPT2Config(activation_function="relu")
    cfg = gpt2.GPT2Config(vocab_size=11, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    weights = {n: np.zeros(s, np.float32) for n, s in gpt2.expected_shapes(cfg).items()}
    weights["h.0.mlp.c_fc.weight"] = np.zeros((16, 63), np.float32)
    with pytest.raises(ValueError, match=r"h.0.mlp.c_fc.weight has shape \(16, 63\)"):
        gpt2.state_dict_to_params(weights, cfg)
    weights.pop("ln_f.bias")
    with pytest.raises(KeyError, match="missing.*ln_f.bias"):
        gpt2.state_dict_to_params(weights, cfg)
