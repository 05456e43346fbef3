"""Lane scheduling: many independent iterative items on a fixed number of lanes.

A batch of items that each iterate until their own stopping rule (EM fits, for example)
wastes work when all of them iterate for the slowest. Here the unfinished items are
gathered into `lanes` slots, run there, and scattered back, round after round, until none
is pending. Static shapes throughout (`lanes` is a Python int), so it runs under `jit`.
The scheduling does not change any item's result: each item's iteration only reads its
own state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp

State = TypeVar("State")


def run_in_lanes(state: State, *, pending: Callable[[State], jax.Array],
                 run: Callable[[jax.Array, State, jax.Array], State], lanes: int) -> State:
    """Runs the pending items of `state` on `lanes` lanes until none is pending.

    Args:
      state: a pytree whose leaves have a leading item axis `[N, ...]`.
      pending: state -> `[N]` bool, items that still need to run.
      run: (item indices `[lanes]` int32, lane state (leaves `[lanes, ...]`), live `[lanes]`
        bool) -> lane state after running. Lanes with `live` False hold no item (their
        results are dropped); `run` should keep them cheap.
      lanes: number of lanes per round.

    Returns:
      `state` with every item run until it is no longer pending.
    """
    num_items = jax.tree.leaves(state)[0].shape[0]

    def round_body(st):
        todo = pending(st)
        items = jnp.argsort(~todo, stable=True).astype(jnp.int32)[:lanes]
        live = todo[items]
        out = run(items, jax.tree.map(lambda a: a[items], st), live)
        target = jnp.where(live, items, num_items)  # lanes without an item write nowhere
        return jax.tree.map(lambda a, o: a.at[target].set(o, mode="drop"), st, out)

    return jax.lax.while_loop(lambda st: jnp.any(pending(st)), round_body, state)
