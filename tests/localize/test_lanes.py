"""Lane scheduling runs every item to its own end, whatever the number of lanes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from amr_jax.localize.lanes import run_in_lanes


@pytest.mark.parametrize("lanes", [1, 2, 3, 7, 20])
def test_each_item_counts_to_its_own_target(lanes):
    # Item i halves its value until it is below target[i]: a different iteration count each.
    start = jnp.asarray(np.linspace(1.0, 1000.0, 11), jnp.float32)
    target = jnp.asarray(np.linspace(0.5, 3.0, 11), jnp.float32)
    state = {"value": start, "steps": jnp.zeros(11, jnp.int32), "done": jnp.zeros(11, bool)}

    def run(items, lane, live):
        def body(st):
            go = ~st["done"]
            value = jnp.where(go, st["value"] / 2, st["value"])
            return {"value": value, "steps": st["steps"] + go,
                    "done": st["done"] | (value < target[items])}
        lane = dict(lane, done=lane["done"] | ~live | (lane["value"] < target[items]))
        return jax.lax.while_loop(lambda st: jnp.any(~st["done"]), body, lane)

    out = jax.jit(lambda s: run_in_lanes(s, pending=lambda st: ~st["done"], run=run,
                                         lanes=lanes))(state)
    # The smallest k with start / 2**k < target (counted in float64; no ties in this data).
    expected_steps = np.floor(np.log2(np.asarray(start, np.float64) / np.asarray(target))) + 1
    np.testing.assert_array_equal(np.asarray(out["steps"]), expected_steps)
    np.testing.assert_allclose(np.asarray(out["value"]), np.asarray(start) / 2.0 ** expected_steps)
    assert bool(jnp.all(out["done"]))
