"""The README's main job: a SYNTHETIC split, every system, one metrics table.

Generates CASTELLA-structured synthetic train / val / test splits that share
one synthetic world (MS-CLAP heads, vocabulary), converts the synthetic MS-CLAP
checkpoint, runs the six training-free systems on the test split, trains
QD-DETR briefly on the train split (selected on val) and scores it on test.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


from amr_jax.clap.convert import convert_and_save
from amr_jax.data.synthetic import CHECKPOINT_STEM
from amr_jax.data.synthetic_sets import generate_splits
from amr_jax.eval import metrics as metrics_lib
from amr_jax.io_utils import atomic_write_text


def make_demo_data(workdir: Path, *, num_recordings: int, preset: str = "castella") -> dict[str, Path]:
    """Writes (or reuses) synthetic train/val/test splits; returns their folders."""
    return generate_splits(workdir / "data", preset, counts={
        "train": 2 * num_recordings, "val": num_recordings // 2, "test": num_recordings})


def split_paths(folder: Path) -> dict[str, str]:
    return {"annotations": str(folder / "annotations.jsonl"), "audio_feats": str(folder / "clap"),
            "text_feats": str(folder / "clap_text")}


def run_training_free(folders: dict[str, Path], workdir: Path) -> dict[str, dict]:
    """All six training-free systems on the test split (projected once); {system: metrics}."""
    from amr_jax.localize import pipeline
    from amr_jax.configs import localize as localize_configs

    clap_dir = workdir / "clap_converted"
    convert_and_save(folders["test"] / f"{CHECKPOINT_STEM}.npz", clap_dir)
    configs = [localize_configs.get_config(s) for s in localize_configs.SEED_SYSTEMS]
    return pipeline.run_all_systems(configs, **split_paths(folders["test"]),
                                    output_dir=workdir / "predictions", clap_dir=clap_dir,
                                    neutral_feats=folders["test"] / "neutral_text",
                                    print_table=False)


def run_qd_detr(folders: dict[str, Path], workdir: Path, *, num_epochs: int) -> dict:
    """Trains QD-DETR (`:runlocal` config, `num_epochs`) and scores the test split."""
    from amr_jax.train.predict import predict_to_file
    from amr_jax.train.trainer import train_and_evaluate
    from amr_jax.configs import qd_detr

    config = qd_detr.get_config("runlocal")
    with config.unlocked():
        config.train.num_epochs = num_epochs
        for part in ("train", "val"):
            paths = split_paths(folders[part])
            config.data[f"{part}_annotations"] = paths["annotations"]
            config.data[f"{part}_audio_feats"] = paths["audio_feats"]
            config.data[f"{part}_text_feats"] = paths["text_feats"]
    run_dir = workdir / "qd_detr"
    print(f"[demo] training QD-DETR for {num_epochs} epochs in {run_dir} (resumes if interrupted)")
    train_and_evaluate(config, run_dir)
    return predict_to_file(run_dir, **split_paths(folders["test"]),
                           output=workdir / "predictions" / "qd_detr.jsonl")


def run_demo(workdir: str | os.PathLike, *, num_recordings: int = 60, detr_epochs: int = 3) -> dict:
    """Synthetic data + every system; prints one table and writes `<workdir>/results.json`."""
    start = time.perf_counter()
    workdir = Path(workdir)
    folders = make_demo_data(workdir, num_recordings=num_recordings)
    results = run_training_free(folders, workdir)
    if detr_epochs > 0:
        results["qd_detr"] = run_qd_detr(folders, workdir, num_epochs=detr_epochs)
    table = metrics_lib.format_table(
        results, title=f"SYNTHETIC CASTELLA-structured test split ({folders['test']}), "
                       f"official metrics x100")
    print()
    print(table)
    summary = {name: metrics_lib.brief(m) for name, m in results.items()}
    atomic_write_text(workdir / "results.json", json.dumps(summary, indent=2) + "\n")
    print(f"[demo] done in {time.perf_counter() - start:.0f} s; predictions in "
          f"{workdir / 'predictions'}, metrics in {workdir / 'results.json'}")
    return summary
