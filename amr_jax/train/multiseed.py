"""Training and scoring one config over several seeds (resumable), then one summary.

Each seed trains in `<workdir>/seed_<s>` (resuming like any run), predicts the test
split with its best checkpoint, and is scored per query; `amr_jax.eval.seeds`
turns the runs into mean +- std and a bootstrap interval over queries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import ml_collections
from absl import logging

from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import seeds as seeds_lib
from amr_jax.eval.predictions import read_predictions
from amr_jax.io_utils import atomic_write_text

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
PREDICTIONS = "test_predictions.jsonl"


def run_seeds(config: ml_collections.ConfigDict, workdir: str | os.PathLike, *,
              seeds: Sequence[int], test_annotations: str | os.PathLike,
              test_audio_feats: str | os.PathLike, test_text_feats: str | os.PathLike,
              name: str = "run", num_resamples: int = 1000, model_factory=None) -> dict:
    """Trains `config` once per seed and summarizes the test figures.

    Args:
      config: a trainer config (experiments/configs/qd_detr.py); `config.seed` is replaced.
      workdir: receives `seed_<s>/` per seed, `summary.json` and `summary.md`.
      seeds: the seeds.
      test_annotations, test_audio_feats, test_text_feats: the annotated test split.
      name: row name in the table.
      num_resamples: bootstrap resamples over queries.
      model_factory: as `train_and_evaluate` (default: QD-DETR).

    Returns:
      the summary (`seeds.summarize_runs`) with "seeds" added.
    """
    from amr_jax.train import trainer
    from amr_jax.train.predict import predict_to_file

    factory = {"model_factory": model_factory or trainer.build_qd_detr}

    workdir = Path(workdir)
    records = read_annotations(test_annotations)
    runs = []
    for k, seed in enumerate(seeds):
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.seed = int(seed)
        run_dir = workdir / f"seed_{seed}"
        logging.info("seed %d (%d of %d) in %s", seed, k + 1, len(seeds), run_dir)
        trainer.train_and_evaluate(run_config, run_dir, **factory)
        output = run_dir / PREDICTIONS
        predict_to_file(run_dir, test_annotations, test_audio_feats, test_text_feats, output,
                        **factory)
        runs.append(metrics_lib.per_query_scores(records, read_predictions(output),
                                                 source=str(output)))
    summary = seeds_lib.summarize_runs(runs, num_resamples=num_resamples)
    summary["seeds"] = [int(s) for s in seeds]
    table = seeds_lib.format_summary({name: summary}, title=f"{len(seeds)} seeds, test split "
                                                            f"{test_annotations}")
    atomic_write_text(workdir / SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(workdir / SUMMARY_MD, table + "\n")
    print(table)
    print(json.dumps({"mean": summary["mean"], "std": summary["std"]}), flush=True)
    return summary
