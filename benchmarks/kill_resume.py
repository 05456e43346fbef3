"""Many SIGKILLs of experiments.train_detr (the real QD-DETR, small shapes), then a comparison.

  python benchmarks/kill_resume.py [--kills=15] [--epochs=4] [--seed=1] [--workdir=/tmp/amr_kill] [--cache_dir=DIR]

The longer version of tests/reliability/test_kill_resume.py (same harness,
tests/reliability/kill_harness.py): one uninterrupted reference run, then one run killed
`--kills` times (cycling through: inside a step, inside a checkpoint write, inside an
evaluation) and resumed after each kill. Prints one row per process (kill point, step it
resumed from, orbax temporary folders seen) and whether the final latest / best parameters,
optimizer state, best.json and metrics.jsonl equal the reference bit for bit. SYNTHETIC data.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
import kill_harness as kh  # noqa: E402

_KILLS = flags.DEFINE_integer("kills", 15, "SIGKILLs before the final resume.")
_EPOCHS = flags.DEFINE_integer("epochs", 4, "Training epochs (2 steps each).")
_CACHE = flags.DEFINE_string("cache_dir", None, "JAX compilation cache (default: in workdir).")
_SEED = flags.DEFINE_integer("seed", 1, "Seed of the kill delays.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/amr_kill", "Scratch folder (emptied first).")


def main(argv):
    del argv
    root = Path(_WORKDIR.value)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    kh.SMALL_OVERRIDES["train.num_epochs"] = _EPOCHS.value
    data = kh.make_data(root / "data")
    cache = Path(_CACHE.value) if _CACHE.value else root / "jax_cache"
    t0 = time.perf_counter()
    ref = kh.run_once(kh.train_command(root / "reference", data), kh.child_env(cache),
                      root / "reference", root / "reference.log")
    if ref["rc"] != 0:
        raise RuntimeError(f"reference run failed; see {root / 'reference.log'}")
    print(f"reference run: {time.perf_counter() - t0:.0f} s", flush=True)
    t0 = time.perf_counter()
    runs = kh.kill_and_resume(data, root / "resumed", cache, kills=_KILLS.value,
                              seed=_SEED.value, log_path=root / "kills.log",
                              max_attempts=4 * _KILLS.value)
    print(f"killed runs: {time.perf_counter() - t0:.0f} s\n")
    print(f"{'#':>3} | {'kill point':>10} | {'killed':>6} | {'resumed at':>10} | "
          f"{'committed steps':>15} | partial folders seen")
    for i, r in enumerate(runs):
        print(f"{i:>3} | {str(r['kill_point']):>10} | {str(r['killed']):>6} | "
              f"{str(r['resumed_step']):>10} | {str(r['committed_before'][-3:]):>15} | "
              f"{', '.join(r['partial_seen']) or '-'}")
    problems = kh.compare_runs(root / "reference", root / "resumed")
    kills = sum(r["killed"] for r in runs)
    print(f"\nSYNTHETIC data; {kills} kills survived; final state equal to the uninterrupted run: "
          f"{not problems}{'' if not problems else ' ' + '; '.join(problems)}")


if __name__ == "__main__":
    app.run(main)
