"""Strict conversion of reference QD-DETR (PyTorch) checkpoints into a predict-ready workdir.

The reference state dict (lighthouse `lighthouse/common/qd_detr.py` or the DCASE
baseline `src/qd_detr.py`; the two differ only in the name of the audio input
projection, `input_vid_proj` vs `input_aud_proj`) is mapped by an explicit table
built from the model config: every reference key is used exactly once, every Flax
parameter is filled exactly once, and a missing, extra or mis-shaped entry raises
`ConversionError` naming the key. Transforms:

* `linear`: `nn.Linear.weight` [out, in] -> kernel [in, out] (transpose);
* `in_proj`: packed `nn.MultiheadAttention.in_proj_weight` [3d, d] (rows q, k, v) ->
  `in_proj_kernel` [d, 3d] (columns q, k, v): the q/k/v blocks keep their order, so
  one transpose splits them to the same three column blocks;
* `conv`: `nn.Conv1d.weight` [out, in, k] -> kernel [k, in, out] (UVCOM's local convolutions);
* `prelu`: `nn.PReLU.weight` [1] -> scalar `negative_slope`;
* `copy`: LayerNorm weight -> scale, biases, embeddings, the global token.

The model is identical for both layouts; only the order of the 770 audio-row inputs
(`[clap ‖ tef]` for dcase, `[tef ‖ clap]` for lighthouse), the text normalization and
thus the meaning of the first input projection's rows differ, so the layout given
must be the one the checkpoint was trained with.

The written workdir is what `train_and_evaluate` writes (config.json, orbax
parameters under best/, best.json), plus `conversion.json` (sha256, converted and
ignored keys), so `experiments.predict_detr` uses it unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from amr_jax.errors import ConversionError as BaseConversionError
from amr_jax.detr.layout import get_layout
from amr_jax.io_utils import atomic_write_text

# Checkpoint entries next to "model" that hold no model weights.
IGNORED_ENTRIES = ("optimizer", "lr_scheduler", "epoch", "opt")
REPORT_FILE = "conversion.json"


class ConversionError(BaseConversionError):
    """A reference checkpoint does not match the name table (missing, extra, mis-shaped key)."""

    hint = ("pass a lighthouse / DCASE baseline QD-DETR checkpoint with the matching --layout "
            "and model sizes; the name table is in amr_jax/detr/convert.py")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of the name table: a reference key, a Flax parameter path, a transform."""

    torch_name: str
    flax_path: tuple
    transform: str  # "linear", "in_proj", "conv", "prelu" or "copy"


def _linear(torch_prefix: str, flax_prefix: tuple) -> list[Entry]:
    return [Entry(f"{torch_prefix}.weight", flax_prefix + ("kernel",), "linear"),
            Entry(f"{torch_prefix}.bias", flax_prefix + ("bias",), "copy")]


def _norm(torch_prefix: str, flax_prefix: tuple) -> list[Entry]:
    return [Entry(f"{torch_prefix}.weight", flax_prefix + ("scale",), "copy"),
            Entry(f"{torch_prefix}.bias", flax_prefix + ("bias",), "copy")]


def _mlp(torch_prefix: str, flax_prefix: tuple, num_layers: int) -> list[Entry]:
    return [e for i in range(num_layers)
            for e in _linear(f"{torch_prefix}.layers.{i}", flax_prefix + ("layers", i))]


def _input_projection(torch_prefix: str, flax_prefix: tuple, num_layers: int) -> list[Entry]:
    # The reference `LinearLayer` holds `LayerNorm` and `net = Sequential(Dropout, Linear)`.
    out = []
    for i in range(num_layers):
        out += _norm(f"{torch_prefix}.{i}.LayerNorm", flax_prefix + ("blocks", i, "layer_norm"))
        out += _linear(f"{torch_prefix}.{i}.net.1", flax_prefix + ("blocks", i, "linear"))
    return out


def _encoder_layer(torch_prefix: str, flax_prefix: tuple) -> list[Entry]:
    attn = flax_prefix + ("self_attn",)
    out = [Entry(f"{torch_prefix}.self_attn.in_proj_weight", attn + ("in_proj_kernel",), "in_proj"),
           Entry(f"{torch_prefix}.self_attn.in_proj_bias", attn + ("in_proj_bias",), "copy")]
    out += _linear(f"{torch_prefix}.self_attn.out_proj", attn + ("out_proj",))
    for name in ("linear1", "linear2"):
        out += _linear(f"{torch_prefix}.{name}", flax_prefix + (name,))
    for name in ("norm1", "norm2"):
        out += _norm(f"{torch_prefix}.{name}", flax_prefix + (name,))
    out.append(Entry(f"{torch_prefix}.activation.weight",
                     flax_prefix + ("activation", "negative_slope"), "prelu"))
    return out


def _decoder_layer(torch_prefix: str, flax_prefix: tuple, *, query_pos_proj: bool) -> list[Entry]:
    projections = ["sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj",
                   "sa_v_proj", "ca_qcontent_proj"]
    projections += ["ca_qpos_proj"] if query_pos_proj else []
    projections += ["ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj",
                    "linear1", "linear2"]
    out = [e for name in projections for e in _linear(f"{torch_prefix}.{name}", flax_prefix + (name,))]
    for attn in ("self_attn", "cross_attn"):
        out += _linear(f"{torch_prefix}.{attn}.out_proj", flax_prefix + (attn, "out_proj"))
    for name in ("norm1", "norm2", "norm3"):
        out += _norm(f"{torch_prefix}.{name}", flax_prefix + (name,))
    out.append(Entry(f"{torch_prefix}.activation.weight",
                     flax_prefix + ("activation", "negative_slope"), "prelu"))
    return out


def _decoder(torch_prefix: str, flax_prefix: tuple, c: ml_collections.ConfigDict) -> list[Entry]:
    """The DAB decoder shared by QD-DETR and UVCOM: layers, norm and anchor heads."""
    out = []
    for i in range(c.dec_layers):
        out += _decoder_layer(f"{torch_prefix}.layers.{i}", flax_prefix + ("layers", i),
                              query_pos_proj=c.keep_query_pos or i == 0)
    out += _norm(f"{torch_prefix}.norm", flax_prefix + ("norm",))
    out += _mlp(f"{torch_prefix}.query_scale", flax_prefix + ("query_scale",), 2)
    out += _mlp(f"{torch_prefix}.ref_point_head", flax_prefix + ("ref_point_head",), 2)
    out += _mlp(f"{torch_prefix}.bbox_embed", flax_prefix + ("bbox_embed",), 3)
    if c.modulate_t_attn:
        out += _mlp(f"{torch_prefix}.ref_anchor_head", flax_prefix + ("ref_anchor_head",), 2)
    return out


def _conv(torch_prefix: str, flax_prefix: tuple) -> list[Entry]:
    return [Entry(f"{torch_prefix}.weight", flax_prefix + ("kernel",), "conv"),
            Entry(f"{torch_prefix}.bias", flax_prefix + ("bias",), "copy")]


def uvcom_name_table(model_config: ml_collections.ConfigDict) -> list[Entry]:
    """Every state-dict key of lighthouse's UVCOM for audio built from `model_config`.

    The reference feeds the endpoint features as the "video" (`input_vid_proj`, 2 -> d)
    and the CLAP frames as the audio (`input_audio_proj`), whatever the layout; the
    layout only says where the endpoint features sit in this project's audio row
    (`model.tef_first`). Its t2v, v2t and GKA stacks all have `enc_layers` layers, so
    `model.t2v_layers` must equal `model.enc_layers`.
    """
    c = model_config
    if c.t2v_layers != c.enc_layers:
        raise ConversionError(f"the reference UVCOM uses enc_layers for every encoder stack; "
                              f"model.t2v_layers={c.t2v_layers} != enc_layers={c.enc_layers}")
    out = _input_projection("input_vid_proj", ("input_tef_proj",), 2)
    out += _input_projection("input_audio_proj", ("input_audio_proj",), c.n_input_proj)
    out += _input_projection("input_txt_proj", ("input_text_proj",), c.n_input_proj)
    out += [Entry("txt_position_embed.position_embeddings.weight",
                  ("text_position_embed", "position_embeddings"), "copy")]
    out += _norm("txt_position_embed.LayerNorm", ("text_position_embed", "layer_norm"))
    out += [Entry("global_rep_token", ("global_token",), "copy"),
            Entry("global_rep_pos", ("global_pos",), "copy")]
    stacks = (("t2v_encoder", "t2v_layers"), ("v2t_encoder", "v2t_layers"),
              ("GKA_Module", "gka_layers"))
    for torch_stack, flax_stack in stacks:
        for i in range(c.enc_layers):
            out += _encoder_layer(f"CIM.{torch_stack}.layers.{i}", (flax_stack, i))
    slot = "CIM.processer_for_tgt"
    for name in ("norm_inputs", "norm_slots", "norm_mlp", "norm_out"):
        out += _norm(f"{slot}.{name}", ("slot_attention", name))
    for name in ("project_q", "project_k", "project_v"):
        out += _linear(f"{slot}.{name}", ("slot_attention", name))
    out += _mlp(f"{slot}.mlp", ("slot_attention", "mlp"), 3)
    out += _decoder("CIM.decoder", ("decoder",), c)
    out += [Entry("CIM.decoder.span_embed.weight", ("decoder", "span_embed"), "copy")]
    out += _linear("CIM.feature_proj.0", ("feature_proj",))
    out += _norm("CIM.feature_proj.1", ("feature_norm",))
    for i in range(3):
        out += _conv(f"CIM.conv_local.{i}", ("conv_local", "convs", i))
    out += [Entry("CIM.txt_mu", ("text_bases",), "copy"),
            Entry("CIM.vid_mu", ("audio_bases",), "copy")]
    out += _mlp("CIM.sim_vid", ("sim_audio",), 3)
    out += _mlp("CIM.sim_txt", ("sim_text",), 3)
    out += [Entry("query_embed.weight", ("query_embed",), "copy")]
    out += _linear("class_embed", ("class_embed",))
    out += _mlp("span_embed", ("span_embed",), 3)
    out += _linear("saliency_proj1", ("saliency_proj1",))
    out += _linear("saliency_proj2", ("saliency_proj2",))
    return out


def name_table(model_config: ml_collections.ConfigDict, layout: str) -> list[Entry]:
    """Every reference state-dict key of a QD-DETR (or, with `model.backbone = "uvcom"`,
    lighthouse UVCOM: `uvcom_name_table`) built from `model_config`.

    Args:
      model_config: `config.model` (amr_jax.detr.model.default_model_config layout).
      layout: "dcase" (audio projection `input_aud_proj`) or "lighthouse" (`input_vid_proj`).
    """
    c = model_config
    if c.activation != "prelu":
        raise ConversionError(f"the reference uses PReLU activations; model.activation is "
                              f"{c.activation!r}")
    if c.backbone == "uvcom":
        return uvcom_name_table(c)
    out = _input_projection(get_layout(layout).audio_proj_prefix, ("input_audio_proj",),
                            c.n_input_proj)
    out += _input_projection("input_txt_proj", ("input_text_proj",), c.n_input_proj)
    out += [Entry("txt_position_embed.position_embeddings.weight",
                  ("text_position_embed", "position_embeddings"), "copy")]
    out += _norm("txt_position_embed.LayerNorm", ("text_position_embed", "layer_norm"))
    out += [Entry("global_rep_token", ("global_token",), "copy"),
            Entry("global_rep_pos", ("global_pos",), "copy")]
    for i in range(c.t2v_layers):
        out += _encoder_layer(f"transformer.t2v_encoder.layers.{i}", ("t2v_layers", i))
    for i in range(c.enc_layers):
        out += _encoder_layer(f"transformer.encoder.layers.{i}", ("encoder_layers", i))
    out += _decoder("transformer.decoder", ("decoder",), c)
    out += [Entry("query_embed.weight", ("query_embed",), "copy")]
    out += _linear("class_embed", ("class_embed",))
    out += _mlp("span_embed", ("span_embed",), 3)
    out += _linear("saliency_proj1", ("saliency_proj1",))
    out += _linear("saliency_proj2", ("saliency_proj2",))
    return out


def _to_flax(value: np.ndarray, transform: str) -> np.ndarray:
    if transform in ("linear", "in_proj"):
        return value.T
    if transform == "conv":
        return value.transpose(2, 1, 0)
    if transform == "prelu":
        return value.reshape(())
    return value


def _to_torch(value: np.ndarray, transform: str) -> np.ndarray:
    if transform in ("linear", "in_proj"):
        return value.T
    if transform == "conv":
        return value.transpose(2, 1, 0)
    if transform == "prelu":
        return value.reshape((1,))
    return value


def _flax_params(model: nnx.Module) -> dict[tuple, nnx.Param]:
    return {tuple(path): node for path, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Param)}


def _path_str(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _check_table_covers_model(table: list[Entry], params: Mapping[tuple, nnx.Param]) -> None:
    targets = [e.flax_path for e in table]
    unfilled = sorted(_path_str(p) for p in set(params) - set(targets))
    unknown = sorted(_path_str(p) for p in set(targets) - set(params))
    if unfilled or unknown or len(targets) != len(set(targets)):
        raise ConversionError(
            f"name table and model disagree: model parameters without a reference key "
            f"{unfilled[:10]}, table paths not in the model {unknown[:10]} (does the config "
            "enable a module the reference QD-DETR does not have?)")


def load_state_dict_into(model: nnx.Module, state_dict: Mapping[str, np.ndarray],
                         model_config: ml_collections.ConfigDict, layout: str) -> list[dict]:
    """Fills `model`'s parameters from a reference state dict, strictly.

    Args:
      model: a QDDETR built from `model_config` (modified in place).
      state_dict: reference key -> numpy array (from `torch_state_dict_to_numpy`).
      model_config: the config the model was built from.
      layout: the checkpoint's input layout.

    Returns:
      One `{"torch", "flax", "shape", "transform"}` record per converted key.

    Raises:
      ConversionError: naming the missing, unexpected or mis-shaped keys.
    """
    table = name_table(model_config, layout)
    params = _flax_params(model)
    _check_table_covers_model(table, params)
    expected = {e.torch_name for e in table}
    missing = [e.torch_name for e in table if e.torch_name not in state_dict]
    extra = sorted(k for k in state_dict if k not in expected)
    if missing or extra:
        raise ConversionError(
            f"checkpoint keys do not match the {model_config.backbone} name table for layout "
            f"{layout!r}: "
            f"missing {missing[:20]}{' ...' if len(missing) > 20 else ''}, "
            f"unexpected {extra[:20]}{' ...' if len(extra) > 20 else ''}")
    records, bad = [], []
    for e in table:
        value = np.asarray(state_dict[e.torch_name])
        target = params[e.flax_path]
        want = _to_torch(np.zeros(target.shape), e.transform).shape
        if tuple(value.shape) != tuple(want):
            bad.append(f"{e.torch_name}: shape {tuple(value.shape)}, expected {tuple(want)}")
            continue
        target[...] = jnp.asarray(_to_flax(value, e.transform), dtype=target[...].dtype)
        records.append({"torch": e.torch_name, "flax": _path_str(e.flax_path),
                        "shape": list(value.shape), "transform": e.transform})
    if bad:
        raise ConversionError("mis-shaped checkpoint entries (check the model config): "
                              + "; ".join(bad))
    return records


def export_state_dict(model: nnx.Module, model_config: ml_collections.ConfigDict,
                      layout: str) -> dict[str, np.ndarray]:
    """The inverse of `load_state_dict_into`: reference key -> numpy array (torch layout)."""
    params = _flax_params(model)
    table = name_table(model_config, layout)
    _check_table_covers_model(table, params)
    return {e.torch_name: _to_torch(np.asarray(params[e.flax_path][...]), e.transform)
            for e in table}


def torch_state_dict_to_numpy(state_dict: Mapping) -> dict[str, np.ndarray]:
    """Tensor values -> float32 numpy arrays (raises naming a non-tensor entry)."""
    import torch  # noqa: PLC0415

    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"state dict entry {key!r} is a {type(value).__name__}, "
                                  "not a tensor")
        out[key] = value.detach().to("cpu", torch.float32).numpy()
    return out


def split_checkpoint(checkpoint) -> tuple[Mapping, list[str]]:
    """(model state dict, ignored top-level entries) of a loaded checkpoint.

    Accepts the reference `{"model": ..., "optimizer", "lr_scheduler", "epoch", "opt"}`
    dict or a bare state dict; any other top-level entry raises naming it.
    """
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(f"checkpoint holds a {type(checkpoint).__name__}, not a dict")
    if "model" not in checkpoint:
        return checkpoint, []  # a bare state dict
    unknown = [k for k in checkpoint if k != "model" and k not in IGNORED_ENTRIES]
    if unknown:
        raise ConversionError(f"unexpected checkpoint entries {unknown}; expected 'model' and "
                              f"optionally {list(IGNORED_ENTRIES)}")
    return checkpoint["model"], [k for k in checkpoint if k != "model"]


def _check_options(opt, model_config: ml_collections.ConfigDict) -> None:
    """The head count is not visible in any weight shape: compare it with the saved options."""
    if isinstance(opt, Mapping) and "nheads" in opt and int(opt["nheads"]) != model_config.nheads:
        raise ConversionError(f"the checkpoint was trained with nheads={opt['nheads']} but "
                              f"model.nheads={model_config.nheads}")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_checkpoint(checkpoint: str | os.PathLike, workdir: str | os.PathLike, *,
                       layout: str, config: ml_collections.ConfigDict) -> dict:
    """Converts a reference checkpoint file into a prediction workdir.

    Args:
      checkpoint: `torch.save` file (e.g. the baseline's `best.ckpt`).
      workdir: output folder (created); receives config.json, best/, best.json and
        conversion.json.
      layout: "dcase" or "lighthouse", the layout the checkpoint was trained with.
      config: a QD-DETR experiment config (experiments/configs/qd_detr.py); its
        `data.layout` is set to `layout`.

    Returns:
      The conversion report (also written to `workdir/conversion.json`).
    """
    from amr_jax.detr.torch_checkpoint import load_torch_checkpoint  # noqa: PLC0415
    from amr_jax.train import trainer  # noqa: PLC0415
    from amr_jax.train.checkpointing import RunCheckpoints  # noqa: PLC0415
    from amr_jax.train.state import TrainState, split_model  # noqa: PLC0415

    get_layout(layout)
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.layout = layout
    config.model.tef_first = get_layout(layout).tef_first  # where UVCOM finds the tef
    config.lock()
    loaded = load_torch_checkpoint(checkpoint)
    state_dict, ignored = split_checkpoint(loaded)
    _check_options(loaded.get("opt") if "model" in loaded else None, config.model)
    arrays = torch_state_dict_to_numpy(state_dict)
    model = trainer.build_qd_detr(config.model, nnx.Rngs(config.seed))
    converted = load_state_dict_into(model, arrays, config.model, layout)
    _, params, _ = split_model(model)

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    trainer.save_config(config, workdir)
    epoch = loaded.get("epoch") if "model" in loaded else None
    record = {"step": 0, "epoch": epoch, "metric": None, "value": None, "brief": {},
              "source": f"converted from {os.fspath(checkpoint)}"}
    ckpt = RunCheckpoints(workdir, max_to_keep=1)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=None)
    ckpt.save_best(state, record)
    ckpt.close()
    report = {"checkpoint": os.fspath(checkpoint), "sha256": sha256_of(checkpoint),
              "layout": layout, "epoch": epoch,
              "num_parameters": int(sum(np.prod(a.shape) for a in arrays.values())),
              "converted": converted, "ignored": ignored}
    atomic_write_text(workdir / REPORT_FILE, json.dumps(report, indent=2) + "\n")
    logging.info("converted %d keys (%s parameters) from %s into %s; ignored entries %s",
                 len(converted), f"{report['num_parameters']:,}", checkpoint, workdir, ignored)
    jax.block_until_ready(params)
    return report
