"""Modules that hold converted weights, built without a random initialization.

Drawing random initial weights only to overwrite them costs the draws and, on the first call
of a process, the compilation of the random kernels (about 1 s for the two MS-CLAP heads on a
CPU, far more for GPT-2 or HTS-AT). The module is traced for its shapes instead
(`nnx.eval_shape`) and its parameters are filled in from the converted dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

ModuleT = TypeVar("ModuleT", bound=nnx.Module)


def with_params(make: Callable[[], ModuleT], params: Mapping) -> ModuleT:
    """`make()` holding `params`, never randomly initialized.

    Args:
      make: builds the module (called abstractly, under `nnx.eval_shape`).
      params: nested dict of the module's state (as `nnx.State.to_pure_dict` lays it out; list
        indices may be ints or digit strings, as orbax restores them). State it leaves out can
        only be random-stream state (a dropout's key and counter): those get key 0, count 0.

    Returns:
      the module with concrete arrays for every variable.

    Raises:
      ValueError: `params` leaves out a variable that is not random-stream state.
    """
    graphdef, keys, counts, state = nnx.split(nnx.eval_shape(make), nnx.RngKey, nnx.RngCount, ...)
    nnx.replace_by_pure_dict(state, nnx.restore_int_paths(jax.tree.map(jnp.asarray, dict(params))))
    missing = [("/".join(map(str, path)), leaf.shape)
               for path, leaf in jax.tree_util.tree_leaves_with_path(state)
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
        raise ValueError(f"converted params have no value for {len(missing)} variables, "
                         f"e.g. {missing[:3]}")
    keys = jax.tree.map(lambda _: jax.random.key(0), keys)
    counts = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), counts)
    return nnx.merge(graphdef, keys, counts, state)
