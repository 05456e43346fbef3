"""Prediction with a trained workdir: DCASE jsonl output, scored when windows are known."""

from __future__ import annotations

import os

from absl import logging

from amr_jax.data.records import is_annotated
from amr_jax.eval.predictions import read_predictions, write_predictions
from amr_jax.eval.report import score_predictions
from amr_jax.train import trainer
from amr_jax.train.checkpointing import restore_params


def predict_to_file(workdir: str | os.PathLike, annotations: str | os.PathLike,
                    audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                    output: str | os.PathLike, *,
                    model_factory: trainer.ModelFactory = trainer.build_qd_detr) -> dict | None:
    """Predicts every query of a split with the workdir's best (else latest) parameters.

    Writes `output` (one line per query, up to `postprocess.top_k` windows
    [start_s, end_s, score] best first). When the annotations carry windows,
    prints the metrics report and, as the last stdout line, the JSON of the
    five headline figures (like `experiments.evaluate`), and returns the metrics.
    """
    config = trainer.load_config(workdir)
    split = trainer.load_data_split(str(annotations), str(audio_feats), str(text_feats),
                                    num_workers=config.data.num_workers)
    programs, state = trainer.build_programs(config, steps_per_epoch=1,
                                             model_factory=model_factory,
                                             mesh=trainer.data_mesh())
    params, where = restore_params(workdir, state)
    logging.info("predicting %d queries with the %s of %s", len(split.records), where, workdir)
    windows, valid = programs.predict_split(params, split, config.data,
                                            batch_size=config.train.eval_batch_size)
    write_predictions(output, split.records, windows, valid)
    logging.info("wrote %s", output)
    if not is_annotated(split.records):
        return None
    return score_predictions(split.records, read_predictions(output), name=os.path.basename(
        str(output)), source=str(output))
