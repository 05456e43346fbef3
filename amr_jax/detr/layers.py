"""Building blocks of QD-DETR: initializers, linear layers, MLPs, input projections.

Initialization follows the PyTorch reference exactly, because it matters for
reproducing its training curves:

* Layers outside the transformer (input projections, prediction heads,
  saliency projections) keep PyTorch's `nn.Linear` default: kernel and bias
  uniform in `±1/sqrt(fan_in)` (`kaiming_uniform_(a=sqrt(5))` for the kernel).
* Inside the transformer every parameter with more than one dimension is
  re-drawn `xavier_uniform_`; biases keep the PyTorch default except the
  attention biases, which are zero.

Kernels are stored `[in, out]` (Flax layout); the uniform bounds above are
symmetric in `in` and `out` where it matters (xavier), so the layout does not
change the distributions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# PyTorch's LayerNorm epsilon (Flax defaults to 1e-6).
LAYER_NORM_EPS = 1e-5
# Initial negative slope of torch.nn.PReLU.
PRELU_INIT = 0.25

Initializer = Callable[..., jax.Array]

xavier_uniform: Initializer = jax.nn.initializers.xavier_uniform()
# Uniform in ±sqrt(3 * (1/3) / fan_in) = ±1/sqrt(fan_in): torch's default Linear kernel.
torch_default_kernel: Initializer = jax.nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform"
)


def torch_default_bias(fan_in: int) -> Initializer:
    """Initializer of a PyTorch `nn.Linear` bias: uniform in `±1/sqrt(fan_in)`."""
    bound = 1.0 / float(fan_in) ** 0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def linear(
    in_features: int,
    out_features: int,
    *,
    rngs: nnx.Rngs,
    xavier: bool,
    zero_bias: bool = False,
) -> nnx.Linear:
    """A `nnx.Linear` initialized like the reference's `nn.Linear`.

    Args:
        in_features: input width.
        out_features: output width.
        rngs: parameter RNGs.
        xavier: True inside the transformer (xavier-uniform kernel), False for
            PyTorch's default kernel.
        zero_bias: zero bias (attention output projections) instead of
            PyTorch's default uniform bias.
    """
    bias_init = jax.nn.initializers.zeros if zero_bias else torch_default_bias(in_features)
    return nnx.Linear(
        in_features,
        out_features,
        kernel_init=xavier_uniform if xavier else torch_default_kernel,
        bias_init=bias_init,
        rngs=rngs,
    )


def layer_norm(num_features: int, *, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm with PyTorch's epsilon and two-pass variance."""
    return nnx.LayerNorm(
        num_features, epsilon=LAYER_NORM_EPS, use_fast_variance=False, rngs=rngs
    )


def activation_layer(name: str) -> nnx.Module | Callable[[jax.Array], jax.Array]:
    """The feed-forward activation of a transformer layer.

    `"prelu"` gives a fresh learnable `nnx.PReLU` (one scalar slope, 0.25 at
    init) so each layer owns its slope, as in the reference.
    """
    if name == "prelu":
        return nnx.PReLU(PRELU_INIT)
    if name == "relu":
        return jax.nn.relu
    if name == "gelu":
        # PyTorch's F.gelu is the exact (erf) form.
        return lambda x: jax.nn.gelu(x, approximate=False)
    raise ValueError(f"unknown activation {name!r}; expected 'prelu', 'relu' or 'gelu'")


class MLP(nnx.Module):
    """Linear layers with ReLU between them (none after the last).

    Maps `[..., in_dim] -> [..., out_dim]` through `num_layers - 1` hidden
    layers of width `hidden_dim`.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        *,
        xavier: bool,
        rngs: nnx.Rngs,
        zero_last_bias: bool = False,
    ):
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nnx.List(
            [
                linear(
                    dims[i],
                    dims[i + 1],
                    xavier=xavier,
                    zero_bias=zero_last_bias and i == num_layers - 1,
                    rngs=rngs,
                )
                for i in range(num_layers)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


class ProjectionBlock(nnx.Module):
    """LayerNorm -> Dropout -> Linear (-> ReLU): the reference's `LinearLayer`."""

    def __init__(
        self, in_dim: int, out_dim: int, *, dropout: float, relu: bool, rngs: nnx.Rngs
    ):
        self.layer_norm = layer_norm(in_dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.linear = linear(in_dim, out_dim, xavier=False, rngs=rngs)
        self.relu = relu

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs) -> jax.Array:
        x = self.layer_norm(x)
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        x = self.linear(x)
        return jax.nn.relu(x) if self.relu else x


class InputProjection(nnx.Module):
    """Stack of `num_layers` `ProjectionBlock`s mapping `[B, N, in_dim] -> [B, N, out_dim]`.

    The reference builds three candidate blocks with ReLU flags
    `[True, True, True]` except index `num_layers - 1`, then keeps the first
    `num_layers`: so the last kept block has no ReLU and, with two blocks, only
    the first has one.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        num_layers: int,
        dropout: float,
        rngs: nnx.Rngs,
    ):
        if not 1 <= num_layers <= 3:
            raise ValueError(f"n_input_proj must be 1, 2 or 3, got {num_layers}")
        relu_flags: Sequence[bool] = [i != num_layers - 1 for i in range(3)]
        dims = [in_dim] + [out_dim] * num_layers
        self.blocks = nnx.List(
            [
                ProjectionBlock(
                    dims[i], dims[i + 1], dropout=dropout, relu=relu_flags[i], rngs=rngs
                )
                for i in range(num_layers)
            ]
        )

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs) -> jax.Array:
        for block in self.blocks:
            x = block(x, deterministic=deterministic, rngs=rngs)
        return x
