"""Host-side batch streams for training and evaluation (static shapes).

Training batches: the split is shuffled once per epoch with a generator seeded
by (seed, epoch) and cut into full batches (an incomplete last batch is
dropped so every step has the same shape); window shuffling and saliency
sampling of batch i of epoch e use a generator seeded by (seed, epoch, i).
Every batch is therefore a pure function of (seed, epoch, i), which makes
training deterministic and lets a resumed run see exactly the batches an
uninterrupted run would have seen.

Sharded training (`train.data_shards` S > 1, one shard per process on several hosts):
shard s holds the trainable queries of records s, s + S, s + 2S, ... (`shard_queries`), is
permuted each epoch by its own generator seeded by (seed, epoch, s), and global batch i is
the concatenation over s of shard s's rows [i * b, (i + 1) * b), b = batch_size / S, each
local batch built with a generator seeded by (seed, epoch, i, s). A process holding only
shard p builds only its rows, so one process holding every shard computes the batches of
an S-process run. S = 1 is exactly the unsharded stream above.

Evaluation batches: file order, the last batch padded by repeating its first
query; `num_valid` says how many rows are real. With `pad_last=False` the last
batch is left partial (no padding rows), as the reference's evaluation does.

`data_config.max_tokens` must already be the run's fixed pad length
(`amr_jax.detr.layout.resolve_run_config`); `data_config.layout` selects the input
layout.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
import ml_collections
import numpy as np

from amr_jax.data.loader import Split
from absl import logging

from amr_jax.detr.inputs import DetrInputs, DetrTargets, make_detr_batch, training_windows
from amr_jax.types import QueryBatch


def trainable_queries(split: Split, data_config: ml_collections.ConfigDict) -> np.ndarray:
    """Indices of the queries with at least one window inside their audio context.

    Queries left without any (a window entirely past the features) are
    skipped with a warning naming them.
    """
    keep, skipped, clipped_away = [], [], []
    for i, r in enumerate(split.records):
        windows = training_windows(r, len(split.audio[r.vid]), max_frames=data_config.max_frames,
                                   clip_length=data_config.clip_length)
        (keep if len(windows) else skipped).append(i)
        if r.raw_windows is not None and 0 < len(windows) < len(r.raw_windows):
            clipped_away.append(i)
    if clipped_away:
        # Only here does clipping matter: the scorer always reads the raw windows.
        logging.warning("%s: %d queries lose windows that are empty after clipping to the audio "
                        "context (trained on the rest): %s", split.annotations, len(clipped_away),
                        ", ".join(repr(split.records[i].qid) for i in clipped_away[:10]))
    if skipped:
        logging.warning("%s: skipping %d queries with no window inside the audio: %s",
                        split.annotations, len(skipped),
                        ", ".join(repr(split.records[i].qid) for i in skipped[:20]))
    return np.asarray(keep, np.int64)


def steps_per_epoch(num_queries: int, batch_size: int) -> int:
    """Number of full training batches per epoch."""
    steps = num_queries // batch_size
    if steps < 1:
        raise ValueError(f"the training split has {num_queries} queries, fewer than one batch "
                         f"of {batch_size}; lower train.batch_size")
    return steps


def local_batch_size(batch_size: int, num_shards: int) -> int:
    """Rows of one shard in a global batch (raises unless `num_shards` divides it)."""
    if num_shards < 1 or batch_size % num_shards:
        raise ValueError(f"train.batch_size {batch_size} is not divisible by the {num_shards} "
                         "data shards (train.data_shards, 0 = one per process)")
    return batch_size // num_shards


def shard_queries(queries: np.ndarray, num_shards: int) -> list[np.ndarray]:
    """Training queries [N] (record indices of a whole split) -> one array per shard.

    Shard s keeps the queries of records s, s + S, ... in record order: the records a
    process holding shard s loads (`amr_jax.data.loader.load_split`'s `select`).
    """
    return [queries[queries % num_shards == s] for s in range(num_shards)]


def sharded_steps_per_epoch(shard_sizes: list[int], batch_size: int) -> int:
    """Full global batches per epoch when shard s holds `shard_sizes[s]` queries."""
    num_shards = len(shard_sizes)
    if num_shards == 1:
        return steps_per_epoch(shard_sizes[0], batch_size)
    local = local_batch_size(batch_size, num_shards)
    steps = min(shard_sizes) // local
    if steps < 1:
        raise ValueError(f"the smallest of the {num_shards} training shards has "
                         f"{min(shard_sizes)} queries, fewer than its {local} rows of a batch "
                         f"of {batch_size}; lower train.batch_size")
    return steps


def epoch_order(queries: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training query indices `queries` [N] in the order of `epoch`."""
    return queries[np.random.default_rng([seed, epoch]).permutation(len(queries))]


def shard_order(queries: np.ndarray, *, seed: int, epoch: int, shard: int,
                num_shards: int) -> np.ndarray:
    """Shard `shard`'s queries [N_s] in the order of `epoch` (`epoch_order` when unsharded)."""
    if num_shards == 1:
        return epoch_order(queries, seed, epoch)
    return queries[np.random.default_rng([seed, epoch, shard]).permutation(len(queries))]


def local_rows(queries: np.ndarray, *, num_shards: int, shard: int, batch_size: int, seed: int,
               epoch: int, index: int) -> np.ndarray:
    """Record indices [batch_size / num_shards] of shard `shard`'s part of global batch `index`."""
    local = local_batch_size(batch_size, num_shards)
    order = shard_order(queries, seed=seed, epoch=epoch, shard=shard, num_shards=num_shards)
    return order[index * local:(index + 1) * local]


def batch_qids(split: Split, queries: np.ndarray | dict[int, np.ndarray], *,
               batch_size: int, seed: int, epoch: int, index: int, num_shards: int = 1) -> list:
    """The qids of training batch `index` of `epoch` (as `train_batch` builds it).

    `queries`: as in `train_batch`; the qids of the shards given, in shard order (every
    shard on one process: the whole global batch).
    """
    shards = queries if isinstance(queries, dict) else {0: queries}
    return [split.records[i].qid for s in sorted(shards)
            for i in local_rows(shards[s], num_shards=num_shards, shard=s,
                                batch_size=batch_size, seed=seed, epoch=epoch, index=index)]


def local_batch(split: Split, queries: np.ndarray, data_config: ml_collections.ConfigDict, *,
                num_shards: int, shard: int, batch_size: int, seed: int, epoch: int, index: int
                ) -> tuple[DetrInputs, DetrTargets]:
    """Shard `shard`'s rows [batch_size / num_shards, ...] of global batch `index` (numpy)."""
    rows = local_rows(queries, num_shards=num_shards, shard=shard, batch_size=batch_size,
                      seed=seed, epoch=epoch, index=index)
    # Unsharded: the generator of the single-host stream; sharded: one per shard.
    key = [seed, epoch, index] if num_shards == 1 else [seed, epoch, index, shard]
    inputs, targets, _ = make_detr_batch(
        split, [split.records[i] for i in rows], max_frames=data_config.max_frames,
        max_tokens=data_config.max_tokens, max_windows=data_config.max_windows,
        rng=np.random.default_rng(key), clip_length=data_config.clip_length,
        layout=data_config.layout, saliency_label_mode=data_config.saliency_labels)
    return inputs, targets


def train_batch(split: Split, queries: np.ndarray | dict[int, np.ndarray],
                data_config: ml_collections.ConfigDict, *, batch_size: int, seed: int,
                epoch: int, index: int, num_shards: int = 1
                ) -> tuple[DetrInputs, DetrTargets]:
    """Batch `index` of `epoch` (numpy arrays).

    Args:
      queries: the training queries [N] (unsharded), or shard id -> its queries; the rows
        of the shards given, concatenated in shard order.
      num_shards: S (see the module docstring).
    """
    shards = queries if isinstance(queries, dict) else {0: queries}
    parts = [local_batch(split, shards[s], data_config, num_shards=num_shards, shard=s,
                         batch_size=batch_size, seed=seed, epoch=epoch, index=index)
             for s in sorted(shards)]
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda *rows: np.concatenate(rows), *parts)


def eval_batches(split: Split, data_config: ml_collections.ConfigDict, *, batch_size: int,
                 pad_last: bool = True) -> Iterator[tuple[DetrInputs, QueryBatch, int]]:
    """Yields (inputs, query batch, num_valid) over the split in file order.

    `pad_last=False` leaves the last batch partial instead of repeating its first query.
    """
    records = split.records
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        num_valid = len(chunk)
        if pad_last:
            chunk = chunk + [chunk[0]] * (batch_size - num_valid)
        inputs, _, batch = make_detr_batch(
            split, chunk, max_frames=data_config.max_frames, max_tokens=data_config.max_tokens,
            max_windows=data_config.max_windows, rng=None, clip_length=data_config.clip_length,
            layout=data_config.layout)
        yield inputs, batch, num_valid
