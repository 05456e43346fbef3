"""Seconds to score N synthetic queries: vectorized metrics vs a per-query loop.

  python benchmarks/bench_metrics.py [--num_queries=10000]

The per-query loop is the literal implementation of the official rules used by
the tests (tests/eval/official_reference.py); both must give the same figures.
"""

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "eval"))
from official_reference import official_metrics  # noqa: E402

from amr_jax.data.records import parse_record  # noqa: E402
from amr_jax.eval.metrics import compute_metrics  # noqa: E402

_N = flags.DEFINE_integer("num_queries", 10000, "Number of synthetic queries.")


def make_queries(n, seed=0):
    rng = np.random.default_rng(seed)
    records, preds = [], []
    for q in range(n):
        duration = int(rng.integers(59, 301))
        k = 1 if rng.random() < 0.48 else int(rng.integers(2, 8))
        starts = np.sort(rng.choice(duration - 5, size=k, replace=False))
        gts = [[int(s), int(s + rng.integers(1, 5))] for s in starts]
        wins = []
        for _ in range(10):
            s = float(rng.integers(0, duration - 1))
            wins.append([s, s + float(rng.integers(1, 12)), float(rng.random())])
        wins.sort(key=lambda w: -w[2])
        records.append(parse_record({"qid": q, "query": "q", "duration": duration, "vid": "v",
                                     "relevant_windows": gts}, where="bench"))
        preds.append({"qid": q, "pred_relevant_windows": wins})
    return records, preds


def main(argv):
    del argv
    records, preds = make_queries(_N.value)
    t0 = time.perf_counter()
    ours = compute_metrics(records, preds)
    t_ours = time.perf_counter() - t0
    gt_map = {r.key: r.raw_windows.tolist() for r in records}
    pred_map = {str(p["qid"]): p["pred_relevant_windows"] for p in preds}
    t0 = time.perf_counter()
    ref = official_metrics(gt_map, pred_map)
    t_ref = time.perf_counter() - t0
    assert ours["mAP"] == ref["mAP"] and ours["R1"] == ref["R1"], "implementations disagree"
    print(f"{'implementation':<32} {'queries':>8} {'seconds':>9}")
    print(f"{'amr_jax.eval.metrics (numpy)':<32} {_N.value:>8} {t_ours:>9.3f}")
    print(f"{'per-query loop (official rules)':<32} {_N.value:>8} {t_ref:>9.3f}")
    print(f"speed-up: {t_ref / t_ours:.1f}x; identical figures: {ours['brief']}")


if __name__ == "__main__":
    app.run(main)
