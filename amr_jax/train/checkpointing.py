"""orbax checkpoints of a training run: the latest state and the best parameters.

Layout under the workdir:
  checkpoints/<step>/   latest TrainState (resumed automatically);
  best/<step>/          parameters of the best validation epoch;
  best.json             {"step", "epoch", "metric", "value", "brief"} of that epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from amr_jax.distributed import is_primary
from amr_jax.errors import CheckpointError
from amr_jax.io_utils import atomic_write_text, quiet_checkpointing
from amr_jax.train.state import TrainState

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"


def _options(max_to_keep: int) -> ocp.CheckpointManagerOptions:
    # Synchronous saves: they take well under a second for this model, and a
    # finished save is on disk before training goes on.
    return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                        enable_async_checkpointing=False)


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _restore_or_explain(manager: ocp.CheckpointManager, step: int, where: Path, abstract):
    """Restores `step`, turning orbax's failures into one error naming the folder."""
    try:
        with quiet_checkpointing():
            return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001 - orbax raises many types; all mean "unusable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{where}: checkpoint cannot be restored ({type(e).__name__}: "
                              f"{first[:300]})") from e


class RunCheckpoints:
    """The two checkpoint managers of a workdir."""

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int):
        self.workdir = Path(workdir).resolve()
        with quiet_checkpointing():
            self.latest = ocp.CheckpointManager(self.workdir / LATEST_DIR,
                                                options=_options(max_to_keep))
            self.best = ocp.CheckpointManager(self.workdir / BEST_DIR, options=_options(1))

    def restore_latest(self, state: TrainState) -> TrainState | None:
        """The latest saved state laid out (shapes, dtypes, shardings) like `state`, or None."""
        step = self.latest.latest_step()
        if step is None:
            return None
        return _restore_or_explain(self.latest, step, self.workdir / LATEST_DIR / str(step),
                                   _abstract(state))

    def save_latest(self, state: TrainState) -> None:
        step = int(jax.device_get(state.step))
        if self.latest.latest_step() == step:
            return
        with quiet_checkpointing():
            self.latest.save(step, args=ocp.args.StandardSave(state))

    def best_record(self) -> dict | None:
        path = self.workdir / BEST_FILE
        return json.loads(path.read_text()) if path.is_file() else None

    def save_best(self, state: TrainState, record: dict) -> None:
        step = int(jax.device_get(state.step))
        with quiet_checkpointing():
            self.best.save(step, args=ocp.args.StandardSave(state.params), force=True)
            self.best.wait_until_finished()
        if is_primary():  # orbax saves are collective; the record is written once
            atomic_write_text(self.workdir / BEST_FILE, json.dumps(record, indent=2) + "\n")

    def wait(self) -> None:
        with quiet_checkpointing():
            self.latest.wait_until_finished()
            self.best.wait_until_finished()

    def close(self) -> None:
        with quiet_checkpointing():
            self.latest.close()
            self.best.close()


def restore_params(workdir: str | os.PathLike, state_like: TrainState, *, prefer_best: bool = True):
    """Parameters from a workdir: the best checkpoint when present, else the latest.

    Args:
      workdir: training workdir.
      state_like: a TrainState giving structure, shapes, dtypes and shardings.
      prefer_best: look in `best/` first.

    Returns:
      (params, description) where description names the checkpoint used.

    Raises:
      FileNotFoundError: when the workdir holds no checkpoint.
    """
    workdir = Path(workdir).resolve()
    with quiet_checkpointing():
        return _restore_params(workdir, state_like, prefer_best=prefer_best)


def _restore_params(workdir: Path, state_like: TrainState, *, prefer_best: bool):
    if prefer_best and (workdir / BEST_DIR).is_dir():
        with ocp.CheckpointManager(workdir / BEST_DIR) as mgr:
            step = mgr.latest_step()
            if step is not None:
                params = _restore_or_explain(mgr, step, workdir / BEST_DIR / str(step),
                                             _abstract(state_like.params))
                return params, f"best checkpoint ({BEST_DIR}/{step})"
    if (workdir / LATEST_DIR).is_dir():
        with ocp.CheckpointManager(workdir / LATEST_DIR) as mgr:
            step = mgr.latest_step()
            if step is not None:
                state = _restore_or_explain(mgr, step, workdir / LATEST_DIR / str(step),
                                            _abstract(state_like))
                return state.params, f"latest checkpoint ({LATEST_DIR}/{step})"
    raise FileNotFoundError(f"{workdir}: no checkpoint in {BEST_DIR}/ or {LATEST_DIR}/")


class CheckpointMismatchError(ValueError):
    """A checkpoint's parameters do not have the names and shapes of the model's."""


def _flat_shapes(tree, *, strip_value: bool) -> dict[str, tuple[int, ...]]:
    """{"a/b/0/kernel": shape} of a pytree; `strip_value` drops the trailing "value" key
    that raw (untyped) orbax restores keep for every nnx.Param."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        names = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        if strip_value and names and names[-1] == "value":
            names = names[:-1]
        out["/".join(names)] = tuple(getattr(leaf, "shape", ()))
    return out


def _raw_params(workdir: Path, *, prefer_best: bool):
    """The untyped parameter tree of the checkpoint `restore_params` would read."""
    if prefer_best and (workdir / BEST_DIR).is_dir():
        with ocp.CheckpointManager(workdir / BEST_DIR) as mgr:
            step = mgr.latest_step()
            if step is not None:
                return mgr.restore(step, args=ocp.args.StandardRestore()), f"{BEST_DIR}/{step}"
    if (workdir / LATEST_DIR).is_dir():
        with ocp.CheckpointManager(workdir / LATEST_DIR) as mgr:
            step = mgr.latest_step()
            if step is not None:
                state = mgr.restore(step, args=ocp.args.StandardRestore())
                return state["params"], f"{LATEST_DIR}/{step}"
    raise FileNotFoundError(f"{workdir}: no checkpoint in {BEST_DIR}/ or {LATEST_DIR}/")


def restore_params_strict(workdir: str | os.PathLike, state_like: TrainState, *,
                          prefer_best: bool = True):
    """`restore_params` after checking that names and shapes match exactly.

    Raises:
      FileNotFoundError: no checkpoint in the workdir.
      CheckpointMismatchError: listing every parameter missing from the
        checkpoint, every unexpected one, and every shape difference.
    """
    workdir = Path(workdir).resolve()
    with quiet_checkpointing():
        raw, where = _raw_params(workdir, prefer_best=prefer_best)
    saved = _flat_shapes(raw, strip_value=True)
    ours = _flat_shapes(state_like.params, strip_value=True)
    problems = [f"  missing from the checkpoint: {k} {ours[k]}"
                for k in sorted(set(ours) - set(saved))]
    problems += [f"  not in the model: {k} {saved[k]}" for k in sorted(set(saved) - set(ours))]
    problems += [f"  shape {k}: checkpoint {saved[k]} vs model {ours[k]}"
                 for k in sorted(set(saved) & set(ours)) if saved[k] != ours[k]]
    if problems:
        raise CheckpointMismatchError(
            f"{workdir / where}: parameters differ from the model's ({len(problems)} "
            "differences; check config.model against the pretraining run's config.json):\n"
            + "\n".join(problems))
    return restore_params(workdir, state_like, prefer_best=prefer_best)
