"""GPT-2 (the MS-CLAP 2023 text encoder) in Flax NNX, inference only.

Follows `transformers.GPT2Model` in eval mode: learned token and position
embeddings, pre-LayerNorm blocks with causal multi-head self-attention scaled by
`1/sqrt(head_dim)` and a tanh-GELU MLP, a final LayerNorm. Dropout is omitted:
MS-CLAP keeps this encoder frozen and runs it in eval mode.

Weight conversion uses an explicit name table (`state_dict_to_params`). GPT-2's
`Conv1D` weights are stored `[in, out]`, the Flax kernel layout, so nothing is
transposed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from amr_jax.clap import materialize

# Full float32 matmuls: embeddings must match the reference on every backend.
_PRECISION = jax.lax.Precision.HIGHEST

_ACTIVATIONS = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu": False}


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """GPT-2 hyperparameters; the defaults are the 124M model MS-CLAP 2023 uses."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.activation_function not in _ACTIVATIONS:
            raise ValueError(
                f"unsupported GPT-2 activation_function {self.activation_function!r}; "
                f"expected one of {sorted(_ACTIVATIONS)}"
            )

    @property
    def inner_dim(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> GPT2Config:
        """Builds a config from a dict, e.g. a HF `config.json`; unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> GPT2Config:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read GPT-2 config {path}: {e}") from e
        if d.get("model_type", "gpt2") != "gpt2":
            raise ValueError(f"{path}: model_type {d['model_type']!r} is not gpt2")
        return cls.from_dict(d)


class _Attention(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        self.n_head = cfg.n_head
        d = cfg.n_embd
        self.c_attn = nnx.Linear(d, 3 * d, precision=_PRECISION, rngs=rngs)
        self.c_proj = nnx.Linear(d, d, precision=_PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        b, l, d = x.shape
        hd = d // self.n_head
        q, k, v = jnp.split(self.c_attn(x), 3, axis=-1)
        q, k, v = (t.reshape(b, l, self.n_head, hd) for t in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=_PRECISION) / np.sqrt(hd)
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v, precision=_PRECISION)
        return self.c_proj(out.reshape(b, l, d))


class _MLP(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        self.approximate = _ACTIVATIONS[cfg.activation_function]
        self.c_fc = nnx.Linear(cfg.n_embd, cfg.inner_dim, precision=_PRECISION, rngs=rngs)
        self.c_proj = nnx.Linear(cfg.inner_dim, cfg.n_embd, precision=_PRECISION, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.c_proj(jax.nn.gelu(self.c_fc(x), approximate=self.approximate))


class _Block(nnx.Module):
    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        eps = cfg.layer_norm_epsilon
        self.ln_1 = nnx.LayerNorm(cfg.n_embd, epsilon=eps, use_fast_variance=False, rngs=rngs)
        self.attn = _Attention(cfg, rngs=rngs)
        self.ln_2 = nnx.LayerNorm(cfg.n_embd, epsilon=eps, use_fast_variance=False, rngs=rngs)
        self.mlp = _MLP(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, allowed: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp(self.ln_2(x))


class GPT2(nnx.Module):
    """GPT-2 body: token ids `[B, L]` -> last hidden states `[B, L, n_embd]`."""

    def __init__(self, config: GPT2Config, *, rngs: nnx.Rngs):
        self.config = config
        self.wte = nnx.Embed(config.vocab_size, config.n_embd, rngs=rngs)
        self.wpe = nnx.Embed(config.n_positions, config.n_embd, rngs=rngs)
        self.h = nnx.List([_Block(config, rngs=rngs) for _ in range(config.n_layer)])
        self.ln_f = nnx.LayerNorm(
            config.n_embd, epsilon=config.layer_norm_epsilon, use_fast_variance=False, rngs=rngs
        )

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Runs the encoder.

        Args:
          input_ids: `[B, L]` integer token ids, `L <= n_positions`.
          attention_mask: `[B, L]` (bool or 0/1); False marks padding keys. Positions
            are `0..L-1` regardless of the mask, as in `GPT2Model` without
            `position_ids`, so right padding leaves the valid rows unchanged.

        Returns:
          `[B, L, n_embd]` float32 hidden states after the final LayerNorm. Rows at
          padded positions are computed but meaningless.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [B, L], got shape {input_ids.shape}")
        b, l = input_ids.shape
        if l > self.config.n_positions:
            raise ValueError(f"sequence length {l} exceeds n_positions={self.config.n_positions}")
        x = self.wte(input_ids) + self.wpe(jnp.arange(l))[None]
        causal = jnp.tril(jnp.ones((l, l), dtype=bool))
        if attention_mask is None:
            allowed = causal[None, None]
        else:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask shape {attention_mask.shape} != input_ids shape "
                    f"{input_ids.shape}"
                )
            allowed = causal[None, None] & attention_mask.astype(bool)[:, None, None, :]
        for block in self.h:
            x = block(x, allowed)
        return self.ln_f(x)


# --------------------------------------------------------------------------------------
# Weight conversion: explicit name table, strict.

# (torch name relative to the GPT-2 root, Flax path inside the GPT2 module's params).
_TOP_TABLE = (
    ("wte.weight", ("wte", "embedding")),
    ("wpe.weight", ("wpe", "embedding")),
    ("ln_f.weight", ("ln_f", "scale")),
    ("ln_f.bias", ("ln_f", "bias")),
)
_BLOCK_TABLE = (
    ("ln_1.weight", ("ln_1", "scale")),
    ("ln_1.bias", ("ln_1", "bias")),
    ("attn.c_attn.weight", ("attn", "c_attn", "kernel")),
    ("attn.c_attn.bias", ("attn", "c_attn", "bias")),
    ("attn.c_proj.weight", ("attn", "c_proj", "kernel")),
    ("attn.c_proj.bias", ("attn", "c_proj", "bias")),
    ("ln_2.weight", ("ln_2", "scale")),
    ("ln_2.bias", ("ln_2", "bias")),
    ("mlp.c_fc.weight", ("mlp", "c_fc", "kernel")),
    ("mlp.c_fc.bias", ("mlp", "c_fc", "bias")),
    ("mlp.c_proj.weight", ("mlp", "c_proj", "kernel")),
    ("mlp.c_proj.bias", ("mlp", "c_proj", "bias")),
)
# Causal-mask buffers that older transformers versions saved with the weights
# (MS-CLAP's 2023 checkpoints hold them); they carry no learned values.
IGNORED_BLOCK_BUFFERS = ("attn.bias", "attn.masked_bias")
_BLOCK_RE = re.compile(r"^h\.(\d+)\.(.+)$")


def num_layers_in(names) -> int:
    """Number of transformer blocks `h.<i>.*` among GPT-2 root-relative names."""
    idx = {int(m.group(1)) for n in names if (m := _BLOCK_RE.match(n))}
    if not idx:
        return 0
    if idx != set(range(max(idx) + 1)):
        raise ValueError(f"GPT-2 blocks are not numbered 0..n-1: found {sorted(idx)}")
    return max(idx) + 1


def config_from_weights(weights: Mapping[str, np.ndarray], *, n_head: int) -> GPT2Config:
    """Infers a GPT2Config from root-relative weights; `n_head` cannot be inferred."""
    for name in ("wte.weight", "wpe.weight", "h.0.mlp.c_fc.weight"):
        if name not in weights:
            raise KeyError(f"GPT-2 weights lack {name!r}")
    vocab, d = weights["wte.weight"].shape
    return GPT2Config(
        vocab_size=int(vocab),
        n_positions=int(weights["wpe.weight"].shape[0]),
        n_embd=int(d),
        n_layer=num_layers_in(weights),
        n_head=n_head,
        n_inner=int(weights["h.0.mlp.c_fc.weight"].shape[1]),
    )


def expected_shapes(cfg: GPT2Config) -> dict[str, tuple[int, ...]]:
    """Root-relative torch names -> shapes for `cfg`."""
    d, inner = cfg.n_embd, cfg.inner_dim
    shapes = {
        "wte.weight": (cfg.vocab_size, d),
        "wpe.weight": (cfg.n_positions, d),
        "ln_f.weight": (d,),
        "ln_f.bias": (d,),
    }
    block = {
        "ln_1.weight": (d,), "ln_1.bias": (d,),
        "attn.c_attn.weight": (d, 3 * d), "attn.c_attn.bias": (3 * d,),
        "attn.c_proj.weight": (d, d), "attn.c_proj.bias": (d,),
        "ln_2.weight": (d,), "ln_2.bias": (d,),
        "mlp.c_fc.weight": (d, inner), "mlp.c_fc.bias": (inner,),
        "mlp.c_proj.weight": (inner, d), "mlp.c_proj.bias": (d,),
    }
    for i in range(cfg.n_layer):
        shapes.update({f"h.{i}.{k}": v for k, v in block.items()})
    return shapes


def is_ignored_name(name: str) -> bool:
    """True for root-relative names that are known non-weights (mask buffers)."""
    m = _BLOCK_RE.match(name)
    return bool(m) and m.group(2) in IGNORED_BLOCK_BUFFERS


def state_dict_to_params(
    weights: Mapping[str, np.ndarray], cfg: GPT2Config, *, source: str = "GPT-2 weights"
) -> tuple[dict, list[str], list[str]]:
    """Converts root-relative torch names to the GPT2 module's nested param dict.

    Args:
      weights: name -> float array, names relative to the GPT-2 root (`wte.weight`,
        `h.0.attn.c_attn.weight`, ...).
      cfg: the configuration the weights must match.
      source: shown in error messages (file name and prefix).

    Returns:
      (params, converted names, ignored names). Params is a nested dict with
      integer block indices under "h".

    Raises:
      KeyError: a missing or unexpected name (all of them listed).
      ValueError: a wrong shape or a non-finite value.
    """
    shapes = expected_shapes(cfg)
    missing = sorted(set(shapes) - set(weights))
    unexpected = sorted(n for n in weights if n not in shapes and not is_ignored_name(n))
    if missing or unexpected:
        raise KeyError(
            f"{source}: GPT-2 weights do not match the name table; missing {missing}, "
            f"unexpected {unexpected}"
        )
    params: dict = {"h": {i: {} for i in range(cfg.n_layer)}}
    table = [(t, p) for t, p in _TOP_TABLE]
    for i in range(cfg.n_layer):
        table += [(f"h.{i}.{t}", ("h", i) + p) for t, p in _BLOCK_TABLE]
    for torch_name, path in table:
        value = np.asarray(weights[torch_name])
        if value.shape != shapes[torch_name]:
            raise ValueError(
                f"{source}: {torch_name} has shape {value.shape}, expected "
                f"{shapes[torch_name]}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{source}: {torch_name} has non-float dtype {value.dtype}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{source}: {torch_name} has non-finite values")
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value.astype(np.float32)
    ignored = sorted(n for n in weights if is_ignored_name(n))
    return params, [t for t, _ in table], ignored


def build_gpt2(cfg: GPT2Config, params: Mapping) -> GPT2:
    """Builds a GPT2 module holding `params` (nested dict as from `state_dict_to_params`).

    The module is created abstractly first, so no random 124M-parameter
    initialization is paid for. Block indices may be ints or digit strings (as
    restored by orbax).
    """
    return materialize.with_params(lambda: GPT2(cfg, rngs=nnx.Rngs(0)), params)
