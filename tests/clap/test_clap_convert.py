"""Strict MS-CLAP checkpoint conversion, the orbax round trip, GPT-2 sources."""

import hashlib
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import clap_testlib as lib
from amr_jax.clap import convert
from amr_jax.clap.gpt2 import build_gpt2

D_IN, D_OUT = 32, 40  # small heads; the 768 -> 1024 case is covered in test_clap_heads


@pytest.fixture(scope="module")
def state_dict():
    return lib.random_msclap_state_dict(seed=3, d_in=D_IN, d_out=D_OUT)


@pytest.fixture(scope="module")
def checkpoints(state_dict, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    np.savez(d / "msclap.npz", **state_dict)
    lib.save_pth(state_dict, d / "msclap.pth")
    return d / "msclap.npz", d / "msclap.pth"


def test_name_table_transposes_and_lists_ignored(state_dict, checkpoints):
    npz, pth = checkpoints
    params_npz, report = convert.convert_checkpoint(npz, progress=False)
    params_pth, report_pth = convert.convert_checkpoint(pth, progress=False)
    for head, enc in (("audio_head", "audio_encoder"), ("caption_head", "caption_encoder")):
        w = {k: state_dict[f"{enc}.projection.{k}"] for k in lib.HEAD_SUFFIXES}
        for params in (params_npz, params_pth):
            p = params[head]
            np.testing.assert_array_equal(p["linear1"]["kernel"], w["linear1.weight"].T)
            np.testing.assert_array_equal(p["linear2"]["kernel"], w["linear2.weight"].T)
            np.testing.assert_array_equal(p["layer_norm"]["scale"], w["layer_norm.weight"])
            np.testing.assert_array_equal(p["layer_norm"]["bias"], w["layer_norm.bias"])
    assert "gpt2" not in params_npz
    assert report["ignored"] == ["logit_scale"]
    assert report["htsat_config"] is None
    assert len(report["converted"]) == 8
    assert report["source_sha256"] == hashlib.sha256(npz.read_bytes()).hexdigest()
    assert report_pth["source_sha256"] == hashlib.sha256(pth.read_bytes()).hexdigest()
    assert report["audio_head"] == {"in_dim": D_IN, "out_dim": D_OUT}


def test_round_trip_and_model_equals_numpy_head(state_dict, checkpoints, tmp_path):
    params, report = convert.convert_checkpoint(checkpoints[1], progress=False)
    convert.save_converted(params, report, tmp_path / "out")
    written = json.loads((tmp_path / "out" / convert.REPORT_NAME).read_text())
    assert written["source_sha256"] == report["source_sha256"]
    assert written["shapes"]["audio_head/linear1/kernel"] == [D_IN, D_OUT]

    loaded = convert.load_converted(tmp_path / "out")
    for head in convert.HEADS:
        for layer, leaves in params[head].items():
            for name, value in leaves.items():
                np.testing.assert_array_equal(getattr(loaded, head)[layer][name], value)
    assert loaded.gpt2 is None
    model = loaded.to_model()
    x = np.random.default_rng(0).normal(size=(5, D_IN)).astype(np.float32)
    from amr_jax.clap.heads import l2_normalize

    for head, prefix in ((model.audio_head, "audio_encoder.projection."),
                         (model.caption_head, "caption_encoder.projection.")):
        ours = np.asarray(l2_normalize(head(jnp.asarray(x))))
        np.testing.assert_allclose(ours, lib.numpy_head(x, state_dict, prefix), atol=1e-5)


def _set(name, value):
    return lambda sd: sd.__setitem__(name, value)


def _nan_at(name):
    return lambda sd: sd[name].__setitem__(3, np.nan)


A, C = "audio_encoder.projection.", "caption_encoder.projection."
F32 = np.float32


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda sd: sd.pop(C + "layer_norm.bias"),
         "missing.*caption_encoder.projection.layer_norm.bias"),
        (_set(A + "linear1.bias", np.zeros(D_OUT, F32)),
         "unexpected.*audio_encoder.projection.linear1.bias"),
        (_set("text_branch.weight", np.zeros(3, F32)), "unexpected.*text_branch.weight"),
        (_set(A + "linear2.weight", np.zeros((D_OUT, D_OUT + 1), F32)),
         r"audio_encoder.projection.linear2.weight has shape \(40, 41\)"),
        (_set(C + "linear1.weight", np.zeros((D_OUT + 8, D_IN), F32)),
         "caption_encoder.projection.linear2.weight has shape"),
        (_nan_at(A + "layer_norm.weight"),
         "audio_encoder.projection.layer_norm.weight has non-finite"),
        (_set(A + "linear1.weight", np.zeros((D_OUT, D_IN), np.int32)), "non-float dtype"),
        (_set("caption_encoder.base.wte.weight", np.zeros((10, D_IN), F32)),
         "GPT-2 weights lack 'wpe.weight'"),
    ],
)
def test_strict_errors_name_the_weight(state_dict, change, match):
    sd = {k: v.copy() for k, v in state_dict.items()}
    change(sd)
    with pytest.raises(convert.ConversionError, match=match):
        convert.convert_state_dict(sd, source="ckpt.pth")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        convert.convert_checkpoint(tmp_path / "nope.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(convert.ConversionError, match="list.pth"):
        convert.convert_checkpoint(tmp_path / "list.pth")
    with pytest.raises(FileNotFoundError, match="clap_conversion.json"):
        convert.load_converted(tmp_path)


@pytest.fixture(scope="module")
def hf_gpt2():
    return lib.tiny_gpt2(vocab_size=64, seed=5, n_embd=D_IN)


def _check_gpt2(cfg, params, hf_model):
    ids = np.random.default_rng(2).integers(0, 64, size=(2, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        ref = hf_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref = ref.last_hidden_state.numpy()
    ours = lib.jit_call(build_gpt2(cfg, params), jnp.asarray(ids), jnp.asarray(mask))
    valid = mask.astype(bool)
    assert np.abs(ours - ref)[valid].max() <= 1e-4


def test_gpt2_inside_checkpoint_is_converted(hf_gpt2, tmp_path):
    sd = lib.random_msclap_state_dict(seed=4, d_in=24, d_out=D_OUT, caption_in=D_IN)
    n_layer = hf_gpt2.config.n_layer
    for k, v in hf_gpt2.state_dict().items():
        sd[f"caption_encoder.base.{k}"] = v.numpy()
    for i in range(n_layer):  # mask buffers saved by older transformers versions
        sd[f"caption_encoder.base.h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 80, 80), np.float32))
        sd[f"caption_encoder.base.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    lib.save_pth(sd, tmp_path / "with_gpt2.pth")
    params, report = convert.convert_checkpoint(
        tmp_path / "with_gpt2.pth", gpt2_num_heads=4, progress=False
    )
    assert report["gpt2_config"]["n_layer"] == n_layer and report["gpt2_config"]["n_head"] == 4
    assert "caption_encoder.base.h.1.attn.masked_bias" in report["ignored"]
    assert "caption_encoder.base.h.0.attn.c_attn.weight" in report["converted"]

    convert.save_converted(params, report, tmp_path / "out")
    loaded = convert.load_converted(tmp_path / "out")
    _check_gpt2(loaded.gpt2_config, loaded.gpt2, hf_gpt2)

    sd["caption_encoder.base.h.0.attn.rotary.weight"] = np.zeros(3, np.float32)
    with pytest.raises(convert.ConversionError, match=r"unexpected \['h.0.attn.rotary.weight'\]"):
        convert.convert_state_dict(sd, gpt2_num_heads=4)


def test_gpt2_from_local_snapshot(hf_gpt2, checkpoints, tmp_path):
    hf_gpt2.save_pretrained(tmp_path / "safetensors")
    cfg, params, rep = convert.load_gpt2_snapshot(tmp_path / "safetensors")
    assert rep["source"].endswith("model.safetensors") and cfg.n_head == 4
    _check_gpt2(cfg, params, hf_gpt2)

    # A GPT2LMHeadModel-style pytorch_model.bin: "transformer." prefix and a tied lm_head.
    (tmp_path / "bin").mkdir()
    config = (tmp_path / "safetensors" / "config.json").read_text()
    (tmp_path / "bin" / "config.json").write_text(config)
    sd = {f"transformer.{k}": v for k, v in hf_gpt2.state_dict().items()}
    sd["lm_head.weight"] = hf_gpt2.wte.weight.detach().clone()
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    cfg, params, rep = convert.load_gpt2_snapshot(tmp_path / "bin")
    assert rep["ignored"] == ["lm_head.weight"]
    _check_gpt2(cfg, params, hf_gpt2)

    # Attached to a head-only checkpoint whose caption head takes D_IN inputs.
    params, report = convert.convert_checkpoint(
        checkpoints[0], gpt2_dir=tmp_path / "bin", progress=False
    )
    assert report["gpt2_config"]["n_embd"] == D_IN and "gpt2" in params
    _check_gpt2(convert.params_to_clap(params, report).gpt2_config, params["gpt2"], hf_gpt2)
