"""QD-DETR training speed: ms per optimizer step at batch 32, 300 frames.

  python benchmarks/bench_train_detr.py [--batch=32] [--frames=300] [--tokens=32] [--repeats=5]
      [--components=true] [--reference_rows=true] [--full_steps=true]

Rows (same random batch, same run; median of --repeats after one warm-up):
  - train step (jit): the trainer's full step (forward with dropout and the
    negative-pair pass, on-device Hungarian matching of both decoder layers,
    losses, backward, clipping, AdamW) on the default (reference) model;
  - forward (jit, train mode): the model alone;
  - criterion (jit): matching + losses on fixed model outputs;
  - criterion, reference style: per-sample scipy `linear_sum_assignment` on
    host + torch losses, the way the reference computes the same objective.
The default model has no torch counterpart here, so the end-to-end reference
number is not measured; the criterion rows compare the part that moved from
host to device. Compile time of the train step is reported separately.

With --components (default), a second table gives the cost of each seed-003
component (configs `qd_detr.py:<variant>`) next to plain QD-DETR on the same
batch: the jitted train step, the jitted predict step (forward + post-
processing, batch --batch) and the host-side target construction
(`make_detr_batch`, where dense saliency labels are built). A component that
leaves a program unchanged shows "= plain" (dense saliency changes no device
program; short proposals change only the predict step). A third table times
only the part each component changes (criterion value + gradient on fixed
outputs, post-processing, host targets), which on a shared CPU is far less
noisy than differences of multi-second full steps (`--full_steps=false` skips
the full steps).
"""

import sys
import time
from pathlib import Path

from absl import app, flags
from benchlib import median_ms, random_detr_batch, time_train_step

_BATCH = flags.DEFINE_integer("batch", 32, "Queries per step.")
_FRAMES = flags.DEFINE_integer("frames", 300, "Audio frames per query (padded length).")
_TOKENS = flags.DEFINE_integer("tokens", 32, "Text tokens per query (padded length).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median reported).")
_DROPOUT_MASKS = flags.DEFINE_enum("dropout_masks", "threefry", ["threefry", "hash"],
                                   "config.train.dropout_masks of our model (hash: opt-in "
                                   "hashed masks, amr_jax/detr/dropout.py).")
_COMPONENTS = flags.DEFINE_bool("components", True, "Also time each seed-003 component.")
_REFERENCE_ROWS = flags.DEFINE_bool("reference_rows", True,
                                    "Time the first table (ours vs the reference style).")
_FULL_STEPS = flags.DEFINE_bool("full_steps", True,
                                "In the component tables, also time full train / predict steps.")

_TORCH_STEP = flags.DEFINE_bool("torch_step", True,
                                "Time the whole step of the torch transcription too "
                                "(benchmarks/torch_train_step.py).")


def _torch_device():
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_train_step_ms(inputs, targets, config):
    """ms per step of the reference-style torch step on the same batch (same model sizes)."""
    import torch
    from torch_qd_detr import TorchQDDETR
    from torch_train_step import TorchTrainStep

    torch.manual_seed(0)
    m = config.model
    model = TorchQDDETR(d=m.hidden_dim, nhead=m.nheads, dim_ff=m.dim_feedforward,
                        t2v_layers=m.t2v_layers, enc_layers=m.enc_layers,
                        dec_layers=m.dec_layers, num_queries=m.num_queries,
                        max_q_l=m.max_q_l, dropout=m.dropout,
                        input_dropout=m.input_dropout)
    step = TorchTrainStep(model, inputs, targets, device=_torch_device())
    return median_ms(step, _REPEATS.value)


def main(argv):
    del argv
    import jax
    import numpy as np
    from flax import nnx

    from amr_jax.train import trainer
    from experiments.configs import qd_detr

    b, t, l = _BATCH.value, _FRAMES.value, _TOKENS.value
    config = qd_detr.get_config()
    config.train.dropout_masks = _DROPOUT_MASKS.value
    inputs, targets = random_detr_batch(config, b, t, l)
    audio_mask, span_mask, labels = inputs.audio_mask, targets.span_mask, targets.saliency_labels

    mesh = trainer.data_mesh()
    if not _REFERENCE_ROWS.value:
        _component_tables(inputs, targets, mesh, repeats=_REPEATS.value)
        return
    programs, params, dev_inputs, compile_s, train_ms = time_train_step(
        config, inputs, targets, mesh, _REPEATS.value)
    key, dev_targets = jax.random.PRNGKey(0), programs.shard(targets)

    @jax.jit
    def forward(params, inputs):
        model = nnx.merge(programs.graphdef, params, programs.rest)
        return model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=key))

    fwd_ms = median_ms(lambda: jax.block_until_ready(forward(params, dev_inputs)), _REPEATS.value)
    outputs = jax.device_get(forward(params, dev_inputs))
    crit = jax.jit(programs.criterion)
    crit_ms = median_ms(
        lambda: jax.block_until_ready(crit(outputs, dev_targets, dev_inputs.audio_mask)),
        _REPEATS.value)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "detr"))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    from torch_reference import torch_layer_losses, torch_saliency

    def torch_criterion():
        tgts = [torch.tensor(targets.spans[i][span_mask[i]]) for i in range(b)]
        for layer in [outputs] + list(outputs["aux_outputs"]):
            torch_layer_losses(torch.tensor(np.asarray(layer["pred_logits"])),
                               torch.tensor(np.asarray(layer["pred_spans"])), tgts, eos_coef=0.1)
        torch_saliency(torch.tensor(np.asarray(outputs["saliency_scores"])),
                       torch.tensor(np.asarray(outputs["saliency_scores_neg"])),
                       torch.tensor(labels), torch.tensor(audio_mask),
                       torch.tensor(targets.saliency_pos).long(),
                       torch.tensor(targets.saliency_neg).long(), tau=0.5, num_ranks=12, margin=0.2)

    ref_ms = median_ms(torch_criterion, _REPEATS.value)
    torch_step_ms = _torch_train_step_ms(inputs, targets, config) if _TORCH_STEP.value else None

    dev = jax.devices()[0]
    print(f"QD-DETR training speed, batch {b}, {t} frames, {l} tokens, {mesh.size} x "
          f"{dev.platform} ({dev.device_kind}), torch threads {torch.get_num_threads()}, "
          f"our dropout masks: {_DROPOUT_MASKS.value}")
    print(f"{'row':<44} {'ms':>10}")
    print("-" * 55)
    for name, ms in [("train step (jit), ours", train_ms),
                     ("forward, train mode (jit), ours", fwd_ms),
                     ("criterion: matching + losses (jit), ours", crit_ms),
                     ("criterion, scipy + torch (reference style)", ref_ms),
                     (f"train step, torch transcription ({_torch_device()})", torch_step_ms)]:
        if ms is not None:
            print(f"{name:<44} {ms:>10.1f}")
    if torch_step_ms is not None:
        print(f"{'torch step / our step':<44} {torch_step_ms / train_ms:>10.2f}x")
    print(f"{'train step compile (s)':<44} {compile_s:>10.1f}")
    if _COMPONENTS.value:
        _component_tables(inputs, targets, mesh, repeats=_REPEATS.value)


def _component_tables(inputs, targets, mesh, *, repeats):
    if _FULL_STEPS.value:
        _component_table(inputs, targets, mesh, repeats=repeats)
    _isolated_table(inputs, targets, repeats=max(repeats, 20))


# Which programs a component changes: (train step, predict step, host targets).
COMPONENTS = (("plain QD-DETR", None, (True, True, True)),
              ("+ quality head, loss, re-ranking", "quality", (True, True, False)),
              ("+ boundary hard negatives", "boundary", (True, False, False)),
              ("+ dense all-window saliency", "dense_saliency", (False, False, True)),
              ("+ short proposals + NMS", "short", (False, True, False)),
              ("+ all components", "all", (True, True, True)))


def _host_split(batch, frames, tokens, seed=0):
    """In-memory split of `batch` queries over `frames`-frame recordings, 1-5 windows each."""
    import numpy as np

    from amr_jax.data.loader import Split
    from amr_jax.data.records import QueryRecord

    rng = np.random.default_rng(seed)
    audio = {f"v{i}": rng.normal(size=(frames, 768)).astype(np.float32) for i in range(4)}
    records, text = [], {}
    for i in range(batch):
        k = int(rng.integers(1, 6))
        st = np.sort(rng.choice(frames - 10, k, replace=False)).astype(np.float64)
        win = np.stack([st, st + rng.integers(1, 10, k)], -1)
        rec = QueryRecord(qid=i, query="q", duration=float(frames), vid=f"v{i % 4}",
                          windows=win.astype(np.float32), raw_windows=win)
        records.append(rec)
        text[rec.key] = rng.normal(size=(tokens, 768)).astype(np.float32)
    return Split(records=records, audio=audio, text=text, vids=list(audio),
                 annotations=Path("synthetic.jsonl"))


def _component_table(inputs, targets, mesh, *, repeats):
    import jax
    import numpy as np

    from amr_jax.detr.inputs import make_detr_batch
    from amr_jax.train import trainer
    from experiments.configs import qd_detr

    b, t, _ = inputs.audio.shape
    key = jax.random.PRNGKey(0)
    duration = np.full((b,), float(t), np.float32)
    split = _host_split(b, t, inputs.text.shape[1])
    # Compile (and warm up) every program first, then time them in interleaved
    # rounds, so that a change of load on a shared machine hits every row alike.
    calls = {}
    for name, variant, changes in COMPONENTS:
        config = qd_detr.get_config(variant)
        programs, state = trainer.build_programs(config, steps_per_epoch=100,
                                                 model_factory=trainer.build_qd_detr, mesh=mesh)
        dev_inputs, dev_targets = programs.shard(inputs), programs.shard(targets)
        holder = {"state": state}

        def train(programs=programs, holder=holder, dev_inputs=dev_inputs,
                  dev_targets=dev_targets):
            holder["state"], m = programs.train_step(holder["state"], programs.rest, dev_inputs,
                                                     dev_targets, key)
            jax.block_until_ready(m["loss"])

        def predict(programs=programs, holder=holder, dev_inputs=dev_inputs):
            jax.block_until_ready(programs.predict_step(
                holder["state"].params, programs.rest, dev_inputs, programs.shard(duration)))

        def host(config=config, rng=np.random.default_rng(0)):
            make_detr_batch(split, split.records, max_frames=t, max_tokens=config.data.max_tokens,
                            max_windows=config.data.max_windows, rng=rng,
                            saliency_label_mode=config.data.saliency_labels)

        for column, (changed, fn) in enumerate(zip(changes, (train, predict, host))):
            if changed:
                fn()
                calls[name, column] = fn
        print(f"  compiled {name}", file=sys.stderr, flush=True)
    times = {k: [] for k in calls}
    for r in range(repeats):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{repeats}", file=sys.stderr, flush=True)
    print()
    print(f"Seed-003 components, ms per call (batch {b}, {t} frames; median of {repeats} "
          "interleaved rounds; '= plain': program unchanged)")
    print(f"{'component':<36} {'train step':>11} {'predict step':>13} {'host targets':>13}")
    print("-" * 76)
    for name, _, _ in COMPONENTS:
        cells = [f"{1e3 * sorted(times[name, c])[repeats // 2]:.1f}" if (name, c) in times
                 else "= plain" for c in range(3)]
        print(f"{name:<36} {cells[0]:>11} {cells[1]:>13} {cells[2]:>13}")


def _isolated_table(inputs, targets, *, repeats):
    """The part of a step each component changes, timed alone (ms-scale, so many repeats).

    criterion: matching + losses (jit, value and gradient w.r.t. the outputs) on fixed
    random model outputs; post-processing (jit) on fixed outputs; host targets as in
    `_component_table`. Interleaved rounds, median.
    """
    import jax
    import numpy as np

    from amr_jax.detr.criterion import build_criterion
    from amr_jax.detr.inputs import make_detr_batch
    from amr_jax.detr.postprocess import build_postprocess
    from experiments.configs import qd_detr

    b, t, _ = inputs.audio.shape
    rng = np.random.default_rng(1)
    q = 10

    def layer():
        spans = np.stack([rng.uniform(0.1, 0.9, (b, q)), rng.uniform(0.02, 0.4, (b, q))], -1)
        return {"pred_logits": rng.normal(size=(b, q, 2)).astype(np.float32),
                "pred_spans": spans.astype(np.float32),
                "pred_quality": rng.uniform(0, 1, (b, q)).astype(np.float32)}

    outputs = dict(layer(), aux_outputs=(layer(),),
                   saliency_scores=rng.normal(size=(b, t)).astype(np.float32),
                   saliency_scores_neg=rng.normal(size=(b, t)).astype(np.float32))
    outputs = jax.device_put(outputs)
    duration = np.full((b,), float(t), np.float32)
    split = _host_split(b, t, inputs.text.shape[1])
    calls = {}
    for name, variant, changes in COMPONENTS:
        config = qd_detr.get_config(variant)
        if changes[0]:
            crit = build_criterion(config.loss)
            grad = jax.jit(jax.value_and_grad(
                lambda o, crit=crit: crit(o, targets, inputs.audio_mask)[0]))
            calls[name, 0] = lambda grad=grad: jax.block_until_ready(grad(outputs))
        if changes[1]:
            post = jax.jit(build_postprocess(config.postprocess, clip_length=1.0))
            calls[name, 1] = lambda post=post: jax.block_until_ready(
                post(outputs, inputs.audio_mask, duration))
        if changes[2]:
            calls[name, 2] = lambda config=config, r=np.random.default_rng(0): make_detr_batch(
                split, split.records, max_frames=t, max_tokens=config.data.max_tokens,
                max_windows=config.data.max_windows, rng=r,
                saliency_label_mode=config.data.saliency_labels)
    for fn in calls.values():
        fn()
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    print()
    print(f"Seed-003 components, the changed part alone, ms per call (batch {b}, {t} frames; "
          f"median of {repeats} interleaved rounds)")
    print(f"{'component':<36} {'loss+grad':>11} {'postprocess':>13} {'host targets':>13}")
    print("-" * 76)
    for name, _, _ in COMPONENTS:
        cells = [f"{1e3 * sorted(times[name, c])[repeats // 2]:.2f}" if (name, c) in times
                 else "= plain" for c in range(3)]
        print(f"{name:<36} {cells[0]:>11} {cells[1]:>13} {cells[2]:>13}")


if __name__ == "__main__":
    app.run(main)
