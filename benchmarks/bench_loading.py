"""Feature loading: numpy.load (the old reader) vs amr_jax's thread-safe reader, one table.

  python benchmarks/bench_loading.py [--num_files=3000] [--repeats=5]

Writes a SYNTHETIC folder of small text-feature files ([4-12, 768] float32, as
CASTELLA queries), then reads all of them with 1 and 8 threads through each
reader, with and without a gc callback that yields the GIL (as runtimes such as
JAX install). Reports seconds per pass and the passes that raised.
`load_text_features` adds validation (shape, dtype, finiteness) to the raw read.
"""

from __future__ import annotations

import concurrent.futures
import gc
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

from amr_jax.data import features
from amr_jax.data.npz import NpzArchive

_NUM_FILES = flags.DEFINE_integer("num_files", 3000, "Text feature files to write and read.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Passes per configuration.")


def _numpy_load(path: Path) -> np.ndarray:
    with np.load(path, allow_pickle=False) as npz:
        return npz[features.TEXT_KEY]


def _own_reader(path: Path) -> np.ndarray:
    with NpzArchive(path) as npz:
        return npz[features.TEXT_KEY]


def _time_passes(reader, paths: list[Path], *, threads: int, repeats: int) -> tuple[float, int]:
    failures, start = 0, time.perf_counter()
    for _ in range(repeats):
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                list(pool.map(reader, paths))
        except Exception:  # noqa: BLE001 - counting the crashes is the point
            failures += 1
    return (time.perf_counter() - start) / repeats, failures


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(_NUM_FILES.value):
            path = Path(tmp) / f"qid{i}.npz"
            np.savez(path, last_hidden_state=rng.standard_normal(
                (int(rng.integers(4, 13)), 768)).astype(np.float32))
            paths.append(path)
        readers = {"numpy.load": _numpy_load, "amr_jax NpzArchive": _own_reader,
                   "amr_jax load_text_features": features.load_text_features}
        rows = []
        for hooked in (False, True):
            hook = lambda phase, info: time.sleep(0)  # noqa: E731
            threshold = gc.get_threshold()
            if hooked:
                gc.callbacks.append(hook)
                gc.set_threshold(50)
            for name, reader in readers.items():
                for threads in (1, 8):
                    seconds, failed = _time_passes(reader, paths, threads=threads,
                                                   repeats=_REPEATS.value)
                    rows.append((name, threads, "yes" if hooked else "no", seconds, failed))
            if hooked:
                gc.callbacks.remove(hook)
                gc.set_threshold(*threshold)
    print(f"\nSYNTHETIC: {_NUM_FILES.value} text feature files, {_REPEATS.value} passes each")
    print(f"{'reader':<28} {'threads':>7} {'gc hook':>8} {'s/pass':>8} {'files/s':>9} "
          f"{'failed passes':>14}")
    for name, threads, hooked, seconds, failed in rows:
        print(f"{name:<28} {threads:>7} {hooked:>8} {seconds:>8.3f} "
              f"{_NUM_FILES.value / seconds:>9.0f} {failed:>8}/{_REPEATS.value}")


if __name__ == "__main__":
    app.run(main)
