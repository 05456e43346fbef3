"""Peak memory of experiments.localize on growing SYNTHETIC splits: streamed vs whole split.

  python benchmarks/bench_memory.py [--sizes=5000,20000,50000] [--whole_max=20000] \
      [--stream_recordings=64] [--stream_queries=640] [--workdir=/tmp/amr_bench_memory]

Writes one SYNTHETIC split of short recordings (random [8-16, 768] audio, [3-6, 768] text per
query, 10 queries per recording, a window each) once; the smaller splits are prefixes of its
annotation file. Each size runs `experiments.localize` (backbone_cosine) in a fresh process,
streamed (`--config.stream_recordings`) and, up to `--whole_max` queries, on the whole split
at once; the table gives each process's peak RSS (`wait4` ru_maxrss) and wall time. The
streamed predictions are compared with the whole-split ones at equal localizer batch
(`--config.query_chunk=stream_queries`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
_SIZES = flags.DEFINE_list("sizes", ["5000", "20000", "50000"], "Queries per split.")
_WHOLE_MAX = flags.DEFINE_integer("whole_max", 20000, "Largest split also run unstreamed.")
_RECORDINGS = flags.DEFINE_integer("stream_recordings", 64, "Recordings per chunk.")
_QUERIES = flags.DEFINE_integer("stream_queries", 640, "Queries per chunk.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/amr_bench_memory", "Data and outputs.")
QUERIES_PER_RECORDING = 10


def write_split(root: Path, num_queries: int) -> Path:
    """SYNTHETIC features (random, not the generator's world: memory is what is measured)."""
    done = root / "SYNTHETIC_DONE"
    if done.is_file() and int(done.read_text()) >= num_queries:
        return root
    rng = np.random.default_rng(0)
    (root / "clap").mkdir(parents=True, exist_ok=True)
    (root / "clap_text").mkdir(parents=True, exist_ok=True)
    lines = []
    for r in range(num_queries // QUERIES_PER_RECORDING):
        vid = f"rec{r:06d}"
        frames = int(rng.integers(8, 17))
        np.savez(root / "clap" / f"{vid}.npz",
                 features=rng.standard_normal((frames, 768)).astype(np.float32))
        for q in range(QUERIES_PER_RECORDING):
            qid = f"{vid}_{q}"
            np.savez(root / "clap_text" / f"qid{qid}.npz",
                     last_hidden_state=rng.standard_normal((int(rng.integers(3, 7)), 768))
                     .astype(np.float32))
            start = int(rng.integers(0, frames - 2))
            lines.append(json.dumps({"qid": qid, "query": "a sound", "duration": float(frames),
                                     "vid": vid, "relevant_windows": [[start, start + 2]]}))
    (root / "annotations_all.jsonl").write_text("\n".join(lines) + "\n")
    done.write_text(str(num_queries))
    return root


def run_localize(root: Path, annotations: Path, output: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "experiments.localize",
           "--config=experiments/configs/localize.py:backbone_cosine,runlocal",
           f"--annotations={annotations}", f"--audio_feats={root / 'clap'}",
           f"--text_feats={root / 'clap_text'}", f"--output={output}", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO)))
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(stderr.decode()[-3000:])
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": time.perf_counter() - t0}


def main(argv):
    del argv
    sizes = [int(s) for s in _SIZES.value]
    root = write_split(Path(_WORKDIR.value), max(sizes))
    every = (root / "annotations_all.jsonl").read_text().splitlines()
    stream = [f"--config.stream_recordings={_RECORDINGS.value}",
              f"--config.stream_queries={_QUERIES.value}"]
    rows = []
    for n in sizes:
        ann = root / f"annotations_{n}.jsonl"
        ann.write_text("\n".join(every[:n]) + "\n")
        s = run_localize(root, ann, root / f"stream_{n}.jsonl", stream)
        w, same = None, None
        if n <= _WHOLE_MAX.value:
            w = run_localize(root, ann, root / f"whole_{n}.jsonl",
                             [f"--config.query_chunk={_QUERIES.value}"])
            same = (root / f"stream_{n}.jsonl").read_bytes() == (root / f"whole_{n}.jsonl").read_bytes()
        rows.append((n, s, w, same))
        print(f"done {n}", flush=True)
    print(f"\nSYNTHETIC split, backbone_cosine; streamed in chunks of {_RECORDINGS.value} "
          f"recordings / {_QUERIES.value} queries")
    print(f"{'queries':>8} | {'streamed peak RSS':>17} | {'time':>7} | {'whole split peak RSS':>20} | "
          f"{'time':>7} | identical")
    for n, s, w, same in rows:
        whole = f"{w['peak_rss_mb']:>17.0f} MB | {w['wall_s']:>6.1f}s" if w else f"{'-':>20} | {'-':>7}"
        print(f"{n:>8} | {s['peak_rss_mb']:>14.0f} MB | {s['wall_s']:>6.1f}s | {whole} | "
              f"{'-' if same is None else same}")


if __name__ == "__main__":
    app.run(main)
