"""Strict conversion of MS-CLAP checkpoints to Flax params, and loading them back.

Input: an MS-CLAP checkpoint `torch.load(path)["model"]` (`.pth`/`.pt`), or a
`.npz` holding the same names (synthetic checkpoints). Conversion follows an
explicit name table:

    {audio,caption}_encoder.projection.linear1.weight [out, in]  -> <head>/linear1/kernel (T)
    {audio,caption}_encoder.projection.linear2.weight [out, out] -> <head>/linear2/kernel (T)
    {audio,caption}_encoder.projection.layer_norm.weight [out]   -> <head>/layer_norm/scale
    {audio,caption}_encoder.projection.layer_norm.bias [out]     -> <head>/layer_norm/bias
    caption_encoder.base.<gpt2 name>                             -> gpt2/<...> (if present)

with `<head>` = `audio_head` / `caption_head` and (T) = transposed. HTS-AT weights
(`audio_encoder.base.htsat.*`), when present, are converted strictly by the name table
of `amr_jax.clap.htsat_convert` to `htsat/<...>` (config read off the shapes, recorded
as `htsat_config`); `logit_scale` and GPT-2 causal-mask buffers are listed as ignored. Any other name, a missing head weight, a wrong shape or a non-finite
value raises, naming the file and the weight.

Output (`save_converted`): `<out_dir>/params` (orbax) and
`<out_dir>/clap_conversion.json` (source sha256, shapes, converted and ignored
names, GPT-2 config). `load_converted` reads both back as `ClapParams`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from absl import logging
from flax import nnx

from amr_jax.clap import gpt2 as gpt2_lib
from amr_jax.clap import htsat as htsat_lib
from amr_jax.clap import htsat_convert, materialize
from amr_jax.clap.heads import ClapModel, ProjectionHead
from amr_jax.errors import ConversionError as BaseConversionError
from amr_jax.io_utils import atomic_write_text, quiet_checkpointing

HEADS = ("audio_head", "caption_head")
_HEAD_PREFIX = {
    "audio_head": "audio_encoder.projection.",
    "caption_head": "caption_encoder.projection.",
}
# (torch suffix, flax path inside the head, transpose)
_HEAD_TABLE = (
    ("linear1.weight", ("linear1", "kernel"), True),
    ("linear2.weight", ("linear2", "kernel"), True),
    ("layer_norm.weight", ("layer_norm", "scale"), False),
    ("layer_norm.bias", ("layer_norm", "bias"), False),
)
GPT2_PREFIX = "caption_encoder.base."
HTSAT_PREFIX = "audio_encoder.base."  # converted by amr_jax.clap.htsat_convert
IGNORED_NAMES = ("logit_scale",)
DEFAULT_GPT2_HEADS = 12  # GPT-2 124M; a state dict does not record the head count

PARAMS_SUBDIR = "params"
REPORT_NAME = "clap_conversion.json"


class ConversionError(BaseConversionError):
    """An MS-CLAP checkpoint does not match the name table (message names file and weight)."""

    hint = ("pass an MS-CLAP 2023 checkpoint (CLAP_weights_2023.pth) or the synthetic .npz; "
            "the expected names are in amr_jax/clap/convert.py")


# --------------------------------------------------------------------------------------
# Reading checkpoints.


def sha256_of(path: str | os.PathLike, *, progress: bool = True) -> str:
    """Hex sha256 of a file, read in 8 MiB blocks (with a progress bar if asked)."""
    path = Path(path)
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = None
    if progress and size > 64 << 20:
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {path.name}")
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
            if bar is not None:
                bar.update(len(block))
    if bar is not None:
        bar.close()
    return digest.hexdigest()


def _tensor_to_numpy(name: str, value, source: Path) -> np.ndarray:
    import torch

    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, torch.Tensor):
        raise ConversionError(f"{source}: entry {name!r} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    if value.is_floating_point():
        value = value.to(torch.float32)
    return value.numpy()


def _torch_load(path: Path):
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Older training scripts pickle extra objects next to the weights.
        logging.warning(
            "%s: weights_only load failed (%s); loading with weights_only=False. "
            "Only do this for checkpoints from a trusted source.",
            path,
            str(e).splitlines()[0],
        )
        return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a checkpoint's weights as name -> numpy array (float tensors as float32).

    Args:
      path: `.npz` (names as keys) or a torch file holding `{"model": state_dict}`
        (MS-CLAP) or a bare state dict.

    Raises:
      FileNotFoundError, ConversionError: unreadable file or unexpected layout.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ConversionError(f"{path}: cannot read npz checkpoint: {e}") from e
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping):
        raise ConversionError(
            f"{path}: expected a state dict or {{'model': state_dict}}, got {type(obj).__name__}"
        )
    # DistributedDataParallel checkpoints prefix every name with "module.".
    names = list(obj)
    if names and all(n.startswith("module.") for n in names):
        obj = {n[len("module."):]: v for n, v in obj.items()}
    return {str(k): _tensor_to_numpy(k, v, path) for k, v in obj.items()}


# --------------------------------------------------------------------------------------
# Conversion.


def _check_array(source: str, name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(value.shape) != tuple(shape):
        raise ConversionError(f"{source}: {name} has shape {tuple(value.shape)}, expected {shape}")
    if not np.issubdtype(value.dtype, np.floating):
        raise ConversionError(f"{source}: {name} has non-float dtype {value.dtype}")
    if not np.all(np.isfinite(value)):
        raise ConversionError(f"{source}: {name} has non-finite values")


def _convert_head(weights: Mapping[str, np.ndarray], head: str, source: str) -> dict:
    prefix = _HEAD_PREFIX[head]
    l1 = weights[prefix + "linear1.weight"]
    if l1.ndim != 2:
        raise ConversionError(
            f"{source}: {prefix}linear1.weight must be 2-d [out, in], got shape {l1.shape}"
        )
    out_dim, in_dim = l1.shape
    shapes = {
        "linear1.weight": (out_dim, in_dim),
        "linear2.weight": (out_dim, out_dim),
        "layer_norm.weight": (out_dim,),
        "layer_norm.bias": (out_dim,),
    }
    params: dict = {}
    for suffix, path, transpose in _HEAD_TABLE:
        value = weights[prefix + suffix]
        _check_array(source, prefix + suffix, value, shapes[suffix])
        value = np.ascontiguousarray(value.T if transpose else value).astype(np.float32)
        params.setdefault(path[0], {})[path[1]] = value
    return params


def head_dims(head_params: Mapping) -> tuple[int, int]:
    """(in_dim, out_dim) of converted head params."""
    in_dim, out_dim = np.shape(head_params["linear1"]["kernel"])
    return int(in_dim), int(out_dim)


def convert_state_dict(
    weights: Mapping[str, np.ndarray],
    *,
    source: str = "checkpoint",
    gpt2_num_heads: int = DEFAULT_GPT2_HEADS,
) -> tuple[dict, dict]:
    """Converts MS-CLAP weights (name -> array) by the name table.

    Args:
      weights: torch names -> arrays (as from `read_state_dict`).
      source: shown in errors and recorded in the report.
      gpt2_num_heads: attention heads of the GPT-2 in `caption_encoder.base.*`
        (not recoverable from the weights).

    Returns:
      (params, report). params: `{"audio_head": {...}, "caption_head": {...}}`
      plus `"gpt2"` when GPT-2 weights are present; report: JSON-able dict.

    Raises:
      ConversionError: missing or unexpected names (all listed), wrong shapes,
        inconsistent head sizes, non-finite values.
    """
    head_names = {p + s for p in _HEAD_PREFIX.values() for s, _, _ in _HEAD_TABLE}
    missing = sorted(head_names - set(weights))
    gpt2_weights = {
        n[len(GPT2_PREFIX):]: v for n, v in weights.items() if n.startswith(GPT2_PREFIX)
    }
    ignored = sorted(n for n in weights if n in IGNORED_NAMES)
    unexpected = sorted(
        n
        for n in weights
        if n not in head_names and not n.startswith((GPT2_PREFIX, HTSAT_PREFIX))
        and n not in ignored
    )
    if missing or unexpected:
        raise ConversionError(
            f"{source}: checkpoint does not match the MS-CLAP name table; "
            f"missing {missing}, unexpected {unexpected}"
        )

    params = {head: _convert_head(weights, head, source) for head in HEADS}
    (a_in, a_out), (c_in, c_out) = (head_dims(params[h]) for h in HEADS)
    if a_out != c_out:
        raise ConversionError(
            f"{source}: audio head projects to {a_out} dims but caption head to {c_out}"
        )
    converted = {
        _HEAD_PREFIX[h] + s: f"{h}/{'/'.join(p)}" + (" (transposed)" if t else "")
        for h in HEADS
        for s, p, t in _HEAD_TABLE
    }

    htsat_config = None
    if any(n.startswith(HTSAT_PREFIX) for n in weights):
        try:
            htsat_config, params["htsat"], htsat_names, htsat_ignored = htsat_convert.convert(
                weights, source=source
            )
        except BaseConversionError as e:
            raise ConversionError(str(e)) from e
        if htsat_config.num_features != a_in:
            raise ConversionError(
                f"{source}: HTS-AT width {htsat_config.num_features} != audio head input {a_in}"
            )
        converted.update(htsat_names)
        ignored = sorted(ignored + htsat_ignored)

    gpt2_config = None
    if gpt2_weights:
        try:
            gpt2_config = gpt2_lib.config_from_weights(gpt2_weights, n_head=gpt2_num_heads)
            params["gpt2"], names, gpt2_ignored = gpt2_lib.state_dict_to_params(
                gpt2_weights, gpt2_config, source=f"{source} [{GPT2_PREFIX}*]"
            )
        except (KeyError, ValueError) as e:
            raise ConversionError(e.args[0] if e.args else str(e)) from e
        if gpt2_config.n_embd != c_in:
            raise ConversionError(
                f"{source}: GPT-2 width {gpt2_config.n_embd} != caption head input {c_in}"
            )
        converted.update({GPT2_PREFIX + n: "gpt2/" + n for n in names})
        ignored = sorted(ignored + [GPT2_PREFIX + n for n in gpt2_ignored])

    report = {
        "source": source,
        "audio_head": {"in_dim": a_in, "out_dim": a_out},
        "caption_head": {"in_dim": c_in, "out_dim": c_out},
        "gpt2_config": gpt2_config.to_dict() if gpt2_config else None,
        "gpt2_source": source if gpt2_config else None,
        "htsat_config": htsat_config.to_dict() if htsat_config else None,
        "converted": converted,
        "ignored": ignored,
        "shapes": _shapes(params),
    }
    return params, report


def _shapes(tree: Mapping, prefix: str = "") -> dict[str, list[int]]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_shapes(v, key + "/"))
        else:
            out[key] = list(np.shape(v))
    return out


def _summary(params: Mapping, report: Mapping, seconds: float) -> str:
    n_params = sum(int(np.prod(s)) for s in report["shapes"].values())
    gpt2 = "with GPT-2" if "gpt2" in params else "no GPT-2"
    gpt2 += ", with HTS-AT" if "htsat" in params else ", no HTS-AT"
    return (
        f"converted {len(report['converted'])} tensors ({n_params / 1e6:.2f}M params, {gpt2}), "
        f"ignored {len(report['ignored'])}, from {report['source']} in {seconds:.1f} s"
    )


def convert_checkpoint(
    path: str | os.PathLike,
    *,
    gpt2_dir: str | os.PathLike | None = None,
    gpt2_num_heads: int = DEFAULT_GPT2_HEADS,
    progress: bool = True,
) -> tuple[dict, dict]:
    """Reads and converts an MS-CLAP checkpoint (`.pth`/`.pt` or `.npz`).

    Args:
      path: the checkpoint.
      gpt2_dir: optional local HF GPT-2 snapshot (config.json + model.safetensors
        or pytorch_model.bin) for checkpoints without `caption_encoder.base.*`.
      gpt2_num_heads: head count of the checkpoint's own GPT-2, if it has one.
      progress: show a progress bar while hashing large files.

    Returns:
      (params, report) as `convert_state_dict`, the report also holding the
      source sha256.
    """
    start = time.perf_counter()
    path = Path(path)
    weights = read_state_dict(path)
    params, report = convert_state_dict(weights, source=str(path), gpt2_num_heads=gpt2_num_heads)
    report["source_sha256"] = sha256_of(path, progress=progress)
    if gpt2_dir is not None:
        if "gpt2" in params:
            raise ConversionError(
                f"{path} already holds GPT-2 weights ({GPT2_PREFIX}*); do not also pass {gpt2_dir}"
            )
        cfg, gpt2_params, gpt2_report = load_gpt2_snapshot(gpt2_dir)
        if cfg.n_embd != report["caption_head"]["in_dim"]:
            raise ConversionError(
                f"{gpt2_dir}: GPT-2 width {cfg.n_embd} != caption head input "
                f"{report['caption_head']['in_dim']} of {path}"
            )
        params["gpt2"] = gpt2_params
        report["gpt2_config"] = cfg.to_dict()
        report["gpt2_source"] = gpt2_report["source"]
        report["gpt2_source_sha256"] = gpt2_report["source_sha256"]
        report["converted"].update(
            {f"[{gpt2_dir}] {n}": "gpt2/" + n for n in gpt2_report["converted"]}
        )
        report["ignored"] += [f"[{gpt2_dir}] {n}" for n in gpt2_report["ignored"]]
        report["shapes"] = _shapes(params)
    logging.info("%s", _summary(params, report, time.perf_counter() - start))
    return params, report


def load_gpt2_snapshot(directory: str | os.PathLike):
    """Reads GPT-2 from a local HF snapshot folder; never touches the hub.

    Args:
      directory: holds `config.json` and `model.safetensors` or `pytorch_model.bin`
        (names with or without the `transformer.` prefix; `lm_head.weight`, tied to
        the token embedding, and causal-mask buffers are ignored).

    Returns:
      (GPT2Config, params nested dict, report dict with source, sha256,
      converted and ignored names).
    """
    directory = Path(directory)
    cfg = gpt2_lib.GPT2Config.from_json(directory / "config.json")
    st, pt = directory / "model.safetensors", directory / "pytorch_model.bin"
    if st.is_file():
        from safetensors.numpy import load_file

        weights_file = st
        raw = load_file(str(st))
    elif pt.is_file():
        weights_file = pt
        raw = read_state_dict(pt)
    else:
        raise FileNotFoundError(f"{directory}: neither model.safetensors nor pytorch_model.bin")
    weights, ignored = {}, []
    for name, value in raw.items():
        rel = name[len("transformer."):] if name.startswith("transformer.") else name
        if rel == "lm_head.weight":
            ignored.append(name)
            continue
        if value.dtype != np.float32 and np.issubdtype(value.dtype, np.floating):
            value = value.astype(np.float32)
        weights[rel] = value
    try:
        params, names, buffers = gpt2_lib.state_dict_to_params(
            weights, cfg, source=str(weights_file)
        )
    except (KeyError, ValueError) as e:
        raise ConversionError(e.args[0] if e.args else str(e)) from e
    report = {
        "source": str(weights_file),
        "source_sha256": sha256_of(weights_file),
        "converted": names,
        "ignored": sorted(ignored + buffers),
    }
    return cfg, params, report


# --------------------------------------------------------------------------------------
# Saving and loading converted params.


def _stringify_keys(tree):
    if isinstance(tree, Mapping):
        return {str(k): _stringify_keys(v) for k, v in tree.items()}
    return np.asarray(tree)


def save_converted(params: Mapping, report: Mapping, out_dir: str | os.PathLike) -> Path:
    """Writes `out_dir/params` (orbax) and `out_dir/clap_conversion.json`.

    The JSON is written last (atomically), so a folder with a JSON always holds
    complete params. Existing output in `out_dir` is replaced.
    """
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / REPORT_NAME
    if report_path.exists():
        report_path.unlink()
    with quiet_checkpointing(), ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out_dir / PARAMS_SUBDIR, _stringify_keys(params), force=True)
        ckptr.wait_until_finished()
    atomic_write_text(report_path, json.dumps(report, indent=1, sort_keys=True) + "\n")
    return out_dir


@dataclasses.dataclass(frozen=True)
class ClapParams:
    """Converted MS-CLAP weights (numpy) and the conversion report.

    Attributes:
      audio_head: head params `{"linear1": {"kernel"}, "linear2": {"kernel"},
        "layer_norm": {"scale", "bias"}}`.
      caption_head: same layout.
      gpt2: GPT-2 params (block indices as strings or ints) or None.
      gpt2_config: its config, or None.
      report: the conversion report (source sha256, names, shapes).
      htsat: HTS-AT params (`amr_jax.clap.htsat` layout) or None.
      htsat_config: its config, or None.
    """

    audio_head: dict
    caption_head: dict
    gpt2: dict | None
    gpt2_config: gpt2_lib.GPT2Config | None
    report: dict
    htsat: dict | None = None
    htsat_config: htsat_lib.HTSATConfig | None = None

    def audio_head_module(self) -> ProjectionHead:
        return build_head(self.audio_head)

    def caption_head_module(self) -> ProjectionHead:
        return build_head(self.caption_head)

    def gpt2_module(self) -> gpt2_lib.GPT2 | None:
        if self.gpt2 is None:
            return None
        return gpt2_lib.build_gpt2(self.gpt2_config, self.gpt2)

    def htsat_module(self) -> htsat_lib.HTSAT | None:
        """The HTS-AT audio encoder (eval mode), or None if the checkpoint had none."""
        if self.htsat is None:
            return None
        return htsat_lib.build_htsat(self.htsat_config, self.htsat)

    def to_model(self) -> ClapModel:
        """Both heads (eval mode) and GPT-2 if present, as one `ClapModel`."""
        return ClapModel(self.audio_head_module(), self.caption_head_module(), self.gpt2_module())


def build_head(head_params: Mapping) -> ProjectionHead:
    """A `ProjectionHead` in eval mode holding converted head params."""
    in_dim, out_dim = head_dims(head_params)
    head = materialize.with_params(
        lambda: ProjectionHead(in_dim, out_dim, rngs=nnx.Rngs(0)),
        {k: {kk: np.asarray(vv, np.float32) for kk, vv in v.items()}
         for k, v in head_params.items()})
    head.eval()
    return head


def params_to_clap(params: Mapping, report: Mapping) -> ClapParams:
    """Wraps in-memory converted params (as from `convert_checkpoint`)."""
    cfg = report.get("gpt2_config")
    htsat_cfg = report.get("htsat_config")
    return ClapParams(
        audio_head=params["audio_head"],
        caption_head=params["caption_head"],
        gpt2=params.get("gpt2"),
        gpt2_config=gpt2_lib.GPT2Config.from_dict(cfg) if cfg else None,
        report=dict(report),
        htsat=params.get("htsat"),
        htsat_config=htsat_lib.HTSATConfig.from_dict(htsat_cfg) if htsat_cfg else None,
    )


def load_converted(out_dir: str | os.PathLike) -> ClapParams:
    """Loads what `save_converted` wrote; checks every shape against the report."""
    import orbax.checkpoint as ocp

    out_dir = Path(out_dir).absolute()
    report_path = out_dir / REPORT_NAME
    if not report_path.is_file():
        raise FileNotFoundError(f"{out_dir}: no {REPORT_NAME}; run experiments.convert_clap first")
    report = json.loads(report_path.read_text())
    with quiet_checkpointing(), ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore(out_dir / PARAMS_SUBDIR)
    params = _to_numpy(restored)
    shapes = _shapes(params)
    if shapes != report["shapes"]:
        expected = report["shapes"]
        diff = sorted(k for k in set(shapes) | set(expected) if shapes.get(k) != expected.get(k))
        raise ConversionError(f"{out_dir}: params do not match {REPORT_NAME}: {diff[:10]}")
    return params_to_clap(params, report)


def _to_numpy(tree):
    if isinstance(tree, Mapping):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


def convert_and_save(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    *,
    gpt2_dir: str | os.PathLike | None = None,
    gpt2_num_heads: int = DEFAULT_GPT2_HEADS,
) -> dict:
    """`convert_checkpoint` + `save_converted`; returns the report (the binary's body)."""
    params, report = convert_checkpoint(
        checkpoint, gpt2_dir=gpt2_dir, gpt2_num_heads=gpt2_num_heads
    )
    save_converted(params, report, output)
    logging.info("wrote %s", Path(output) / REPORT_NAME)
    return report
