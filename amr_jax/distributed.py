"""Multi-controller JAX (several hosts, one process each): start-up, global batches, gathers.

A run on one process uses none of this beyond `initialize`'s no-op and `process_count() == 1`
checks, so its arrays, order and outputs are exactly those of a single-host run.

On several processes (TPU pod hosts, or local CPU processes in the tests) every process runs
the same program: `initialize` connects them, the trainer builds one global mesh over
`jax.devices()`, each process builds only its rows of a batch (`global_batch`), and results
sharded over the mesh come back to every host with `gather`. Only the primary process
(`is_primary`) writes files that are not orbax checkpoints (orbax saves are collective).

Whole-split scoring (`amr_jax.eval.shards`) runs no global program: each process computes its
own queries on its own devices and `all_rows` brings every process's host rows to every host.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from amr_jax.errors import UsageError

AUTO = "auto"


def initialize(coordinator_address: str = "", num_processes: int = 0,
               process_id: int = -1) -> None:
    """Connects this process to the others; call before any other JAX use.

    Args:
      coordinator_address: "" for one process (no-op); "host:port" of process 0 for an
        explicit launch (all three arguments needed); "auto" lets
        `jax.distributed.initialize()` detect a TPU pod / cluster environment.
      num_processes: number of processes of an explicit launch.
      process_id: this process's index in [0, num_processes) for an explicit launch.

    Raises:
      UsageError: arguments that do not describe one of the three cases, naming the flag.
    """
    if not coordinator_address:
        if num_processes > 1 or process_id >= 0:
            raise UsageError(f"num_processes={num_processes}, process_id={process_id} need a "
                             "coordinator_address ('host:port' of process 0, or 'auto' on a pod)")
        return
    # CPU processes exchange collectives through gloo (the default CPU client has none);
    # the option only concerns the CPU backend, so it is harmless on TPU / GPU.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address == AUTO:
        jax.distributed.initialize()
        return
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise UsageError(f"coordinator_address={coordinator_address!r} needs num_processes >= 1 "
                         f"and 0 <= process_id < num_processes (got {num_processes}, "
                         f"{process_id})")
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_primary() -> bool:
    """True on the one process that writes logs summaries, metrics and json files."""
    return jax.process_index() == 0


def global_batch(tree, mesh: jax.sharding.Mesh):
    """Host-local rows -> global arrays sharded along the mesh's "data" axis.

    Args:
      tree: pytree of numpy arrays [b, ...], this process's rows (b = global batch / number
        of processes), in the order of its devices in the mesh.
      mesh: the global one-axis mesh.

    Returns:
      the same pytree of jax.Arrays [b * process_count, ...], rows of process p at
      [p * b, (p + 1) * b) when the mesh lists process p's devices p-th.
    """
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), tree)


def replicated_batch(tree, mesh: jax.sharding.Mesh):
    """Whole numpy arrays, identical on every process -> global arrays sharded by rows."""
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    return jax.tree.map(
        lambda x: jax.make_array_from_callback(x.shape, sharding, lambda index: x[index]), tree)


def gather(tree):
    """Global arrays (sharded or replicated) -> numpy arrays of the whole value on every host.

    Arrays on this process's devices alone (a program of one process) are its whole value.
    """
    if process_count() == 1 or all(getattr(x, "is_fully_addressable", True)
                                   for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def all_int(value: int) -> np.ndarray:
    """[process_count] the integer `value` of every process (a collective: all must call)."""
    if process_count() == 1:
        return np.asarray([value])
    return np.asarray(multihost_utils.process_allgather(np.asarray(value, np.int64)))


def all_rows(tree) -> list:
    """Every process's host rows, on every host (a collective: all must call).

    Args:
      tree: pytree of numpy arrays [n, ...] with the same n within the tree; n may differ
        between processes, the trailing shapes and dtypes may not.

    Returns:
      [the tree of process 0, the tree of process 1, ...], each array with its process's n
      rows, bit for bit.
    """
    if process_count() == 1:
        return [tree]
    leaves, treedef = jax.tree.flatten(tree)
    counts = all_int(len(leaves[0]))
    # Fixed shapes for the collective: every process pads its rows to the longest (>= 1).
    longest = max(int(counts.max()), 1)
    padded = [np.concatenate([x, np.zeros((longest - len(x),) + x.shape[1:], x.dtype)])
              for x in map(np.asarray, leaves)]
    stacked = [np.asarray(x) for x in multihost_utils.process_allgather(padded, tiled=False)]
    return [jax.tree.unflatten(treedef, [x[p, :n] for x in stacked])
            for p, n in enumerate(counts.tolist())]
