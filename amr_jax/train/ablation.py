"""An ablation table: rows of (pretraining ->) fine-tuning, several seeds, one summary.

Each row is a pretraining stage (or none) and a fine-tuning stage, both trainer configs.
Per seed, a row's pretraining runs in `<workdir>/pretrain/<dataset>-<key>/seed_<s>`, where
`key` hashes the pretraining config without its seed, so rows whose pretraining is the
same config share one run. The fine-tuning run starts from that run's best weights
(`train.init_from`), is selected on the fine-tuning validation split and scored per query
on the test split. Every stage resumes like any training run; a finished stage leaves a
marker and is not touched again, so an interrupted table continues where it stopped.

Data come from one folder per dataset and split, as `make_synthetic` writes them:
`<data_root>/<dataset>/<split>/{annotations.jsonl, clap/, clap_text/}` with splits
train / val (pretraining datasets) and train / val / test (the fine-tuning dataset).

Outputs: `ablation.json` (per row: mean, std, ci95, per-run figures, pretraining folders),
`ablation.md` (mean +- std table, plus the reference figures when given) and `ablation.png`
(bars of the mean with std error bars per metric).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ml_collections
from absl import logging

from amr_jax.data.records import read_annotations
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import plots
from amr_jax.eval import seeds as seeds_lib
from amr_jax.eval.predictions import read_predictions
from amr_jax.io_utils import atomic_write_bytes, atomic_write_text

ABLATION_JSON = "ablation.json"
ABLATION_MD = "ablation.md"
ABLATION_PNG = "ablation.png"
PREDICTIONS = "test_predictions.jsonl"
STAGE_DONE = "stage_done.json"


@dataclasses.dataclass(frozen=True)
class SplitFolder:
    """One split in the release layout: `annotations.jsonl`, `clap/`, `clap_text/`."""

    folder: Path

    @property
    def annotations(self) -> str:
        return str(self.folder / "annotations.jsonl")

    @property
    def audio_feats(self) -> str:
        return str(self.folder / "clap")

    @property
    def text_feats(self) -> str:
        return str(self.folder / "clap_text")


@dataclasses.dataclass(frozen=True)
class AblationRow:
    """One row: a fine-tuning config and, unless `pretrain_data` is "", a pretraining one."""

    name: str
    description: str
    pretrain_data: str
    pretrain: ml_collections.ConfigDict | None
    finetune: ml_collections.ConfigDict
    reference: Mapping[str, float] | None = None  # figures to print beside ours


def split_folder(data_root: str | os.PathLike, dataset: str, split: str) -> SplitFolder:
    folder = SplitFolder(Path(data_root) / dataset / split)
    if not Path(folder.annotations).is_file():
        raise FileNotFoundError(f"{folder.annotations}: missing; the ablation reads "
                                f"<data_root>/<dataset>/<split>/annotations.jsonl, clap/, clap_text/")
    return folder


def with_data(config: ml_collections.ConfigDict, *, train: SplitFolder, val: SplitFolder,
              seed: int) -> ml_collections.ConfigDict:
    """A copy of `config` reading `train` / `val` from folders, with `seed`."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.seed = int(seed)
    config.data.source = "folders"
    for name, split in (("train", train), ("val", val)):
        config.data[f"{name}_annotations"] = split.annotations
        config.data[f"{name}_audio_feats"] = split.audio_feats
        config.data[f"{name}_text_feats"] = split.text_feats
    return config


def config_key(config: ml_collections.ConfigDict) -> str:
    """12 hex digits identifying a config regardless of its seed (data paths included)."""
    content = config.to_dict()
    content.pop("seed", None)
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def _stage_done(run_dir: Path) -> bool:
    return (run_dir / STAGE_DONE).is_file()


def _mark_done(run_dir: Path, result: dict) -> None:
    atomic_write_text(run_dir / STAGE_DONE,
                      json.dumps({"step": int(result["step"]), "best": result["best"]}) + "\n")


def _train_stage(config, run_dir: Path, train_fn) -> None:
    if _stage_done(run_dir):
        logging.info("finished earlier: %s", run_dir)
        return
    _mark_done(run_dir, train_fn(config, run_dir))


def run_ablation(rows: Sequence[AblationRow], *, data_root: str | os.PathLike,
                 workdir: str | os.PathLike, seeds: Sequence[int], finetune_data: str = "castella",
                 num_resamples: int = 1000, title: str = "",
                 train_fn: Callable | None = None, predict_fn: Callable | None = None) -> dict:
    """Trains and scores every row for every seed; writes and returns the summary.

    Args:
      rows: the rows, in table order.
      data_root: folder of `<dataset>/<split>/` folders (see the module docstring).
      workdir: receives `pretrain/`, `rows/<row>/seed_<s>/` and the summary files.
      seeds: the seeds; seed s trains every stage of every row with `config.seed = s`.
      finetune_data: the fine-tuning dataset's folder name (train / val / test splits).
      num_resamples: bootstrap resamples over queries for the 95% intervals.
      title: first line of the markdown table.
      train_fn: (config, workdir) -> `train_and_evaluate` result (default: the trainer).
      predict_fn: (workdir, annotations, audio, text, output) -> None (default: the trainer's
        best-checkpoint prediction).

    Returns:
      {row name: summary (`seeds.summarize_runs`) + "seeds", "pretrain_runs", "description"}.
    """
    if train_fn is None or predict_fn is None:
        from amr_jax.compiled import CompiledCache  # noqa: PLC0415
        from amr_jax.train import predict, trainer  # noqa: PLC0415 (heavy: model + jax)

        # Rows and stages of one model shape (pretraining, fine-tuning, every seed) compile
        # their programs once: the cache is this run's.
        cache = CompiledCache(max_entries=4)
        train_fn = train_fn or functools.partial(trainer.train_and_evaluate, cache=cache)
        predict_fn = predict_fn or functools.partial(predict.predict_to_file, cache=cache)
    workdir = Path(workdir)
    ft_train, ft_val, ft_test = (split_folder(data_root, finetune_data, s)
                                 for s in ("train", "val", "test"))
    test_records = read_annotations(ft_test.annotations)
    # Every input must exist before hours of training start.
    for row in rows:
        if row.pretrain_data:
            split_folder(data_root, row.pretrain_data, "train")
            split_folder(data_root, row.pretrain_data, "val")

    summaries = {}
    for k, row in enumerate(rows):
        runs, pretrain_runs = [], []
        for seed in seeds:
            logging.info("row %s (%d of %d), seed %d: %s", row.name, k + 1, len(rows), seed,
                         row.description)
            finetune = with_data(row.finetune, train=ft_train, val=ft_val, seed=seed)
            if row.pretrain_data:
                pretrain = with_data(row.pretrain, seed=seed,
                                     train=split_folder(data_root, row.pretrain_data, "train"),
                                     val=split_folder(data_root, row.pretrain_data, "val"))
                pre_dir = (workdir / "pretrain" / f"{row.pretrain_data}-{config_key(pretrain)}"
                           / f"seed_{seed}")
                _train_stage(pretrain, pre_dir, train_fn)
                finetune.train.init_from = str(pre_dir)
                pretrain_runs.append(str(pre_dir))
            run_dir = workdir / "rows" / row.name / f"seed_{seed}"
            _train_stage(finetune, run_dir, train_fn)
            output = run_dir / PREDICTIONS
            if not output.is_file():
                predict_fn(run_dir, ft_test.annotations, ft_test.audio_feats, ft_test.text_feats,
                           output)
            runs.append(metrics_lib.per_query_scores(test_records, read_predictions(output),
                                                     source=str(output)))
        summary = seeds_lib.summarize_runs(runs, num_resamples=num_resamples)
        summary.update(seeds=[int(s) for s in seeds], pretrain_runs=pretrain_runs,
                       description=row.description)
        summaries[row.name] = summary
    write_summary(rows, summaries, workdir, title=title)
    return summaries


def format_table(rows: Sequence[AblationRow], summaries: Mapping[str, dict], *,
                 title: str = "") -> str:
    """Markdown: `mean ± std` per figure and row, then the reference figures if any."""
    keys = metrics_lib.BRIEF_KEYS
    lines = ([title, ""] if title else []) + [
        "| row | description | seeds | " + " | ".join(keys) + " |",
        "|" + "---|" * (len(keys) + 3)]
    for row in rows:
        s = summaries[row.name]
        cells = [f"{s['mean'][k]:.2f} ± {s['std'][k]:.2f}" for k in keys]
        lines.append(f"| {row.name} | {row.description} | {s['num_runs']} | " + " | ".join(cells) + " |")
    lines += ["", "mean ± sample std over seeds (official metrics x100, test split)"]
    with_reference = [row for row in rows if row.reference]
    if with_reference:
        lines += ["", "Reference figures (report 003, Table 1: real CASTELLA test split, one seed):", "",
                  "| row | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        lines += [f"| {row.name} | " + " | ".join(f"{row.reference[k]:.2f}" for k in keys) + " |"
                  for row in with_reference]
    return "\n".join(lines)


def write_summary(rows: Sequence[AblationRow], summaries: Mapping[str, dict],
                  workdir: str | os.PathLike, *, title: str = "") -> None:
    """`ablation.json`, `ablation.md` and `ablation.png` in `workdir` (atomic writes)."""
    workdir = Path(workdir)
    table = format_table(rows, summaries, title=title)
    atomic_write_text(workdir / ABLATION_JSON, json.dumps(summaries, indent=2) + "\n")
    atomic_write_text(workdir / ABLATION_MD, table + "\n")
    atomic_write_bytes(workdir / ABLATION_PNG, plots.ablation_bars(
        {row.name: summaries[row.name] for row in rows}, keys=metrics_lib.BRIEF_KEYS,
        title=title))
    print(table, flush=True)
