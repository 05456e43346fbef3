"""Whole-split scoring on several processes: which queries a process scores, and the rows back.

`experiments.localize` and `experiments.predict_detr` on N processes (multi-controller JAX,
`amr_jax.distributed`): process p loads and scores only the queries of recordings p, p + N,
p + 2N, ... (recordings in first-appearance order of the annotation file, their queries in
file order). This is the stride rule of sharded training (`amr_jax.train.pipeline`) applied to
recordings rather than to queries, so that each recording is read and projected by one process
only (the localizers embed a recording once for all of its queries). Each process computes its
own rows on its own devices; `gather_in_file_order` brings every process's rows to process 0,
in the order of the annotation file, which writes the predictions and computes the metrics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from amr_jax import distributed
from amr_jax.data.records import QueryRecord
from amr_jax.errors import UsageError


@dataclasses.dataclass
class RecordingShard:
    """A `load_split` selector keeping shard `index` of `count` (see the module docstring).

    Attributes:
      index: this shard (the process index).
      count: number of shards (the process count).
      records: every query of the split in file order, set when the selector is applied (the
        annotation file is read whole by every process; only the shard's features are read).
    """

    index: int
    count: int
    records: list[QueryRecord] | None = None

    def __call__(self, records: list[QueryRecord]) -> list[QueryRecord]:
        self.records = list(records)
        num_recordings = len(dict.fromkeys(r.vid for r in records))
        if num_recordings < self.count:
            raise UsageError(f"--num_processes={self.count}: the split has {num_recordings} "
                             "recordings, fewer than one per process")
        return [self.records[i] for i in self.positions(self.index)]

    def positions(self, shard: int) -> np.ndarray:
        """[n] indices into `records` (file order) of shard `shard`'s queries, ascending."""
        if self.records is None:
            raise ValueError("the shard has not selected any records yet (load the split with it)")
        rank = {v: i for i, v in enumerate(dict.fromkeys(r.vid for r in self.records))}
        return np.asarray([i for i, r in enumerate(self.records)
                           if rank[r.vid] % self.count == shard], np.int64)


def process_shard() -> RecordingShard | None:
    """This process's shard on several processes; None on one (the whole split, unchanged)."""
    if distributed.process_count() == 1:
        return None
    return RecordingShard(distributed.process_index(), distributed.process_count())


def gather_in_file_order(shard: RecordingShard, windows: np.ndarray, valid: np.ndarray
                         ) -> tuple[list[QueryRecord], np.ndarray, np.ndarray] | None:
    """Every process's predictions -> process 0, in annotation order (a collective).

    Args:
      shard: this process's shard, after loading the split with it.
      windows: [n, K, 3] this process's windows, rows in its shard's order.
      valid: [n, K] bool.

    Returns:
      on process 0, (every record of the split, windows [B, K, 3], valid [B, K]) in file
      order, bit for bit the rows each process computed; None on the other processes.
    """
    parts = distributed.all_rows((np.asarray(windows), np.asarray(valid)))
    if not distributed.is_primary():
        return None
    num = len(shard.records)
    all_windows = np.zeros((num,) + windows.shape[1:], windows.dtype)
    all_valid = np.zeros((num,) + valid.shape[1:], bool)
    for p, (w, v) in enumerate(parts):
        rows = shard.positions(p)
        if len(rows) != len(w):
            raise ValueError(f"process {p} returned {len(w)} predictions for {len(rows)} queries")
        all_windows[rows] = w
        all_valid[rows] = v
    return shard.records, all_windows, all_valid
