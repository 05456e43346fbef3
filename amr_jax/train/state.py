"""Functional training state of an NNX model."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training (and is checkpointed).

    Attributes:
      step: int32 scalar, number of optimizer steps taken.
      params: nnx.State of the model's `nnx.Param` variables.
      opt_state: optax state for `params`.
    """

    step: jax.Array
    params: Any
    opt_state: Any


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, other variables); the latter stay fixed during training."""
    return nnx.split(model, nnx.Param, ...)


def init_state(params: nnx.State, tx: optax.GradientTransformation) -> TrainState:
    """Step 0 state. Parameters are copied: models may initialize several
    parameters from one array, and each leaf needs its own buffer to be donated."""
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def count_params(params: nnx.State) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
