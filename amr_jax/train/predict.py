"""Prediction with a trained workdir: DCASE jsonl output, scored when windows are known.

On several processes (`amr_jax.distributed`; `experiments.predict_detr --num_processes`)
each process loads and predicts only its shard of the split (`amr_jax.eval.shards`) on its own
devices, with the text pad length of the whole split; every query's prediction is independent
of the other queries of its batch (per-row masking), so process 0, which gathers the rows,
writes the predictions bit for bit as a one-process run and scores them.
"""

from __future__ import annotations

import os

import jax
import ml_collections
from absl import logging

from amr_jax import distributed
from amr_jax.compiled import CompiledCache
from amr_jax.data.records import is_annotated
from amr_jax.detr.layout import resolve_run_config
from amr_jax.errors import UsageError
from amr_jax.eval import shards
from amr_jax.eval.predictions import read_predictions, write_predictions
from amr_jax.eval.report import score_predictions
from amr_jax.train import trainer
from amr_jax.train.checkpointing import restore_params

# The reference evaluation (`src/evaluate.py`, `start_inference`) runs batches of
# `eval_bsz` = 100 queries in file order.
REFERENCE_EVAL_BATCH = 100


def reference_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with the reference's text-to-audio mask and evaluation batch size."""
    out = ml_collections.ConfigDict(config.to_dict())
    out.model.t2v_reference_mask = True
    out.train.eval_batch_size = REFERENCE_EVAL_BATCH
    out.lock()
    return out


def predict_split(workdir: str | os.PathLike, split, *, reproduce_reference: bool = False,
                  model_factory: trainer.ModelFactory = trainer.build_qd_detr,
                  cache: CompiledCache | None = None):
    """Windows [N, K, 3] and valid [N, K] of every query of a loaded split.

    Args:
      workdir: training (or converted) workdir; its best, else latest, parameters.
      split: a loaded `Split`.
      reproduce_reference: use the reference's text-to-audio mask, which mixes
        the rows of a batch (`amr_jax.detr.model.reference_t2v_attn_mask`), and
        batch exactly as its evaluation: 100 queries in file order, the last batch
        partial, no padding rows, one device. Off (default): per-row masking, so
        each query's prediction is independent of the batching.
      model_factory: the model builder.
      cache: compiled programs owned by the caller (`trainer.build_programs`).

    On several processes each predicts `split` (its own queries) on its local devices; the
    text pad length is the largest over the processes (a collective: all must call).
    """
    config = trainer.load_config(workdir)
    if reproduce_reference:
        config = reference_config(config)
        mesh = trainer.data_mesh(jax.local_devices()[:1])
    else:
        mesh = trainer.data_mesh()
    config = resolve_run_config(config, [split])
    if distributed.process_count() > 1:
        config = trainer.global_token_pad(config)
    programs, state = trainer.build_programs(config, steps_per_epoch=1,
                                             model_factory=model_factory, mesh=mesh, cache=cache)
    params, where = restore_params(workdir, state)
    logging.info("predicting %d queries with the %s of %s (layout %s, text padded to %d tokens%s)",
                 len(split.records), where, workdir, config.data.layout, config.data.max_tokens,
                 ", reference mask and batching" if reproduce_reference else "")
    return programs.predict_split(params, split, config.data,
                                  batch_size=config.train.eval_batch_size,
                                  pad_last=not reproduce_reference)


def predict_to_file(workdir: str | os.PathLike, annotations: str | os.PathLike,
                    audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                    output: str | os.PathLike, *, reproduce_reference: bool = False,
                    model_factory: trainer.ModelFactory = trainer.build_qd_detr,
                    cache: CompiledCache | None = None) -> dict | None:
    """Predicts every query of a split with the workdir's best (else latest) parameters.

    Writes `output` (one line per query, up to `postprocess.top_k` windows
    [start_s, end_s, score] best first). When the annotations carry windows,
    prints the metrics report and, as the last stdout line, the JSON of the
    five headline figures (like `experiments.evaluate`), and returns the metrics.
    `reproduce_reference`, `cache`: see `predict_split`.
    On several processes only process 0 writes, prints and returns the metrics (see the
    module docstring).

    Raises:
      UsageError: `reproduce_reference` on several processes (its batches mix queries).
    """
    shard = shards.process_shard()
    if shard is not None and reproduce_reference:
        raise UsageError("--reproduce_reference batches the whole split 100 queries at a time in "
                         "file order and its mask mixes the rows of a batch: run it without "
                         f"--num_processes (got {shard.count} processes)")
    config = trainer.load_config(workdir)
    split = trainer.load_data_split(str(annotations), str(audio_feats), str(text_feats),
                                    num_workers=config.data.num_workers, select=shard)
    windows, valid = predict_split(workdir, split, reproduce_reference=reproduce_reference,
                                   model_factory=model_factory, cache=cache)
    records = split.records
    if shard is not None:
        gathered = shards.gather_in_file_order(shard, windows, valid)
        if gathered is None:  # not process 0: it writes and scores
            return None
        records, windows, valid = gathered
    write_predictions(output, records, windows, valid)
    logging.info("wrote %s", output)
    if not is_annotated(records):
        return None
    return score_predictions(records, read_predictions(output), name=os.path.basename(
        str(output)), source=str(output))
