"""Strict conversion of MS-CLAP's `audio_encoder.base.*` (HTS-AT) to `amr_jax.clap.htsat` params.

Explicit name table (prefix `audio_encoder.base.htsat.`; `i` stage, `j` block;
T = transpose [out, in] -> [in, out]):

    bn0.{weight,bias,running_mean,running_var}      -> bn0/{scale,bias,mean,var}
    patch_embed.proj.weight [D, 1, p, p]            -> patch_embed/kernel [p*p, D] (reshape, T)
    patch_embed.proj.bias, patch_embed.norm.*       -> patch_embed/bias, patch_norm/{scale,bias}
    layers.i.blocks.j.norm{1,2}.{weight,bias}       -> stages/i/blocks/j/norm{1,2}/{scale,bias}
    layers.i.blocks.j.attn.qkv / attn.proj          -> .../attn/{qkv,proj}/{kernel (T), bias}
    layers.i.blocks.j.attn.relative_position_bias_table -> .../attn/relative_position_bias_table
    layers.i.blocks.j.mlp.fc{1,2}                   -> .../mlp/fc{1,2}/{kernel (T), bias}
    layers.i.downsample.reduction.weight            -> stages/i/downsample/reduction/kernel (T)
    layers.i.downsample.norm.{weight,bias}          -> stages/i/downsample/norm/{scale,bias}
    norm.{weight,bias}                              -> norm/{scale,bias}
    tscam_conv.weight [K, C, 2, 3] / .bias          -> tscam_kernel [2, 3, C, K] / tscam_bias

Checked buffers (must be present and equal what this library recomputes, else the
checkpoint was built with other front-end / window settings):
`spectrogram_extractor.stft.conv_{real,imag}.weight`, `logmel_extractor.melW`,
`layers.i.blocks.j.attn.relative_position_index`, `layers.i.blocks.j.attn_mask`
(shifted blocks only). Ignored: `bn0.num_batches_tracked` and `head.{weight,bias}`
(a Linear the token-semantic forward never calls). Anything else under the prefix,
anything missing, or any wrong shape raises one error listing all of them.

The config (widths, depths, heads, window, classes, spec size) is read off the shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from amr_jax.clap import audio_frontend
from amr_jax.clap.htsat import HTSATConfig, relative_position_index, shift_attention_mask
from amr_jax.errors import ConversionError

PREFIX = "audio_encoder.base.htsat."
IGNORED = ("bn0.num_batches_tracked", "head.weight", "head.bias")
_BUFFER_ATOL = 1e-6


def _ln(torch_name: str, flax_path: tuple, dim: int) -> list:
    return [(f"{torch_name}.weight", flax_path + ("scale",), "copy", (dim,)),
            (f"{torch_name}.bias", flax_path + ("bias",), "copy", (dim,))]


def _linear(torch_name: str, flax_path: tuple, d_in: int, d_out: int, bias: bool = True) -> list:
    rows = [(f"{torch_name}.weight", flax_path + ("kernel",), "T", (d_out, d_in))]
    if bias:
        rows.append((f"{torch_name}.bias", flax_path + ("bias",), "copy", (d_out,)))
    return rows


def name_table(cfg: HTSATConfig) -> list[tuple[str, tuple, str, tuple[int, ...]]]:
    """Rows (torch suffix after PREFIX, flax path, transform, torch shape)."""
    d, p, m = cfg.embed_dim, cfg.patch_size, cfg.mel_bins
    rows = [
        ("bn0.weight", ("bn0", "scale"), "copy", (m,)),
        ("bn0.bias", ("bn0", "bias"), "copy", (m,)),
        ("bn0.running_mean", ("bn0", "mean"), "copy", (m,)),
        ("bn0.running_var", ("bn0", "var"), "copy", (m,)),
        ("patch_embed.proj.weight", ("patch_embed", "kernel"), "patch", (d, 1, p, p)),
        ("patch_embed.proj.bias", ("patch_embed", "bias"), "copy", (d,)),
        *_ln("patch_embed.norm", ("patch_norm",), d),
    ]
    for i, depth in enumerate(cfg.depths):
        dim = d * 2**i
        hidden = int(dim * cfg.mlp_ratio)
        for j in range(depth):
            t, f = f"layers.{i}.blocks.{j}.", ("stages", str(i), "blocks", str(j))
            window, _ = cfg.block_window(i, j)
            rows += _ln(t + "norm1", f + ("norm1",), dim)
            rows.append((t + "attn.relative_position_bias_table",
                         f + ("attn", "relative_position_bias_table"), "copy",
                         ((2 * window - 1) ** 2, cfg.num_heads[i])))
            rows += _linear(t + "attn.qkv", f + ("attn", "qkv"), dim, 3 * dim)
            rows += _linear(t + "attn.proj", f + ("attn", "proj"), dim, dim)
            rows += _ln(t + "norm2", f + ("norm2",), dim)
            rows += _linear(t + "mlp.fc1", f + ("mlp", "fc1"), dim, hidden)
            rows += _linear(t + "mlp.fc2", f + ("mlp", "fc2"), hidden, dim)
        if i < len(cfg.depths) - 1:
            t, f = f"layers.{i}.downsample.", ("stages", str(i), "downsample")
            rows += _linear(t + "reduction", f + ("reduction",), 4 * dim, 2 * dim, bias=False)
            rows += _ln(t + "norm", f + ("norm",), 4 * dim)
    c, k = cfg.num_features, cfg.num_classes
    bins = cfg.spec_size // 2 ** (len(cfg.depths) - 1) // cfg.patch_size // cfg.freq_ratio
    rows += _ln("norm", ("norm",), c)
    rows += [("tscam_conv.weight", ("tscam_kernel",), "tscam", (k, c, bins, 3)),
             ("tscam_conv.bias", ("tscam_bias",), "copy", (k,))]
    return rows


def checked_buffers(cfg: HTSATConfig) -> dict[str, np.ndarray]:
    """Buffers a checkpoint must hold, recomputed here (torch suffix -> array)."""
    fe = audio_frontend.FrontendConfig()
    real, imag = audio_frontend.dft_kernels(fe.n_fft)
    out = {
        "spectrogram_extractor.stft.conv_real.weight": real.T[:, None, :],
        "spectrogram_extractor.stft.conv_imag.weight": imag.T[:, None, :],
        "logmel_extractor.melW": audio_frontend.mel_filterbank(
            fe.mel_sample_rate, fe.n_fft, cfg.mel_bins, fe.fmin, fe.fmax),
    }
    for i, depth in enumerate(cfg.depths):
        for j in range(depth):
            window, shift = cfg.block_window(i, j)
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = relative_position_index(window)
            if shift:
                out[f"layers.{i}.blocks.{j}.attn_mask"] = shift_attention_mask(
                    cfg.stage_resolution(i), window, shift)
    return out


def config_from_weights(weights: Mapping[str, np.ndarray], source: str) -> HTSATConfig:
    """Reads the HTS-AT config off `PREFIX`-stripped weight shapes."""
    try:
        proj = weights["patch_embed.proj.weight"]
        depths, stage = [], 0
        while f"layers.{stage}.blocks.0.norm1.weight" in weights:
            j = 0
            while f"layers.{stage}.blocks.{j}.norm1.weight" in weights:
                j += 1
            depths.append(j)
            stage += 1
        if not depths:
            raise KeyError("layers.0.blocks.0.norm1.weight")
        heads = tuple(int(weights[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1])
                      for i in range(len(depths)))
        window = (int(np.sqrt(weights["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0])) + 1) // 2
        dim = int(proj.shape[0])
        mlp_ratio = weights["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dim
        spec_size = 256
        if "layers.0.blocks.1.attn_mask" in weights:  # [num_windows, w*w, w*w]
            spec_size = int(round(np.sqrt(weights["layers.0.blocks.1.attn_mask"].shape[0]))) * window * int(proj.shape[2])
        return HTSATConfig(
            spec_size=spec_size, patch_size=int(proj.shape[2]),
            mel_bins=int(weights["bn0.weight"].shape[0]), embed_dim=dim, depths=tuple(depths),
            num_heads=heads, window_size=window, mlp_ratio=float(mlp_ratio),
            num_classes=int(weights["tscam_conv.weight"].shape[0]),
        )
    except KeyError as e:
        raise ConversionError(f"{source}: HTS-AT weights lack {PREFIX}{e.args[0]}") from e


def _transform(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "T":
        return value.T
    if kind == "patch":
        return value.reshape(value.shape[0], -1).T
    if kind == "tscam":
        return value.transpose(2, 3, 1, 0)
    return value


def convert(weights: Mapping[str, np.ndarray], *, source: str = "checkpoint"):
    """Converts the checkpoint's `audio_encoder.base.*` names.

    Args:
      weights: full checkpoint names -> arrays (only names under `audio_encoder.base.`
        are read; the caller routes the rest).

    Returns:
      (config, params nested dict, converted {torch: flax}, ignored [torch names]).

    Raises:
      ConversionError naming every missing, unexpected and mis-shaped weight, and any
      buffer that differs from the recomputed one.
    """
    base = "audio_encoder.base."
    outside = sorted(n for n in weights if n.startswith(base) and not n.startswith(PREFIX))
    sub = {n[len(PREFIX):]: v for n, v in weights.items() if n.startswith(PREFIX)}
    cfg = config_from_weights(sub, source)
    table = name_table(cfg)
    buffers = checked_buffers(cfg)
    known = {r[0] for r in table} | set(buffers) | set(IGNORED)
    missing = sorted(PREFIX + n for n in ({r[0] for r in table} | set(buffers)) - set(sub))
    unexpected = outside + sorted(PREFIX + n for n in set(sub) - known)
    misshaped = []
    for name, _, _, shape in table:
        if name in sub and tuple(sub[name].shape) != shape:
            misshaped.append(f"{PREFIX}{name}: {tuple(sub[name].shape)} != expected {shape}")
    for name, ref in buffers.items():
        if name in sub and tuple(sub[name].shape) != ref.shape:
            misshaped.append(f"{PREFIX}{name}: {tuple(sub[name].shape)} != expected {ref.shape}")
    if missing or unexpected or misshaped:
        raise ConversionError(
            f"{source}: HTS-AT weights do not match the name table "
            f"({cfg.depths=}, {cfg.embed_dim=}); missing {missing}, unexpected {unexpected}, "
            f"mis-shaped {misshaped}"
        )
    for name, ref in buffers.items():
        got = np.asarray(sub[name], np.float64)
        if not np.allclose(got, ref, rtol=0, atol=_BUFFER_ATOL):
            raise ConversionError(
                f"{source}: buffer {PREFIX}{name} differs from the MS-CLAP 2023 settings "
                f"(max |diff| {np.abs(got - ref).max():.3g}); this front end cannot run it"
            )
    params: dict = {}
    converted = {}
    for name, path, kind, _ in table:
        value = np.asarray(sub[name])
        if not np.issubdtype(value.dtype, np.floating) or not np.all(np.isfinite(value)):
            raise ConversionError(f"{source}: {PREFIX}{name} is not finite float ({value.dtype})")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = np.ascontiguousarray(_transform(value, kind)).astype(np.float32)
        converted[PREFIX + name] = "htsat/" + "/".join(path) + ("" if kind == "copy" else f" ({kind})")
    ignored = sorted(PREFIX + n for n in IGNORED if n in sub)
    checked = sorted(PREFIX + n for n in buffers)
    return cfg, params, converted, ignored + checked
