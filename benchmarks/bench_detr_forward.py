"""Speed of the QD-DETR model (default audio configuration) on the local devices.

Times three jitted functions on random inputs of the training shape:

* eval forward: deterministic, no negative pass (prediction);
* train forward: dropout on, negative pass on (what a training step runs forward);
* train forward+backward: gradient of a surrogate loss over every output w.r.t.
  the parameters (the model's share of a training step; matching, losses and
  the optimizer update are not included).

Usage:
    .venv/bin/python benchmarks/bench_detr_forward.py --batch=32 --frames=300 --tokens=32

There is no PyTorch column: the reference implementation is not vendored here.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from amr_jax.detr import model as qd
from amr_jax.detr.inputs import DetrInputs

_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.")
_FRAMES = flags.DEFINE_integer("frames", 300, "Padded audio frames.")
_TOKENS = flags.DEFINE_integer("tokens", 32, "Padded text tokens.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed calls per function.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random inputs and parameters.")


def _random_inputs(batch: int, frames: int, tokens: int, seed: int) -> DetrInputs:
    rng = np.random.default_rng(seed)
    audio_len = rng.integers(frames // 2, frames + 1, size=batch)
    text_len = rng.integers(4, tokens + 1, size=batch)
    audio_mask = np.arange(frames)[None] < audio_len[:, None]
    text_mask = np.arange(tokens)[None] < text_len[:, None]
    audio = rng.normal(size=(batch, frames, qd.default_model_config().audio_dim))
    text = rng.normal(size=(batch, tokens, qd.default_model_config().text_dim))
    return DetrInputs(
        audio=jnp.asarray(audio * audio_mask[..., None], jnp.float32),
        audio_mask=jnp.asarray(audio_mask),
        text=jnp.asarray(text * text_mask[..., None], jnp.float32),
        text_mask=jnp.asarray(text_mask),
    )


def _time(fn, *args, steps: int) -> tuple[float, float]:
    """(first call incl. compile, median of `steps` later calls) in seconds."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def run_benchmark(batch: int, frames: int, tokens: int, steps: int, seed: int) -> str:
    """Runs the three timings and returns the result table as text."""
    model = qd.QDDETR(qd.default_model_config(), rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(model)
    inputs = _random_inputs(batch, frames, tokens, seed)
    key = jax.random.key(seed)

    @jax.jit
    def eval_forward(state, inputs):
        return nnx.merge(graphdef, state)(inputs, deterministic=True, negatives=False)

    @jax.jit
    def train_forward(state, inputs, key):
        return nnx.merge(graphdef, state)(
            inputs, deterministic=False, rngs=nnx.Rngs(dropout=key), negatives=True
        )

    def surrogate_loss(state, inputs, key):
        out = train_forward(state, inputs, key)
        return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(out))

    train_grad = jax.jit(jax.grad(surrogate_loss))

    rows = [
        ("eval forward", _time(eval_forward, state, inputs, steps=steps)),
        ("train forward (+negatives)", _time(train_forward, state, inputs, key, steps=steps)),
        ("train forward+backward", _time(train_grad, state, inputs, key, steps=steps)),
    ]
    device = jax.devices()[0]
    lines = [
        f"QD-DETR default config ({qd.count_parameters(model):,} parameters), "
        f"batch {batch}, {frames} frames, {tokens} tokens, "
        f"{device.platform} ({device.device_kind}), {len(jax.devices())} device(s)",
        f"{'function':<28} {'first call (s)':>15} {'ms/call':>10}",
    ]
    for name, (first, median) in rows:
        lines.append(f"{name:<28} {first:>15.2f} {median * 1e3:>10.1f}")
    return "\n".join(lines)


def main(argv):
    del argv
    print(run_benchmark(_BATCH.value, _FRAMES.value, _TOKENS.value, _STEPS.value, _SEED.value))


if __name__ == "__main__":
    app.run(main)
