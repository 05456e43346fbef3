"""Host-side batch streams for training and evaluation (static shapes).

Training batches: the split is shuffled once per epoch with a generator seeded
by (seed, epoch) and cut into full batches (an incomplete last batch is
dropped so every step has the same shape); window shuffling and saliency
sampling of batch i of epoch e use a generator seeded by (seed, epoch, i).
Every batch is therefore a pure function of (seed, epoch, i), which makes
training deterministic and lets a resumed run see exactly the batches an
uninterrupted run would have seen.

Evaluation batches: file order, the last batch padded by repeating its first
query; `num_valid` says how many rows are real. With `pad_last=False` the last
batch is left partial (no padding rows), as the reference's evaluation does.

`data_config.max_tokens` must already be the run's fixed pad length
(`amr_jax.detr.layout.resolve_run_config`); `data_config.layout` selects the input
layout.
"""

from __future__ import annotations

from collections.abc import Iterator

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


def epoch_order(queries: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training query indices `queries` [N] in the order of `epoch`."""
    return queries[np.random.default_rng([seed, epoch]).permutation(len(queries))]


def batch_qids(split: Split, queries: np.ndarray, *, batch_size: int, seed: int, epoch: int,
               index: int) -> list:
    """The qids of training batch `index` of `epoch` (as `train_batch` builds it)."""
    rows = epoch_order(queries, seed, epoch)[index * batch_size:(index + 1) * batch_size]
    return [split.records[i].qid for i in rows]


def train_batch(split: Split, queries: np.ndarray, data_config: ml_collections.ConfigDict, *,
                batch_size: int, seed: int, epoch: int, index: int
                ) -> tuple[DetrInputs, DetrTargets]:
    """Batch `index` of `epoch` over the training queries `queries` (numpy arrays)."""
    order = epoch_order(queries, seed, epoch)
    rows = order[index * batch_size:(index + 1) * batch_size]
    rng = np.random.default_rng([seed, epoch, index])
    inputs, targets, _ = make_detr_batch(
        split, [split.records[i] for i in rows], max_frames=data_config.max_frames,
        max_tokens=data_config.max_tokens, max_windows=data_config.max_windows, rng=rng,
        clip_length=data_config.clip_length, layout=data_config.layout,
        saliency_label_mode=data_config.saliency_labels)
    return inputs, targets


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
