"""HTS-AT, MS-CLAP 2023's audio encoder (`audio_encoder.base.htsat`), in Flax NNX.

Input: log-mel windows from `amr_jax.clap.audio_frontend.log_mel` `[B, T, 64]`
(T = 138 for 1 s at 44.1 kHz). Output: the 768-d `embedding` the released features
hold (`HTSATWrapper.forward -> latent_output`, before the 1024-d projection head).

Pinned from msclap 1.3.3 `models/htsat.py` + `models/config.py` (the yml's audio keys are
not read by `HTSATWrapper`, which builds `HTSAT_Swin_Transformer(config=config)` with its
defaults), in eval mode (`clap.eval()` in `CLAPWrapper.load_clap`):

1. `bn0`: BatchNorm over the 64 mel bins, running statistics, eps 1e-5.
2. `reshape_wav2img`: T < 1024 frames are resized to 1024 by bicubic interpolation along
   time (`F.interpolate(mode="bicubic", align_corners=True)`, A = -0.75, edge samples
   clamped; the mel axis is already 64 = 256 / freq_ratio and is copied); then the
   1024 x 64 map is cut into freq_ratio = 4 time chunks of 256 frames stacked along the
   mel axis: image[r * 64 + f, t] = mel[r * 256 + t, f]  -> `[B, 256, 256]`.
   (T > 1024, i.e. clips over ~10 s at 32 kHz, takes a cropping path not ported: raises.)
3. Patch embedding: 4 x 4 conv, stride 4, 1 -> 96 channels (64 x 64 tokens), LayerNorm.
   No absolute position embedding (`ape=False`).
4. Four Swin stages, depths (2, 2, 6, 2), heads (4, 8, 16, 32), window 8, MLP ratio 4,
   exact-erf GELU, qkv bias, scale head_dim ** -0.5, relative position bias tables
   `[(2w - 1)^2, heads]`; odd blocks use cyclic shift w // 2 with the -100 region mask;
   a stage whose resolution is <= the window uses one window of that size and no shift
   (stage 4: 8 x 8). PatchMerging (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
   x[1::2, 1::2] concatenated, LayerNorm(4C), Linear(4C -> 2C, no bias)) after stages 1-3.
   Dropout / drop-path are identities in eval mode. All LayerNorms eps 1e-5.
5. Final LayerNorm(768). `embedding` = mean over the 8 x 8 tokens (the reference's
   `latent_output`, the average pool of the token-semantic branch's input).
6. Token-semantic module (`enable_tscam=True`, only for `clipwise`): the 8 x 8 token map
   is regrouped to 2 x 32 (freq bin groups c = h mod 2 side by side in time), a
   Conv2d(768 -> 527, kernel (2, 3), padding (0, 1)), mean over time, sigmoid
   (`loss_type="clip_bce"`). The checkpoint's `head.*` Linear is unused by this path.

Layout: NHWC (`[B, H, W, C]`) throughout; H is the 256-row (mel x chunk) axis,
W the 256-column time axis, as in the reference's `[B, C, H, W]`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from amr_jax.clap import materialize
from amr_jax.errors import UsageError

_HI = jax.lax.Precision.HIGHEST
_EPS = 1e-5  # torch LayerNorm / BatchNorm default


@dataclasses.dataclass(frozen=True)
class HTSATConfig:
    """HTS-AT hyper-parameters (defaults: MS-CLAP 2023)."""

    spec_size: int = 256
    patch_size: int = 4
    mel_bins: int = 64
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    num_classes: int = 527

    def __post_init__(self):
        if len(self.depths) != len(self.num_heads):
            raise UsageError(f"depths {self.depths} and num_heads {self.num_heads} differ in length")
        if self.spec_size % self.mel_bins:
            raise UsageError(f"spec_size {self.spec_size} not a multiple of mel_bins {self.mel_bins}")

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def grid(self) -> int:
        return self.spec_size // self.patch_size

    def stage_resolution(self, i: int) -> int:
        return self.grid // 2**i

    def block_window(self, i: int, j: int) -> tuple[int, int]:
        """(window, shift) of block j of stage i, as `SwinTransformerBlock.__init__` sets them."""
        res = self.stage_resolution(i)
        if res <= self.window_size:
            return res, 0
        return self.window_size, (0 if j % 2 == 0 else self.window_size // 2)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["depths"], d["num_heads"] = list(self.depths), list(self.num_heads)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> HTSATConfig:
        d = dict(d)
        d["depths"], d["num_heads"] = tuple(d["depths"]), tuple(d["num_heads"])
        return cls(**d)


# --------------------------------------------------------------------------------------
# Static tables (numpy, built from the config at trace time).


def relative_position_index(window: int) -> np.ndarray:
    """`[w*w, w*w]` int index into the `[(2w-1)^2, heads]` bias table (Swin's layout)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_attention_mask(res: int, window: int, shift: int) -> np.ndarray:
    """`[num_windows, w*w, w*w]` additive mask (0 / -100) of a shifted block."""
    regions = np.zeros((res, res), np.float32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            regions[hs, ws] = label
            label += 1
    n = res // window
    win = regions.reshape(n, window, n, window).transpose(0, 2, 1, 3).reshape(n * n, -1)
    diff = win[:, None, :] - win[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution weights for taps at offsets -1, 0, 1, 2; `[..., 4]`."""
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """`[n_out, n_in]` matrix of torch's 1-d bicubic resize with align_corners=True."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float64)
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    src = scale * np.arange(n_out)
    base = np.floor(src).astype(np.int64)
    w = _cubic_weights(src - base)
    m = np.zeros((n_out, n_in))
    for k in range(4):
        np.add.at(m, (np.arange(n_out), np.clip(base - 1 + k, 0, n_in - 1)), w[:, k])
    return m


# --------------------------------------------------------------------------------------
# Modules.


def _layer_norm(dim: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=_EPS, use_fast_variance=False, rngs=rngs)


class WindowAttention(nnx.Module):
    """Multi-head self-attention inside windows with relative position bias."""

    def __init__(self, dim: int, window: int, heads: int, *, rngs: nnx.Rngs):
        self.window, self.heads = window, heads
        self.qkv = nnx.Linear(dim, 3 * dim, precision=_HI, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, precision=_HI, rngs=rngs)
        self.relative_position_bias_table = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), ((2 * window - 1) ** 2, heads))
        )

    def __call__(self, x: jax.Array, mask: np.ndarray | None) -> jax.Array:
        """x: `[B * nW, N, C]`; mask: `[nW, N, N]` or None. Returns `[B * nW, N, C]`."""
        bw, n, c = x.shape
        hd = c // self.heads
        qkv = self.qkv(x).reshape(bw, n, 3, self.heads, hd).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * hd**-0.5, qkv[1], qkv[2]
        attn = jnp.einsum("bhnd,bhmd->bhnm", q, k, precision=_HI)
        table = self.relative_position_bias_table[...]
        bias = table[relative_position_index(self.window).reshape(-1)].reshape(n, n, -1)
        attn = attn + bias.transpose(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.reshape(bw // nw, nw, self.heads, n, n) + jnp.asarray(mask)[None, :, None]
            attn = attn.reshape(bw, self.heads, n, n)
        attn = jax.nn.softmax(attn, axis=-1)
        out = jnp.einsum("bhnm,bhmd->bnhd", attn, v, precision=_HI).reshape(bw, n, c)
        return self.proj(out)


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(dim, hidden, precision=_HI, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, precision=_HI, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class SwinBlock(nnx.Module):
    """(Shifted-)window attention + MLP, pre-norm residual; x `[B, H, W, C]`."""

    def __init__(self, dim: int, res: int, window: int, shift: int, heads: int,
                 mlp_ratio: float, *, rngs: nnx.Rngs):
        self.res, self.window, self.shift = res, window, shift
        self.norm1 = _layer_norm(dim, rngs)
        self.attn = WindowAttention(dim, window, heads, rngs=rngs)
        self.norm2 = _layer_norm(dim, rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        ws, s = self.window, self.shift
        y = self.norm1(x)
        if s:
            y = jnp.roll(y, (-s, -s), axis=(1, 2))
        y = y.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(-1, ws * ws, c)
        mask = shift_attention_mask(self.res, ws, s) if s else None
        y = self.attn(y, mask)
        y = y.reshape(b, h // ws, w // ws, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(b, h, w, c)
        if s:
            y = jnp.roll(y, (s, s), axis=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nnx.Module):
    """2 x 2 neighbourhood -> LayerNorm(4C) -> Linear(4C -> 2C); `[B, H, W, C] -> [B, H/2, W/2, 2C]`."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.norm = _layer_norm(4 * dim, rngs)
        self.reduction = nnx.Linear(4 * dim, 2 * dim, use_bias=False, precision=_HI, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        parts = (x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2])
        return self.reduction(self.norm(jnp.concatenate(parts, axis=-1)))


class Stage(nnx.Module):
    def __init__(self, cfg: HTSATConfig, i: int, *, rngs: nnx.Rngs):
        dim = cfg.embed_dim * 2**i
        res = cfg.stage_resolution(i)
        self.blocks = nnx.List([
            SwinBlock(dim, res, *cfg.block_window(i, j), cfg.num_heads[i], cfg.mlp_ratio,
                      rngs=rngs)
            for j in range(cfg.depths[i])
        ])
        self.downsample = PatchMerging(dim, rngs=rngs) if i < len(cfg.depths) - 1 else None

    def __call__(self, x: jax.Array) -> jax.Array:
        for block in self.blocks:
            x = block(x)
        return x if self.downsample is None else self.downsample(x)


class HTSAT(nnx.Module):
    """HTS-AT encoder, eval mode: log-mel `[B, T, mel_bins]` -> embedding `[B, 768]`."""

    def __init__(self, cfg: HTSATConfig = HTSATConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, p = cfg.embed_dim, cfg.patch_size
        self.bn0 = nnx.BatchNorm(cfg.mel_bins, use_running_average=True, epsilon=_EPS, rngs=rngs)
        self.patch_embed = nnx.Linear(p * p, d, precision=_HI, rngs=rngs)
        self.patch_norm = _layer_norm(d, rngs)
        self.stages = nnx.List([Stage(cfg, i, rngs=rngs) for i in range(len(cfg.depths))])
        self.norm = _layer_norm(cfg.num_features, rngs)
        self.tscam_kernel = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (2, 3, cfg.num_features, cfg.num_classes))
        )
        self.tscam_bias = nnx.Param(jnp.zeros((cfg.num_classes,)))

    def to_image(self, mel: jax.Array) -> jax.Array:
        """bn0 + bicubic resize + fold: `[B, T, mel_bins] -> [B, spec, spec]`."""
        cfg = self.cfg
        b, t, f = mel.shape
        target = cfg.spec_size * cfg.freq_ratio
        if f != cfg.mel_bins or t > target:
            raise UsageError(f"HTS-AT takes [B, T <= {target}, {cfg.mel_bins}] log-mel, got {mel.shape}")
        x = self.bn0(mel)
        x = jnp.einsum("ot,btf->bof", jnp.asarray(bicubic_matrix(t, target), jnp.float32), x,
                       precision=_HI)
        x = x.reshape(b, cfg.freq_ratio, cfg.spec_size, f).transpose(0, 1, 3, 2)
        return x.reshape(b, cfg.spec_size, cfg.spec_size)

    def tokens(self, mel: jax.Array) -> jax.Array:
        """Final-LayerNorm token map `[B, g, g, num_features]` (g = grid / 2^(stages-1))."""
        cfg = self.cfg
        img = self.to_image(mel)
        b, p, g = img.shape[0], cfg.patch_size, cfg.grid
        patches = img.reshape(b, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(b, g, g, p * p)
        x = self.patch_norm(self.patch_embed(patches))
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def __call__(self, mel: jax.Array) -> jax.Array:
        """The released 768-d feature: `[B, T, mel_bins] -> [B, num_features]`."""
        return self.tokens(mel).mean(axis=(1, 2))

    def clipwise(self, mel: jax.Array) -> jax.Array:
        """Token-semantic clip-level class probabilities `[B, num_classes]` (sigmoid)."""
        x = self.tokens(mel)
        b, h, w, c = x.shape
        groups = self.cfg.freq_ratio
        bins = h // groups
        # rows h = g * bins + k -> [k, g * w + t]: frequency groups laid side by side in time.
        x = x.reshape(b, groups, bins, w, c).transpose(0, 2, 1, 3, 4).reshape(b, bins, groups * w, c)
        x = jnp.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
        n = groups * w
        kernel = self.tscam_kernel[...]
        out = sum(
            jnp.einsum("bktc,kcn->btn", x[:, :, dt:dt + n], kernel[:, dt], precision=_HI)
            for dt in range(3)
        ) + self.tscam_bias[...]
        return jax.nn.sigmoid(out.mean(axis=1))


def build_htsat(cfg: HTSATConfig, params: Mapping) -> HTSAT:
    """An `HTSAT` holding converted params (nested dict as `convert` produces)."""
    return materialize.with_params(lambda: HTSAT(cfg, rngs=nnx.Rngs(0)), params)


def count_params(cfg: HTSATConfig) -> int:
    """Number of learned values (weights + bn0 statistics) of an HTSAT with `cfg`."""
    abstract = nnx.eval_shape(lambda: HTSAT(cfg, rngs=nnx.Rngs(0)))
    _, state = nnx.split(abstract)
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(state)))
