"""Shared by the DETR benchmarks: a median timer and one random SYNTHETIC training batch."""

from __future__ import annotations

import time


def median_ms(fn, repeats: int) -> float:
    """Median wall time of `fn()` in ms over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def random_detr_batch(config, b: int, t: int, l: int):
    """(DetrInputs, DetrTargets): `b` queries of up to `t` frames and `l` tokens, row 0 full.

    Audio rows are 770-d (768 + 2 endpoint features), 1 to `max_windows` target spans per
    row, saliency labels on frames 10-19, positive frames (11, 15) and negatives (2, 40),
    so `t` must exceed 40.
    """
    import numpy as np

    from amr_jax.detr.inputs import DetrInputs, DetrTargets

    if t <= 40:
        raise ValueError(f"the benchmark batch samples frame 40 as a negative: frames {t} <= 40")
    rng = np.random.default_rng(0)
    ctx = rng.integers(t // 2, t + 1, size=b)
    ctx[0] = t
    audio_mask = np.arange(t)[None] < ctx[:, None]
    text_mask = np.arange(l)[None] < rng.integers(4, l + 1, size=b)[:, None]
    inputs = DetrInputs(
        audio=(rng.normal(size=(b, t, 770)) * audio_mask[..., None]).astype(np.float32),
        audio_mask=audio_mask, text=rng.normal(size=(b, l, 768)).astype(np.float32),
        text_mask=text_mask)
    w = config.data.max_windows
    span_mask = np.arange(w)[None] < rng.integers(1, w + 1, size=b)[:, None]
    spans = np.stack([rng.uniform(0.1, 0.9, (b, w)), rng.uniform(0.01, 0.2, (b, w))], -1)
    labels = np.zeros((b, t), np.float32)
    labels[:, 10:20] = 1
    targets = DetrTargets(
        spans=np.where(span_mask[..., None], spans, 0).astype(np.float32), span_mask=span_mask,
        saliency_pos=np.tile([[11, 15]], (b, 1)).astype(np.int32),
        saliency_neg=np.tile([[2, 40]], (b, 1)).astype(np.int32), saliency_labels=labels)
    return inputs, targets


def time_train_step(config, inputs, targets, mesh, repeats: int):
    """Builds the trainer's programs for `config` and times its full train step on one batch.

    Returns:
      (programs, params after the timed steps, device inputs, compile seconds of the first
      step, median ms of the next `repeats` steps).
    """
    import jax

    from amr_jax.train import trainer

    programs, state = trainer.build_programs(config, steps_per_epoch=100,
                                             model_factory=trainer.build_qd_detr, mesh=mesh)
    key = jax.random.PRNGKey(0)
    dev_inputs, dev_targets = programs.shard(inputs), programs.shard(targets)
    holder = {"state": state}

    def step():
        holder["state"], m = programs.train_step(holder["state"], programs.rest, dev_inputs,
                                                 dev_targets, key)
        jax.block_until_ready(m["loss"])

    t0 = time.perf_counter()
    step()
    compile_s = time.perf_counter() - t0
    train_ms = median_ms(step, repeats)
    return programs, holder["state"].params, dev_inputs, compile_s, train_ms
