"""Training speed of QD-DETR vs UVCOM: ms per optimizer step at batch 32, 300 frames (CPU).

  python benchmarks/bench_uvcom.py [--batch=32] [--frames=300] [--tokens=32] [--repeats=3]

Rows (same random, SYNTHETIC batch, same process; median of --repeats after one warm-up):
  - train step (jit): the trainer's full step (`trainer.build_programs`: forward with
    dropout and the negative-pair pass, Hungarian matching of every decoder layer,
    losses, backward, clipping, AdamW) for `qd_detr.py` (QD-DETR) and
    `qd_detr.py:uvcom` (UVCOM backbone + similarity loss 0.5; the same compiled step
    serves both negative regimes, the similarity-selected one being chosen by a traced
    flag);
  - forward (jit, train mode): the model alone, with the negative pass;
  - compile: the first train step (XLA compilation included), seconds.
Parameter counts are printed too.
"""

import sys
from pathlib import Path

from absl import app, flags
from benchlib import median_ms, random_detr_batch, time_train_step

_BATCH = flags.DEFINE_integer("batch", 32, "Queries per step.")
_FRAMES = flags.DEFINE_integer("frames", 300, "Audio frames per query (padded length).")
_TOKENS = flags.DEFINE_integer("tokens", 32, "Text tokens per query (padded length).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (median reported).")


def _measure(arg, b, t, l, repeats):
    import jax
    from flax import nnx

    from amr_jax.detr import model as qd
    from amr_jax.train import trainer
    from experiments.configs import qd_detr

    config = qd_detr.get_config(arg)
    inputs, targets = random_detr_batch(config, b, t, l)
    mesh = trainer.data_mesh()
    programs, params, dev_inputs, compile_s, train_ms = time_train_step(
        config, inputs, targets, mesh, repeats)
    key = jax.random.PRNGKey(0)

    @jax.jit
    def forward(params, inputs):
        model = nnx.merge(programs.graphdef, params, programs.rest)
        return model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=key))

    fwd_ms = median_ms(lambda: jax.block_until_ready(forward(params, dev_inputs)), repeats)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    del qd
    return {"train_ms": train_ms, "forward_ms": fwd_ms, "compile_s": compile_s,
            "params": n_params}


def main(argv):
    del argv
    import jax

    b, t, l = _BATCH.value, _FRAMES.value, _TOKENS.value
    rows = {}
    for name, arg in (("QD-DETR", ""), ("UVCOM", "uvcom")):
        rows[name] = _measure(arg, b, t, l, _REPEATS.value)
        print(f"measured {name}: {rows[name]}", file=sys.stderr, flush=True)
    print(f"\nSYNTHETIC batch {b} x {t} frames x {l} tokens, {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s), median of {_REPEATS.value}\n")
    print(f"{'model':<10} {'params':>12} {'train step ms':>14} {'forward ms':>11} "
          f"{'compile s':>10}")
    for name, r in rows.items():
        print(f"{name:<10} {r['params']:>12,} {r['train_ms']:>14.0f} {r['forward_ms']:>11.0f} "
              f"{r['compile_s']:>10.1f}")
    ratio = rows["UVCOM"]["train_ms"] / rows["QD-DETR"]["train_ms"]
    print(f"\nUVCOM / QD-DETR train step: {ratio:.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    app.run(main)
