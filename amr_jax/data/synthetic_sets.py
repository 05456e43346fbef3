"""Train / val / test SYNTHETIC splits of one synthetic world, written once and reused.

The demo and the ablation runner need several splits (and several presets) that share
one world (MS-CLAP heads, vocabulary), so a model trained on one is meaningful on the
others. A split folder is reused when its `SYNTHETIC.json` says it was generated with
the same preset, seed and size; otherwise it is (re)generated.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from absl import logging

from amr_jax.data.synthetic import generate_split

# One seed per split, so the splits of a preset are different draws of the same world.
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def _matches(folder: Path, *, preset: str, seed: int, world_seed: int, num_recordings: int) -> bool:
    marker = folder / "SYNTHETIC.json"
    if not marker.is_file():
        return False
    summary = json.loads(marker.read_text())
    return (summary.get("preset") == preset and summary.get("seed") == seed
            and summary.get("world_seed") == world_seed
            and summary.get("num_recordings") == num_recordings)


def generate_splits(folder: str | os.PathLike, preset: str, *, counts: Mapping[str, int],
                    world_seed: int = 0, progress: bool = True) -> dict[str, Path]:
    """Writes (or reuses) `<folder>/<split>/` for each split of `counts`.

    Args:
      folder: parent folder of the split folders.
      preset: a `generate_split` preset ("castella", "clotho_moment", ...).
      counts: {split name (train / val / test): number of recordings}.
      world_seed: the shared world.

    Returns:
      {split name: its folder}.
    """
    unknown = sorted(set(counts) - set(SPLIT_SEEDS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected {sorted(SPLIT_SEEDS)}")
    folders = {}
    for name, count in counts.items():
        split = Path(folder) / name
        seed = SPLIT_SEEDS[name]
        if _matches(split, preset=preset, seed=seed, world_seed=world_seed, num_recordings=count):
            logging.info("reusing SYNTHETIC %s %s split in %s", preset, name, split)
        else:
            print(f"generating SYNTHETIC {preset} {name} split ({count} recordings) in {split}",
                  flush=True)
            generate_split(preset, split, seed=seed, world_seed=world_seed, num_recordings=count,
                           progress=progress)
        folders[name] = split
    return folders
