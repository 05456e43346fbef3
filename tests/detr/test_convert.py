"""Reference checkpoint import: name table vs the reference key list, exact round trips,
strict errors, the restricted unpickler, and the converted workdir end to end."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import convert
from amr_jax.detr import model as qd
from amr_jax.detr.torch_checkpoint import UnsafeCheckpointError, load_torch_checkpoint

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


def _linear(name, n_in, n_out):
    return [(f"{name}.weight", (n_out, n_in)), (f"{name}.bias", (n_out,))]


def _norm(name, d):
    return [(f"{name}.weight", (d,)), (f"{name}.bias", (d,))]


def reference_keys(audio_proj="input_vid_proj", d=256, ff=1024, txt=768, aud=770, q=10, max_q_l=32,
                   t2v=2, enc=2, dec=2):
    """The state dict of the reference QDDETR for audio, written from lighthouse
    `qd_detr.py` / `qd_detr_transformer.py` (the DCASE baseline names the audio input
    projection `input_aud_proj`): `LinearLayer` = LayerNorm + net(Dropout, Linear);
    `nn.MultiheadAttention` packs q/k/v in `in_proj_weight`; the decoder's custom
    attention has only `out_proj`; `ca_qpos_proj` is deleted from decoder layers > 0;
    one `nn.PReLU` (`activation.weight`, [1]) per transformer layer."""
    keys = [("global_rep_token", (d,)), ("global_rep_pos", (d,))]
    for stack, n in (("t2v_encoder", t2v), ("encoder", enc)):
        for i in range(n):
            p = f"transformer.{stack}.layers.{i}"
            keys += [(f"{p}.self_attn.in_proj_weight", (3 * d, d)),
                     (f"{p}.self_attn.in_proj_bias", (3 * d,))]
            keys += _linear(f"{p}.self_attn.out_proj", d, d)
            keys += _linear(f"{p}.linear1", d, ff) + _linear(f"{p}.linear2", ff, d)
            keys += _norm(f"{p}.norm1", d) + _norm(f"{p}.norm2", d)
            keys += [(f"{p}.activation.weight", (1,))]
    for i in range(dec):
        p = f"transformer.decoder.layers.{i}"
        for name in ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj",
                     "sa_v_proj"):
            keys += _linear(f"{p}.{name}", d, d)
        keys += _linear(f"{p}.self_attn.out_proj", d, d) + _norm(f"{p}.norm1", d)
        for name in ["ca_qcontent_proj"] + (["ca_qpos_proj"] if i == 0 else []) + [
                "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj"]:
            keys += _linear(f"{p}.{name}", d, d)
        keys += _linear(f"{p}.cross_attn.out_proj", d, d)
        keys += _linear(f"{p}.linear1", d, ff) + _linear(f"{p}.linear2", ff, d)
        keys += _norm(f"{p}.norm2", d) + _norm(f"{p}.norm3", d) + [(f"{p}.activation.weight", (1,))]
    p = "transformer.decoder"
    keys += _norm(f"{p}.norm", d)
    keys += _linear(f"{p}.query_scale.layers.0", d, d) + _linear(f"{p}.query_scale.layers.1", d, d)
    keys += _linear(f"{p}.ref_point_head.layers.0", d, d)
    keys += _linear(f"{p}.ref_point_head.layers.1", d, d)
    keys += _linear(f"{p}.bbox_embed.layers.0", d, d) + _linear(f"{p}.bbox_embed.layers.1", d, d)
    keys += _linear(f"{p}.bbox_embed.layers.2", d, 2)
    keys += _linear(f"{p}.ref_anchor_head.layers.0", d, d)
    keys += _linear(f"{p}.ref_anchor_head.layers.1", d, 1)
    keys += [("txt_position_embed.position_embeddings.weight", (max_q_l, d))]
    keys += _norm("txt_position_embed.LayerNorm", d)
    keys += _linear("span_embed.layers.0", d, d) + _linear("span_embed.layers.1", d, d)
    keys += _linear("span_embed.layers.2", d, 2)
    keys += _linear("class_embed", d, 2) + [("query_embed.weight", (q, 2))]
    for proj, n_in in (("input_txt_proj", txt), (audio_proj, aud)):
        keys += _norm(f"{proj}.0.LayerNorm", n_in) + _linear(f"{proj}.0.net.1", n_in, d)
        keys += _norm(f"{proj}.1.LayerNorm", d) + _linear(f"{proj}.1.net.1", d, d)
    keys += _linear("saliency_proj1", d, d) + _linear("saliency_proj2", d, d)
    return dict(keys)


def random_state_dict(keys, seed):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in keys.items()}


TINY = dict(d=16, ff=24, txt=12, aud=14, q=4, max_q_l=6, t2v=1, enc=1, dec=2)


def tiny_model_config():
    c = qd.default_model_config()
    c.hidden_dim, c.dim_feedforward, c.text_dim, c.audio_dim = 16, 24, 12, 14
    c.num_queries, c.max_q_l, c.t2v_layers, c.enc_layers, c.nheads = 4, 6, 1, 1, 4
    return c


def _params(model):
    _, params, _ = nnx.split(model, nnx.Param, ...)
    return {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(params)}


@pytest.mark.parametrize("layout,prefix", [("lighthouse", "input_vid_proj"),
                                           ("dcase", "input_aud_proj")])
def test_name_table_is_the_reference_key_list(layout, prefix):
    keys = reference_keys(prefix)
    assert len(keys) == 178 and sum(int(np.prod(s)) for s in keys.values()) == 7_123_237
    table = convert.name_table(qd.default_model_config(), layout)
    assert [e.torch_name for e in table].__len__() == len({e.torch_name for e in table})
    assert {e.torch_name for e in table} == set(keys)


@pytest.fixture(scope="module")
def full_model():
    return qd.QDDETR(qd.default_model_config(), rngs=nnx.Rngs(0))


def test_reference_state_dict_round_trip_is_exact(full_model):
    """Reference names and shapes, random values -> Flax -> reference names: bit-exact."""
    sd = random_state_dict(reference_keys("input_aud_proj"), seed=1)
    records = convert.load_state_dict_into(full_model, sd, qd.default_model_config(), "dcase")
    assert len(records) == 178
    back = convert.export_state_dict(full_model, qd.default_model_config(), "dcase")
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
    # Spot checks of the transforms against the reference semantics.
    params = _params(full_model)
    w = sd["transformer.encoder.layers.1.self_attn.in_proj_weight"]  # [3d, d], rows q, k, v
    kernel = params[("encoder_layers", 1, "self_attn", "in_proj_kernel")]
    np.testing.assert_array_equal(kernel[:, 256:512], w[256:512].T)  # the key block
    np.testing.assert_array_equal(params[("decoder", "layers", 0, "activation", "negative_slope")],
                                  sd["transformer.decoder.layers.0.activation.weight"][0])
    np.testing.assert_array_equal(params[("input_audio_proj", "blocks", 0, "layer_norm", "scale")],
                                  sd["input_aud_proj.0.LayerNorm.weight"])


def test_flax_to_reference_to_flax_is_exact():
    cfg = tiny_model_config()
    a = qd.QDDETR(cfg, rngs=nnx.Rngs(0))
    b = qd.QDDETR(cfg, rngs=nnx.Rngs(1))
    sd = convert.export_state_dict(a, cfg, "lighthouse")
    assert {k: v.shape for k, v in sd.items()} == reference_keys(**TINY)
    convert.load_state_dict_into(b, sd, cfg, "lighthouse")
    pa, pb = _params(a), _params(b)
    assert pa.keys() == pb.keys()
    for path in pa:
        np.testing.assert_array_equal(pa[path], pb[path], err_msg=str(path))


@pytest.mark.parametrize("change,match", [
    ("missing", r"missing \['transformer.decoder.layers.1.ca_v_proj.bias'\]"),
    ("extra", r"unexpected \['transformer.decoder.layers.1.ca_qpos_proj.weight'\]"),
    ("shape", r"class_embed.weight: shape \(16, 2\), expected \(2, 16\)"),
    ("layout", r"missing \['input_aud_proj.0.LayerNorm.weight'"),
])
def test_strict_errors_name_the_key(change, match):
    cfg = tiny_model_config()
    sd = random_state_dict(reference_keys(**TINY), seed=2)
    layout = "lighthouse"
    if change == "missing":
        del sd["transformer.decoder.layers.1.ca_v_proj.bias"]
    elif change == "extra":
        sd["transformer.decoder.layers.1.ca_qpos_proj.weight"] = np.zeros((16, 16), np.float32)
    elif change == "shape":
        sd["class_embed.weight"] = sd["class_embed.weight"].T.copy()
    else:
        layout = "dcase"  # a lighthouse file read as dcase lacks input_aud_proj
    with pytest.raises(convert.ConversionError, match=match):
        convert.load_state_dict_into(qd.QDDETR(cfg, rngs=nnx.Rngs(0)), sd, cfg, layout)


def _fake_easydict_module():
    module = types.ModuleType("easydict")

    class EasyDict(dict):  # the relevant behaviour of easydict.EasyDict
        def __init__(self, d=None):
            super().__init__()
            for k, v in (d or {}).items():
                setattr(self, k, v)

        def __setattr__(self, name, value):
            if isinstance(value, dict) and not isinstance(value, EasyDict):
                value = EasyDict(value)
            super().__setattr__(name, value)
            super().__setitem__(name, value)

    EasyDict.__module__ = "easydict"
    EasyDict.__qualname__ = "EasyDict"
    module.EasyDict = EasyDict
    return module


def save_reference_checkpoint(path, state_dict, *, opt=None, device_tag=None):
    """torch.save like the reference trainer, optionally with an `opt` EasyDict and storages
    re-tagged `device_tag` (as files written on a GPU are)."""
    model = {k: torch.from_numpy(v) for k, v in state_dict.items()}
    ckpt = {"model": model, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
            "lr_scheduler": {"step_size": 400}, "epoch": 7}
    saved = dict(sys.modules)
    try:
        if opt is not None:
            sys.modules["easydict"] = _fake_easydict_module()
            ckpt["opt"] = sys.modules["easydict"].EasyDict(opt)
        torch.save(ckpt, path)
    finally:
        sys.modules.clear()
        sys.modules.update(saved)
    if device_tag:
        old, new = "cpu".encode(), device_tag.encode()
        with zipfile.ZipFile(path) as z:
            files = {n: z.read(n) for n in z.namelist()}
        pkl = next(n for n in files if n.endswith("data.pkl"))
        # BINUNICODE 'cpu' -> device_tag in every storage's persistent id.
        files[pkl] = files[pkl].replace(b"X\x03\x00\x00\x00" + old,
                                        b"X" + len(new).to_bytes(4, "little") + new)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for n, data in files.items():
                z.writestr(n, data)
        Path(path).write_bytes(buf.getvalue())


def test_easydict_opt_loads_without_easydict(tmp_path):
    sd = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "best.ckpt"
    save_reference_checkpoint(path, sd, opt={"nheads": 8, "device": "cuda", "sub": {"a": 1}},
                              device_tag="cuda:0")
    assert "easydict" not in sys.modules
    assert b"cuda:0" in zipfile.ZipFile(path).read(
        next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("data.pkl")))
    loaded = load_torch_checkpoint(path)
    assert loaded["opt"] == {"nheads": 8, "device": "cuda", "sub": {"a": 1}}
    assert type(loaded["opt"]) is dict and type(loaded["opt"]["sub"]) is dict
    assert loaded["model"]["w"].device.type == "cpu" and loaded["epoch"] == 7
    np.testing.assert_array_equal(loaded["model"]["w"].numpy(), sd["w"])


class _Malicious:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_global_is_refused(tmp_path):
    marker = tmp_path / "executed"
    torch.save({"model": {}, "opt": _Malicious(marker)}, tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"system"):
        load_torch_checkpoint(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_converted_workdir_predicts_with_the_binaries(tmp_path, synthetic_castella):
    """convert_detr -> predict_detr on a tiny model; the workdir holds the source's parameters."""
    cfg = tiny_model_config()
    cfg.audio_dim, cfg.text_dim = 770, 768
    source = qd.QDDETR(cfg, rngs=nnx.Rngs(3))
    sd = convert.export_state_dict(source, cfg, "dcase")
    ckpt = tmp_path / "best.ckpt"
    save_reference_checkpoint(ckpt, sd, opt={"nheads": 4, "max_q_l": 32})
    overrides = [f"--config.model.{k}={v}" for k, v in
                 (("hidden_dim", 16), ("dim_feedforward", 24), ("num_queries", 4),
                  ("max_q_l", 6), ("t2v_layers", 1), ("enc_layers", 1), ("nheads", 4))]
    workdir = tmp_path / "converted"
    run = subprocess.run([sys.executable, "-m", "experiments.convert_detr", f"--checkpoint={ckpt}",
                          "--layout=dcase", f"--workdir={workdir}", *overrides],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((workdir / "conversion.json").read_text())
    assert report["ignored"] == ["optimizer", "lr_scheduler", "epoch", "opt"]
    assert len(report["converted"]) == len(sd) and len(report["sha256"]) == 64
    assert json.loads((workdir / "config.json").read_text())["data"]["layout"] == "dcase"

    pred = tmp_path / "pred.jsonl"
    run = subprocess.run([sys.executable, "-m", "experiments.predict_detr", f"--workdir={workdir}",
                          f"--annotations={synthetic_castella / 'annotations.jsonl'}",
                          f"--audio_feats={synthetic_castella / 'clap'}",
                          f"--text_feats={synthetic_castella / 'clap_text'}",
                          f"--output={pred}"], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(x) for x in pred.read_text().splitlines()]
    assert len(lines) == len((synthetic_castella / "annotations.jsonl").read_text().splitlines())
    assert all(len(x["pred_relevant_windows"]) == 4 for x in lines)  # num_queries
    # The workdir's parameters (what predict_detr restored) are the source model's, exactly.
    from amr_jax.train import trainer
    from amr_jax.train.checkpointing import restore_params
    config = trainer.load_config(workdir)
    model = trainer.build_qd_detr(config.model, nnx.Rngs(0))
    _, like, _ = nnx.split(model, nnx.Param, ...)
    restored, where = restore_params(workdir, types.SimpleNamespace(params=like))
    assert where.startswith("best")
    expected = _params(source)
    got = {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(restored)}
    assert got.keys() == expected.keys()
    for path in got:
        np.testing.assert_array_equal(got[path], expected[path], err_msg=str(path))


@pytest.mark.skipif(not os.environ.get("LIGHTHOUSE_SRC"),
                    reason="set LIGHTHOUSE_SRC to a line/lighthouse checkout to compare outputs")
def test_converted_model_equals_the_lighthouse_module():
    """Output parity with the real reference module (a local lighthouse checkout, not vendored)."""
    import jax

    from amr_jax.detr.inputs import DetrInputs

    src = os.environ["LIGHTHOUSE_SRC"]
    package = types.ModuleType("lighthouse")  # skip lighthouse/__init__ (inference API imports)
    package.__path__ = [os.path.join(src, "lighthouse")]
    saved = dict(sys.modules)
    sys.modules["lighthouse"] = package
    sys.path.insert(0, src)
    try:
        from lighthouse.common import qd_detr as lh

        class Args(dict):
            __getattr__ = dict.__getitem__

        args = Args(device="cpu", hidden_dim=256, dropout=0.1, nheads=8, dim_feedforward=1024,
                    enc_layers=2, dec_layers=2, pre_norm=False, position_embedding="sine",
                    max_q_l=32, input_dropout=0.5, t_feat_dim=768, v_feat_dim=2, a_feat_dim=768,
                    aux_loss=True, num_queries=10, span_loss_type="l1", n_input_proj=2,
                    set_cost_span=10, set_cost_giou=1, set_cost_class=4, span_loss_coef=10,
                    giou_loss_coef=1, label_loss_coef=4, lw_saliency=1, eos_coef=0.1,
                    saliency_margin=0.2, max_v_l=75)
        torch.manual_seed(0)
        ref = lh.build_model(args)[0].eval()
    finally:
        sys.path.remove(src)
        sys.modules.clear()
        sys.modules.update(saved)
    with torch.no_grad():
        for p in ref.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    cfg = qd.default_model_config()
    cfg.t2v_reference_mask = True  # the reference's batch-mixing mask
    ours = qd.QDDETR(cfg, rngs=nnx.Rngs(1))
    convert.load_state_dict_into(ours, convert.torch_state_dict_to_numpy(ref.state_dict()), cfg,
                                 "lighthouse")
    rng = np.random.default_rng(0)
    alen, tlen = np.array([30, 22, 9, 17]), np.array([12, 5, 8, 3])
    am, tm = np.arange(30)[None] < alen[:, None], np.arange(12)[None] < tlen[:, None]
    aud = rng.normal(size=(4, 30, 768)).astype(np.float32) * am[..., None]
    txt = rng.normal(size=(4, 12, 768)).astype(np.float32) * tm[..., None]
    tef = np.zeros((4, 30, 2), np.float32)
    for b, c in enumerate(alen):
        tef[b, :c] = np.stack([np.arange(c) / c, np.arange(c) / c + 1 / c], 1)
    with torch.no_grad():
        expected = ref(torch.tensor(txt), torch.tensor(tm).float(), torch.tensor(tef),
                       torch.tensor(am).float(), torch.tensor(aud), torch.tensor(am).float())
    inputs = DetrInputs(audio=np.concatenate([tef, aud], -1), audio_mask=am, text=txt,
                        text_mask=tm)
    with jax.default_matmul_precision("highest"):
        got = ours(inputs, deterministic=True, negatives=True)
    for key in ("pred_logits", "pred_spans"):
        np.testing.assert_allclose(got[key], expected[key].numpy(), atol=2e-5)
    for key in ("saliency_scores", "saliency_scores_neg"):
        np.testing.assert_allclose(np.where(am, got[key], 0), np.where(am, expected[key].numpy(), 0),
                                   atol=2e-5)
