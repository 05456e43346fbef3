"""QD-DETR training loop: `train_and_evaluate(config, workdir)`.

One jitted step (forward with dropout, on-device Hungarian matching, losses,
AdamW) over batches sharded along a one-axis ("data") mesh of all local
devices, parameters replicated. The run resumes from the latest checkpoint in
the workdir, evaluates on the validation split every epoch with the official
metrics and keeps the parameters of the best epoch (by `train.best_metric`).

On several processes (multi-controller JAX, `amr_jax.distributed`) the mesh spans every
process's devices, each process loads and batches only its shard of the training split
(`pipeline` module docstring), validation outputs are gathered to every host, and only the
primary process writes config.json, metrics.jsonl, epoch_progress.json and best.json
(orbax checkpoint saves are collective).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from amr_jax import distributed
from amr_jax.compiled import CompiledCache
from amr_jax.data import sources
from amr_jax.data.loader import Split
from amr_jax.data.records import is_annotated
from amr_jax.detr.criterion import SetCriterion, build_criterion
from amr_jax.detr.inputs import DetrInputs, DetrTargets
from amr_jax.detr.layout import get_layout, resolve_run_config
from amr_jax.detr.postprocess import build_postprocess
from amr_jax.errors import AmrError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.io_utils import atomic_write_text
from amr_jax.train import pipeline
from amr_jax.train.checkpointing import RunCheckpoints, restore_params_strict
from amr_jax.train.optimizer import make_optimizer
from amr_jax.train.state import TrainState, count_params, init_state, split_model

ModelFactory = Callable[[ml_collections.ConfigDict, nnx.Rngs], nnx.Module]
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "epoch_progress.json"


class NonFiniteLossError(AmrError, FloatingPointError):
    """Raised when a training step produces a NaN or infinite loss."""

    hint = "lower the learning rate or check the batch's features; the run resumes from the last checkpoint"


BACKBONES = ("qd_detr", "uvcom")


def build_qd_detr(model_config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> nnx.Module:
    """The default model factory: `model.backbone` "qd_detr" (`amr_jax.detr.model.QDDETR`)
    or "uvcom" (`amr_jax.detr.uvcom.UVCOM`)."""
    if model_config.backbone == "uvcom":
        from amr_jax.detr.uvcom import UVCOM  # noqa: PLC0415
        return UVCOM(model_config, rngs=rngs)
    if model_config.backbone != "qd_detr":
        raise ValueError(f"model.backbone={model_config.backbone!r}; expected one of {BACKBONES}")
    from amr_jax.detr.model import QDDETR  # noqa: PLC0415 (keeps this module importable alone)
    return QDDETR(model_config, rngs=rngs)


def data_mesh(devices=None) -> jax.sharding.Mesh:
    """One-axis mesh named "data" over `devices` (default: all local devices)."""
    devices = jax.local_devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), ("data",))


def _check_divisible(batch_size: int, mesh: jax.sharding.Mesh, what: str) -> None:
    if batch_size % mesh.size:
        where = "global" if mesh.is_multi_process else "local"
        raise ValueError(f"{what} {batch_size} is not divisible by the {mesh.size} {where} "
                         "devices")


def save_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> None:
    if not distributed.is_primary():
        return
    atomic_write_text(Path(workdir) / CONFIG_FILE, config.to_json(indent=2) + "\n")


def load_config(workdir: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (locked)."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a training workdir (no {CONFIG_FILE})")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    if "layout" not in config.data:
        # Workdirs written before input layouts existed were trained on the
        # lighthouse row ([tef ‖ audio], normalized text cut to max_tokens).
        logging.warning("%s has no data.layout: reading it as the lighthouse layout", path)
        config.data.layout = "lighthouse"
    _fill_missing_defaults(config, path)
    config.lock()
    return config


def _fill_missing_defaults(config: ml_collections.ConfigDict, path: Path) -> None:
    """Adds fields that did not exist when the workdir was written, with their defaults.

    Every switch added since (seed-003 components, data sources) defaults to "off", so an
    older run is read as what it was trained with.
    """
    # amr_jax/configs/qd_detr.py is the one home of the defaults (imported late: it imports
    # the model config).
    from amr_jax.configs import qd_detr

    added = []

    def fill(saved, defaults, prefix):
        for key, value in defaults.items():
            if key not in saved:
                saved[key] = value
                added.append(prefix + key)
            elif isinstance(value, ml_collections.ConfigDict) and isinstance(
                    saved[key], ml_collections.ConfigDict):
                fill(saved[key], value, f"{prefix}{key}.")

    fill(config, qd_detr.get_config(), "")
    if added:
        logging.info("%s predates %s; using their defaults", path, ", ".join(added))


def load_data_split(annotations: str, audio_dir: str, text_dir: str, *, num_workers: int,
                    source: str = "folders", data_dir: str = "", split: str = "",
                    select=None) -> Split:
    """Folders by default; `source="tfds:<name>"` reads TFDS split `split` (amr_jax.data.sources).

    `select`: keeps some queries before their features are read (`load_split`)."""
    return sources.load_source(source, annotations=annotations, audio_dir=audio_dir,
                               text_dir=text_dir, data_dir=data_dir, split=split or None,
                               # One progress bar per run, not one per host.
                               num_workers=num_workers, progress=distributed.is_primary(),
                               select=select)


class Programs:
    """The jitted train and predict functions of one model / objective / optimizer."""

    def __init__(self, graphdef: nnx.GraphDef, rest: nnx.State, criterion: SetCriterion,
                 tx: optax.GradientTransformation, postprocess_config: ml_collections.ConfigDict,
                 clip_length: float, mesh: jax.sharding.Mesh, *,
                 neg_choose_step: int | None = None):
        """`neg_choose_step`: with a UVCOM model, the step from which its negative pairs use
        the least similar text (`train.neg_choose_epoch` epochs); None for QD-DETR."""
        self.graphdef, self.criterion, self.tx = graphdef, criterion, tx
        self.neg_choose_step = neg_choose_step
        self.mesh = mesh
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.sharded = NamedSharding(mesh, PartitionSpec("data"))
        self.rest = jax.device_put(rest, self.replicated)
        self._post = build_postprocess(postprocess_config, clip_length=clip_length)
        self.train_step = jax.jit(self._train_step, donate_argnums=(0,))
        self.predict_step = jax.jit(self._predict_step)

    def _model(self, params, rest):
        return nnx.merge(self.graphdef, params, rest)

    def _train_step(self, state: TrainState, rest, inputs: DetrInputs, targets: DetrTargets,
                    base_key: jax.Array):
        key = jax.random.fold_in(base_key, state.step)

        def loss_fn(params):
            model = self._model(params, rest)
            extra = {}
            if self.neg_choose_step is not None:
                extra["select_negatives"] = state.step >= self.neg_choose_step
            outputs = model(inputs, deterministic=False, rngs=nnx.Rngs(dropout=key), **extra)
            return self.criterion(outputs, targets, inputs.audio_mask)

        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(terms, loss=loss, grad_norm=optax.tree.norm(grads))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    def _predict_step(self, params, rest, inputs: DetrInputs, duration: jax.Array):
        outputs = self._model(params, rest)(inputs, deterministic=True)
        return self._post(outputs, inputs.audio_mask, duration)

    def shard(self, tree):
        """Whole numpy batches (the same on every process) -> arrays sharded by rows."""
        if self.mesh.is_multi_process:
            return distributed.replicated_batch(tree, self.mesh)
        return jax.device_put(tree, self.sharded)

    def shard_local(self, tree):
        """This process's rows of a batch -> the global batch (`shard` on one process)."""
        if self.mesh.is_multi_process:
            return distributed.global_batch(tree, self.mesh)
        return jax.device_put(tree, self.sharded)

    def predict_split(self, params, split: Split, data_config: ml_collections.ConfigDict, *,
                      batch_size: int, pad_last: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Windows [N, K, 3] and valid [N, K] for every query of `split`, in file order.

        `batch_size` is rounded up to a multiple of the device count (padding
        rows are discarded). `pad_last=False` runs the last batch partial (needs a
        one-device mesh unless it divides evenly).
        """
        batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
        windows, valid = [], []
        for inputs, batch, num_valid in pipeline.eval_batches(split, data_config,
                                                              batch_size=batch_size,
                                                              pad_last=pad_last):
            w, v = self.predict_step(params, self.rest, self.shard(inputs),
                                     self.shard(jnp.asarray(batch.duration)))
            w, v = distributed.gather((w, v))  # jax.device_get on one process
            windows.append(w[:num_valid])
            valid.append(v[:num_valid])
        return np.concatenate(windows), np.concatenate(valid)


def _programs_key(config, steps_per_epoch, model_factory, mesh) -> tuple:
    parts = {k: config[k].to_json() for k in ("model", "loss", "optim", "postprocess")}
    parts["neg_choose_epoch"] = config.train.neg_choose_epoch
    parts["dropout_masks"] = config.train.dropout_masks
    parts["layout"] = config.data.layout
    return (json.dumps(parts, sort_keys=True), config.seed, config.data.clip_length,
            steps_per_epoch, model_factory, tuple(d.id for d in mesh.devices.flat))


SALIENCY_LABEL_MODES = ("first_window", "all_windows")
INIT_FROM_CHECKPOINTS = ("best", "latest")
DROPOUT_MASKS = ("threefry", "hash")  # amr_jax/detr/dropout.py


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks that the seed-003 switches are consistent (raises ValueError naming the field)."""
    needs_quality = [name for name, on in (
        ("loss.quality_weight > 0", config.loss.quality_weight > 0),
        ("postprocess.quality_rerank", config.postprocess.quality_rerank)) if on]
    if needs_quality and not config.model.quality_head:
        raise ValueError(f"{' and '.join(needs_quality)} need model.quality_head = True")
    if config.data.saliency_labels not in SALIENCY_LABEL_MODES:
        raise ValueError(f"data.saliency_labels={config.data.saliency_labels!r}; expected one "
                         f"of {SALIENCY_LABEL_MODES}")
    if config.model.backbone not in BACKBONES:
        raise ValueError(f"model.backbone={config.model.backbone!r}; expected one of {BACKBONES}")
    if config.loss.sim_weight > 0 and config.model.backbone != "uvcom":
        raise ValueError("loss.sim_weight > 0 needs model.backbone = 'uvcom'")
    if config.train.dropout_masks not in DROPOUT_MASKS:
        raise ValueError(f"train.dropout_masks={config.train.dropout_masks!r}; expected one of "
                         f"{DROPOUT_MASKS}")
    if config.train.init_from_checkpoint not in INIT_FROM_CHECKPOINTS:
        raise ValueError(f"train.init_from_checkpoint={config.train.init_from_checkpoint!r}; "
                         f"expected one of {INIT_FROM_CHECKPOINTS}")


def build_programs(config: ml_collections.ConfigDict, *, steps_per_epoch: int,
                   model_factory: ModelFactory, mesh: jax.sharding.Mesh,
                   cache: CompiledCache | None = None) -> tuple[Programs, TrainState]:
    """Model, objective, optimizer and initial (replicated) state from a config.

    `cache`: owned by the caller; a later call with the same model, objective, optimizer and
    mesh that passes the same cache (a pretrain -> fine-tune sequence, a resumed run in one
    process) reuses the compiled programs. None builds them for this call alone.
    """
    validate_config(config)
    # UVCOM splits the audio row by the layout's order: taken from data.layout here, so a
    # workdir's config (predict, Predictor) and a resolved run config build the same model.
    model_config = ml_collections.ConfigDict(config.model.to_dict())
    model_config.tef_first = get_layout(config.data.layout).tef_first
    model_config.lock()
    model = model_factory(model_config, nnx.Rngs(config.seed))
    if config.train.dropout_masks == "hash":
        from amr_jax.detr import dropout  # noqa: PLC0415

        dropout.use_hashed_masks(model)
    graphdef, params, rest = split_model(model)

    def build() -> Programs:
        tx = make_optimizer(config.optim, steps_per_epoch)
        neg_choose_step = (config.train.neg_choose_epoch * steps_per_epoch
                           if config.model.backbone == "uvcom" else None)
        return Programs(graphdef, rest, build_criterion(config.loss), tx, config.postprocess,
                        config.data.clip_length, mesh, neg_choose_step=neg_choose_step)

    cache = CompiledCache() if cache is None else cache
    programs, _ = cache.get_or_build(_programs_key(config, steps_per_epoch, model_factory, mesh),
                                     build)
    state = jax.device_put(init_state(params, programs.tx), programs.replicated)
    return programs, state


def init_from_pretrained(config: ml_collections.ConfigDict, programs: Programs,
                         state: TrainState) -> TrainState:
    """Step-0 state holding the parameters of another run (`config.train.init_from`).

    The pretraining workdir's best checkpoint (`init_from_checkpoint = "best"`,
    its latest one when it has no best) or latest one (`"latest"`) is loaded
    strictly (same parameter names and shapes, every difference listed); the
    optimizer state and the step counter are fresh, as in the reference
    fine-tuning (which loads only the model weights).
    """
    params, where = restore_params_strict(
        config.train.init_from, state, prefer_best=config.train.init_from_checkpoint == "best")
    logging.info("initialized from the %s of %s (fresh optimizer, step 0)", where,
                 config.train.init_from)
    return jax.device_put(init_state(params, programs.tx), programs.replicated)


def _mean_metrics(history: list[dict]) -> dict[str, float]:
    host = jax.device_get(history)
    return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


@dataclasses.dataclass
class _PendingStep:
    """A dispatched step whose loss is checked later (so dispatch runs ahead of the host)."""

    metrics: dict
    step: int          # global step count once this step is done (1-based)
    epoch: int
    index: int         # batch index within the epoch

    @property
    def loss(self):
        return self.metrics["loss"]


def _check_finite(pending: _PendingStep, split: Split, shards: dict[int, np.ndarray], *,
                  seed: int, batch_size: int, num_shards: int) -> None:
    """Raises naming the step, the non-finite loss terms and the batch's qids.

    `shards`: the training shards this process holds (all of them on one process; on
    several, the qids named are this process's rows of the batch)."""
    value = float(jax.device_get(pending.loss))
    if np.isfinite(value):
        return
    terms = {k: float(v) for k, v in jax.device_get(pending.metrics).items()}
    bad = sorted(k for k, v in terms.items() if not np.isfinite(v))
    qids = pipeline.batch_qids(split, shards, batch_size=batch_size, seed=seed,
                               epoch=pending.epoch, index=pending.index, num_shards=num_shards)
    which = ("batch qids" if len(shards) == num_shards else
             f"batch qids of data shard {', '.join(map(str, sorted(shards)))} of {num_shards}")
    raise NonFiniteLossError(
        f"non-finite training loss {value} at step {pending.step} (epoch {pending.epoch + 1}, "
        f"batch {pending.index}); non-finite terms: {', '.join(bad)}; {which}: "
        f"{', '.join(repr(q) for q in qids)}")


def read_metrics_log(path: Path) -> list[dict]:
    """The complete per-epoch records of a metrics.jsonl (an unparseable line ends the log)."""
    records = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break
    return records


def truncate_metrics_log(path: Path, step: int) -> None:
    """Keeps the records up to the restored `step` (atomically); see train_and_evaluate."""
    if not distributed.is_primary():
        return
    records = read_metrics_log(path)
    kept = [r for r in records if r["step"] <= step]
    if path.is_file() and (len(kept) != len(records) or
                           len(path.read_bytes().splitlines()) != len(records)):
        logging.info("%s: dropping %d epoch record(s) past the restored step %d",
                     path, len(records) - len(kept), step)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def save_epoch_progress(workdir: Path, step: int, steps_per_epoch: int,
                        recent: list[tuple[int, dict]]) -> list[tuple[int, dict]]:
    """Writes the step metrics of the current and the previous epoch (`PROGRESS_FILE`).

    Written atomically before each checkpoint of the latest state, so a run resumed
    mid-epoch at step S finds the metrics of the steps of S's epoch up to S (float32 values,
    exactly as computed), even when S's epoch ended after S but its checkpoint never committed.

    Args:
      recent: (global step, metrics) of the steps run so far, oldest first.

    Returns:
      the entries kept (older ones are dropped, here and in the file).
    """
    keep_after = step - step % steps_per_epoch - steps_per_epoch
    kept = [(s, m) for s, m in recent if s > keep_after]
    host = jax.device_get([m for _, m in kept])
    entries = [{"step": s, "metrics": {k: float(v) for k, v in m.items()}}
               for (s, _), m in zip(kept, host)]
    if not distributed.is_primary():
        return kept
    atomic_write_text(workdir / PROGRESS_FILE, json.dumps({"steps_per_epoch": steps_per_epoch,
                                                           "steps": entries}) + "\n")
    return kept


def load_epoch_progress(workdir: Path, step: int, steps_per_epoch: int) -> list[tuple[int, dict]]:
    """The saved (step, metrics) of the epoch `step` is in, up to `step` (see save_epoch_progress)."""
    epoch_start = step - step % steps_per_epoch
    if step == epoch_start:
        return []
    path = workdir / PROGRESS_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {"steps": []}
    entries = [e for e in saved["steps"] if epoch_start < e["step"] <= step]
    if saved.get("steps_per_epoch") != steps_per_epoch or len(entries) != step - epoch_start:
        logging.warning("%s lacks the metrics of steps %d-%d; the train means of this epoch "
                        "cover the steps run from now on only", path, epoch_start + 1, step)
        return []
    return [(e["step"], {k: np.float32(v) for k, v in e["metrics"].items()}) for e in entries]


def append_metrics_record(path: Path, record: dict) -> None:
    """Appends one epoch record by rewriting the (small) file atomically: never a torn line."""
    if not distributed.is_primary():
        return
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    atomic_write_text(path, text + json.dumps(record) + "\n")


def _num_shards(config: ml_collections.ConfigDict, num_processes: int) -> int:
    """`train.data_shards`, 0 meaning one per process; several processes need one each."""
    shards = config.train.data_shards or num_processes
    if shards < 1 or (num_processes > 1 and shards != num_processes):
        raise ValueError(f"train.data_shards={config.train.data_shards}: expected 0 (one per "
                         f"process) or {num_processes} on {num_processes} processes"
                         if num_processes > 1 else
                         f"train.data_shards={config.train.data_shards}: expected >= 0")
    return shards


def _every_nth(records: list, *, start: int, step: int) -> list:
    return records[start::step]


def global_token_pad(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The largest text pad length of every process (each resolved it on its own shard)."""
    longest = int(distributed.all_int(config.data.max_tokens).max())
    if longest == config.data.max_tokens:
        return config
    resolved = ml_collections.ConfigDict(config.to_dict())
    resolved.data.max_tokens = longest
    resolved.lock()
    return resolved


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
                       model_factory: ModelFactory = build_qd_detr,
                       stop_after_steps: int | None = None, devices=None,
                       cache: CompiledCache | None = None) -> dict:
    """Trains (resuming from `workdir`), evaluates every epoch, keeps the best epoch.

    Args:
      config: the experiment config (experiments/configs/qd_detr.py).
      workdir: output folder; created if missing.
      model_factory: (model config, rngs) -> model following the QD-DETR output
        contract; QDDETR by default.
      stop_after_steps: stop (after checkpointing) once the global step reaches
        this value, as a preemption would; None trains to the end.
      devices: devices of the data mesh (default: all local devices; on several
        processes, every process's devices).
      cache: compiled programs owned by the caller (see `build_programs`).

    Returns:
      {"step", "params" (host numpy tree), "best" (best.json record or None),
       "history" (per-epoch dicts of this invocation)}.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir)
    data = config.data
    tfds_source = data.source != sources.FOLDERS
    num_processes = distributed.process_count()
    num_shards = _num_shards(config, num_processes)
    # On several processes, process p loads only the records of its shard (p, p + N, ...).
    select = (None if num_processes == 1 else
              functools.partial(_every_nth, start=distributed.process_index(), step=num_shards))
    train_split = load_data_split(data.train_annotations, data.train_audio_feats,
                                  data.train_text_feats, num_workers=data.num_workers,
                                  source=data.source, data_dir=data.data_dir, split=data.train_split,
                                  select=select)
    val_split = (load_data_split(data.val_annotations, data.val_audio_feats, data.val_text_feats,
                                 num_workers=data.num_workers, source=data.source,
                                 data_dir=data.data_dir, split=data.val_split)
                 if (data.val_split if tfds_source else data.val_annotations) else None)
    if val_split is not None and not is_annotated(val_split.records):
        raise ValueError(f"{data.val_annotations}: the validation split has no windows")
    # Fixed text pad length over train + val and the layout's best metric.
    config = resolve_run_config(config, [s for s in (train_split, val_split) if s is not None])
    if num_processes > 1:
        config = global_token_pad(config)
    data = config.data
    logging.info("input layout %s: text padded to %d tokens; best epoch by val %s",
                 data.layout, data.max_tokens, config.train.best_metric)

    if devices is None and num_processes > 1:
        devices = jax.devices()  # one global mesh
    mesh = data_mesh(devices)
    batch_size = config.train.batch_size
    _check_divisible(batch_size, mesh, "train.batch_size")
    pipeline.local_batch_size(batch_size, num_shards)
    train_queries = pipeline.trainable_queries(train_split, data)
    if num_processes == 1:  # this process holds every shard (one when unsharded)
        shards = dict(enumerate(pipeline.shard_queries(train_queries, num_shards)))
        shard_sizes = [len(q) for q in shards.values()]
    else:  # the split holds this process's shard only
        shards = {distributed.process_index(): train_queries}
        shard_sizes = distributed.all_int(len(train_queries)).tolist()
    spe = pipeline.sharded_steps_per_epoch(shard_sizes, batch_size)
    total_steps = spe * config.train.num_epochs
    programs, state = build_programs(config, steps_per_epoch=spe, model_factory=model_factory,
                                     mesh=mesh, cache=cache)
    logging.info("model: %s parameters; %d devices; %d steps/epoch, %d epochs",
                 f"{count_params(state.params):,}", mesh.size, spe, config.train.num_epochs)
    if num_shards > 1:
        logging.info("%d data shards of %s training queries; %d processes", num_shards,
                     shard_sizes, num_processes)

    ckpt = RunCheckpoints(workdir, max_to_keep=config.train.max_to_keep)
    restored = ckpt.restore_latest(state)
    if restored is not None:
        state = restored
        logging.info("resumed from %s at step %d", ckpt.latest.directory, int(state.step))
    elif config.train.init_from:
        # A fine-tuning run starts from the pretrained weights once; after that
        # it resumes from its own checkpoints (the branch above).
        state = init_from_pretrained(config, programs, state)
    best = ckpt.best_record()
    base_key = jax.random.PRNGKey(config.seed)
    step = int(jax.device_get(state.step))
    # A run killed after logging an epoch but before checkpointing it redoes that epoch:
    # forget the records the restored state has not reached, so none appears twice.
    truncate_metrics_log(workdir / METRICS_FILE, step)
    history = []
    stop_at = total_steps if stop_after_steps is None else min(total_steps, stop_after_steps)

    window, pending, t_window, steps_window = [], None, time.perf_counter(), 0
    t_start, step_start = time.perf_counter(), step
    compiled = False  # rates count steps after the first (compiling) one of this process
    check = functools.partial(_check_finite, split=train_split, shards=shards,
                              seed=config.seed, batch_size=batch_size, num_shards=num_shards)
    # The steps of the current epoch already run by a killed process, so the epoch's train
    # means match an uninterrupted run (see save_epoch_progress).
    recent = load_epoch_progress(workdir, step, spe)
    epoch_metrics: list[dict] = [m for _, m in recent]

    def save_latest() -> None:
        nonlocal recent
        recent = save_epoch_progress(workdir, step, spe, recent)  # first: a checkpoint has it
        ckpt.save_latest(state)

    while step < stop_at:
        epoch, index = divmod(step, spe)
        inputs, targets = pipeline.train_batch(train_split, shards, data, batch_size=batch_size,
                                               seed=config.seed, epoch=epoch, index=index,
                                               num_shards=num_shards)
        state, metrics = programs.train_step(state, programs.rest, programs.shard_local(inputs),
                                             programs.shard_local(targets), base_key)
        if pending is not None:  # checked one step late so dispatch runs ahead
            check(pending)
        pending = _PendingStep(metrics=metrics, step=step + 1, epoch=epoch, index=index)
        step += 1
        window.append(metrics)
        epoch_metrics.append(metrics)
        recent.append((step, metrics))
        steps_window += 1
        if not compiled:
            # The first step of a process includes XLA compilation; rates and ETAs that
            # counted it would overstate the remaining time many times over.
            jax.block_until_ready(pending.loss)
            logging.info("first step (with compilation) took %s",
                         _fmt_duration(time.perf_counter() - t_start))
            t_window = t_start = time.perf_counter()
            steps_window, step_start, compiled = 0, step, True
        if step % config.train.log_every_steps == 0 and steps_window:
            check(pending)
            elapsed = time.perf_counter() - t_window
            rate = steps_window / elapsed
            eta = (total_steps - step) / rate
            mean = _mean_metrics(window)
            logging.info("step %d/%d epoch %d | loss %.4f | %.2f steps/s %.1f queries/s | ETA %s",
                         step, total_steps, epoch + 1, mean["loss"], rate, rate * batch_size,
                         _fmt_duration(eta))
            window, t_window, steps_window = [], time.perf_counter(), 0
        end_of_epoch = step % spe == 0
        if end_of_epoch:
            check(pending)
            record = _end_epoch(config, programs, state, val_split, ckpt, best,
                                epoch_metrics, epoch=epoch + 1, step=step,
                                elapsed=time.perf_counter() - t_start,
                                steps_done=step - step_start, total_steps=total_steps)
            best = record.pop("_best")
            history.append(record)
            append_metrics_record(workdir / METRICS_FILE, record)
            epoch_metrics = []
            save_latest()
        elif step % config.train.checkpoint_every_steps == 0 or step == stop_at:
            save_latest()
    if pending is not None:
        check(pending)
    save_latest()
    ckpt.wait()
    ckpt.close()
    if best is not None:
        logging.info("best epoch %d: %s", best["epoch"], json.dumps(best["brief"]))
    return {"step": step, "params": jax.device_get(state.params), "best": best,
            "history": history}


def _end_epoch(config, programs: Programs, state: TrainState, val_split: Split | None,
               ckpt: RunCheckpoints, best: dict | None, epoch_metrics: list[dict], *,
               epoch: int, step: int, elapsed: float, steps_done: int, total_steps: int) -> dict:
    """Logs the epoch, evaluates, saves the best parameters; returns the epoch record."""
    train = _mean_metrics(epoch_metrics)
    # Steps after the compiling first one; None until one has run.
    rate = steps_done / max(elapsed, 1e-9) if steps_done > 0 else None
    record = {"epoch": epoch, "step": step, "train": train, "steps_per_s": rate,
              "eta_s": (total_steps - step) / rate if rate else None}
    logging.info("epoch %d/%d done | loss %.4f (span %.4f giou %.4f label %.4f saliency %.4f) | "
                 "%s steps/s | elapsed %s | ETA %s", epoch, config.train.num_epochs,
                 train["loss"], train.get("span", np.nan), train.get("giou", np.nan),
                 train.get("label", np.nan), train.get("saliency", np.nan),
                 "?" if rate is None else f"{rate:.2f}",
                 _fmt_duration(elapsed), _fmt_duration(record["eta_s"]))
    if val_split is not None and epoch % config.train.eval_every_epochs == 0:
        t0 = time.perf_counter()
        windows, valid = programs.predict_split(state.params, val_split, config.data,
                                                batch_size=config.train.eval_batch_size)
        metrics = metrics_lib.compute_metrics(val_split.records, windows=windows, valid=valid,
                                              source=str(val_split.annotations))
        record["val"] = metrics["brief"]
        value = metrics["brief"][config.train.best_metric]
        improved = best is None or value > best["value"]
        logging.info("epoch %d val %s (%.1f s)%s", epoch, json.dumps(metrics["brief"]),
                     time.perf_counter() - t0, " new best" if improved else "")
        if improved:
            best = {"epoch": epoch, "step": step, "metric": config.train.best_metric,
                    "value": value, "brief": metrics["brief"]}
            ckpt.save_best(state, best)
    record["_best"] = best
    return record
