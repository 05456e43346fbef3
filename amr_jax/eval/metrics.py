"""Moment-retrieval metrics with the official DCASE 2026 Task 6 semantics.

Equal to the official scorer (lighthouse `standalone_eval`) to 0.01:

- Ground-truth windows are the raw file windows with length in (0, 1500] s;
  queries left without any are dropped from both sides.
- R1@θ: the *first listed* prediction (not re-sorted) against the GT window of
  highest IoU with it; hit when that IoU >= θ; mean over queries.
- mAP: the first 10 predictions in list order, stably sorted by score; for each
  threshold 0.50..0.95, greedy one-to-one matching (each prediction takes the
  unmatched GT of highest IoU if that IoU >= θ), VOC all-point interpolated AP
  with all GT windows as positives; mean over queries with predictions, then
  over thresholds.
- Reported ×100 with 2 decimals; the average over thresholds is taken before
  rounding.

Everything is vectorized over queries on padded arrays; the only Python loops
run over the 10 prediction slots and are independent of the number of queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import QueryRecord

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
MAX_PRED_WINDOWS = 10
FULL_RANGE = (0.0, 1500.0)
LENGTH_RANGES = {"short (<10 s)": (0.0, 10.0), "middle (10-30 s)": (10.0, 30.0),
                 "long (>30 s)": (30.0, 1500.0)}
BRIEF_KEYS = ("R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75")


def _fmt(x: float) -> float:
    # The official scorer formats with "%.2f" and parses back; so do we.
    return float(f"{x * 100:.2f}")


def _cross_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pred [N, P, 2], gt [N, G, 2] -> [N, P, G] IoU with the true union (nan if 0/0)."""
    left = np.maximum(pred[:, :, None, 0], gt[:, None, :, 0])
    right = np.minimum(pred[:, :, None, 1], gt[:, None, :, 1])
    inter = np.clip(right - left, 0, None)
    union = ((pred[:, :, 1] - pred[:, :, 0])[:, :, None] + (gt[:, :, 1] - gt[:, :, 0])[:, None, :]
             - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def _pad_gt(records: Sequence[QueryRecord], length_range: tuple[float, float]):
    """Keeps GT windows with length in (lo, hi]; returns kept row ids, [N, G, 2], mask."""
    lo, hi = length_range
    kept_rows, kept = [], []
    for i, r in enumerate(records):
        w = r.raw_windows
        length = w[:, 1] - w[:, 0]
        w = w[(length > lo) & (length <= hi)]
        if len(w):
            kept_rows.append(i)
            kept.append(w)
    g = max((len(w) for w in kept), default=1)
    gt = np.zeros((len(kept), g, 2))
    mask = np.zeros((len(kept), g), bool)
    for i, w in enumerate(kept):
        gt[i, :len(w)] = w
        mask[i, :len(w)] = True
    return np.asarray(kept_rows, np.int64), gt, mask


def predictions_to_arrays(records: Sequence[QueryRecord], predictions: Sequence[dict],
                          *, source: str = "predictions"):
    """Aligns prediction dicts to `records` by qid.

    Returns:
      windows [N, 10, 3] float64 (first 10 in list order), valid [N, 10] bool.

    Raises:
      AnnotationError: when the qid sets differ (listing a few of each side) or
        a window has no score.
    """
    by_qid = {str(p["qid"]): p for p in predictions}
    gt_keys = [r.key for r in records]
    missing = [k for k in gt_keys if k not in by_qid]
    extra = sorted(set(by_qid) - set(gt_keys))
    if missing or extra:
        raise AnnotationError(
            f"{source}: qids differ from the ground truth: {len(missing)} missing "
            f"(e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})")
    windows = np.zeros((len(records), MAX_PRED_WINDOWS, 3))
    valid = np.zeros((len(records), MAX_PRED_WINDOWS), bool)
    for i, k in enumerate(gt_keys):
        wins = by_qid[k]["pred_relevant_windows"][:MAX_PRED_WINDOWS]
        if any(len(w) < 3 for w in wins):
            raise AnnotationError(
                f"{source}: qid {k} has windows without a score; scoring needs [start, end, score] "
                "(only a DCASE submission strips the scores)")
        if wins:
            windows[i, :len(wins)] = np.asarray([w[:3] for w in wins], np.float64)
            valid[i, :len(wins)] = True
    return windows, valid


def _r1_hits(pred: np.ndarray, valid: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray) -> np.ndarray:
    """[N] IoU of the first listed window with its best GT window (hull union, as the scorer)."""
    top = pred[:, :1, :2]
    iou = _cross_iou(top, gt)[:, 0]                     # [N, G]
    iou = np.where(gt_mask, iou, -np.inf)
    best = np.argmax(iou, axis=1)                       # nan wins argmax, as in the scorer
    g = gt[np.arange(len(gt)), best]
    p = top[:, 0]
    inter = np.maximum(0, np.minimum(p[:, 1], g[:, 1]) - np.maximum(p[:, 0], g[:, 0]))
    hull = np.maximum(p[:, 1], g[:, 1]) - np.minimum(p[:, 0], g[:, 0])
    paired = np.divide(inter, hull, out=np.zeros_like(inter), where=hull != 0)
    return np.where(valid[:, 0], paired, 0.0)


def _average_precision(pred: np.ndarray, valid: np.ndarray, gt: np.ndarray, gt_mask: np.ndarray,
                       thresholds: np.ndarray) -> np.ndarray:
    """Per-query AP at each threshold: [N, num_thresholds]."""
    n, p = valid.shape
    order = np.argsort(np.where(valid, -pred[:, :, 2], np.inf), axis=1, kind="stable")
    rows = np.arange(n)[:, None]
    pred = pred[rows, order]
    valid = valid[rows, order]
    iou = np.where(gt_mask[:, None, :], _cross_iou(pred[:, :, :2], gt), -np.inf)  # [N, P, G]
    # The scorer walks GT windows in `argsort(iou)[::-1]` order: descending IoU,
    # equal IoUs in reverse index order. Rank each GT window in that order.
    walk = np.argsort(iou, axis=2, kind="stable")[:, :, ::-1]
    rank = np.empty_like(walk)
    np.put_along_axis(rank, walk, np.arange(gt.shape[1])[None, None, :], axis=2)

    num_t = len(thresholds)
    locked = np.zeros((num_t, n, gt.shape[1]), bool)
    tp = np.zeros((num_t, n, p), bool)
    big = gt.shape[1] + 1
    for k in range(p):
        ok = (iou[None, :, k, :] >= thresholds[:, None, None]) & ~locked & valid[None, :, k, None]
        choice_rank = np.where(ok, rank[None, :, k, :], big)
        first = np.argmin(choice_rank, axis=2)                          # [T, N]
        hit = np.take_along_axis(ok, first[..., None], axis=2)[..., 0]  # [T, N]
        tp[:, :, k] = hit
        np.put_along_axis(locked, first[..., None],
                          np.take_along_axis(locked, first[..., None], axis=2) | hit[..., None], axis=2)

    num_pos = gt_mask.sum(axis=1)[None, :, None]
    cum_tp = np.cumsum(tp, axis=2)
    precision = np.where(valid[None], cum_tp / np.arange(1, p + 1), 0.0)
    envelope = np.maximum.accumulate(precision[:, :, ::-1], axis=2)[:, :, ::-1]
    ap = (tp * envelope).sum(axis=2) / num_pos[..., 0]
    return ap.T


def per_query_scores(records: Sequence[QueryRecord], predictions: Sequence[dict] | None = None, *,
                     windows: np.ndarray | None = None, valid: np.ndarray | None = None,
                     length_range: tuple[float, float] = FULL_RANGE,
                     source: str = "predictions") -> dict:
    """The per-query quantities the official figures average (inputs as `compute_metrics`).

    Returns:
      {"rows": [N'] indices into `records` of the scored queries (those with a GT
       window in `length_range`), "r1_iou": [N'] IoU of each first window with its
       best GT window, "ap": [N', num_thresholds] AP per IoU threshold, NaN for
       queries without predictions (the scorer skips them)}.
    """
    if any(not r.has_windows for r in records):
        raise AnnotationError(f"{source}: cannot score a blind split (no 'relevant_windows')")
    if predictions is not None:
        windows, valid = predictions_to_arrays(records, predictions, source=source)
    else:
        windows = np.asarray(windows, np.float64)[:, :MAX_PRED_WINDOWS]
        valid = np.asarray(valid, bool)[:, :MAX_PRED_WINDOWS]
    rows, gt, gt_mask = _pad_gt(records, length_range)
    windows, valid = windows[rows], valid[rows]
    ap = np.full((len(rows), len(IOU_THRESHOLDS)), np.nan)
    if len(rows) == 0:
        return {"rows": rows, "r1_iou": np.zeros(0), "ap": ap}
    r1_iou = _r1_hits(windows, valid, gt, gt_mask)
    has_pred = valid.any(axis=1)
    if has_pred.any():
        ap[has_pred] = _average_precision(windows[has_pred], valid[has_pred], gt[has_pred],
                                          gt_mask[has_pred], IOU_THRESHOLDS)
    return {"rows": rows, "r1_iou": r1_iou, "ap": ap}


def metrics_from_scores(r1_iou: np.ndarray, ap: np.ndarray) -> dict:
    """Official figures (x100, 2 decimals) from per-query scores; see `per_query_scores`."""
    if len(r1_iou) == 0:
        return {"R1": {}, "mAP": {}, "num_queries": 0, "brief": {}}
    r1 = {str(t): _fmt(np.mean(r1_iou >= t)) for t in IOU_THRESHOLDS}
    scored = ap[~np.isnan(ap[:, 0])]
    ap_per_threshold = scored.mean(axis=0) if len(scored) else np.zeros(len(IOU_THRESHOLDS))
    m_ap = {str(t): _fmt(v) for t, v in zip(IOU_THRESHOLDS, ap_per_threshold)}
    m_ap["average"] = _fmt(np.mean(ap_per_threshold))
    metrics = {"R1": r1, "mAP": m_ap, "num_queries": int(len(r1_iou))}
    metrics["brief"] = brief(metrics)
    return metrics


def compute_metrics(records: Sequence[QueryRecord], predictions: Sequence[dict] | None = None, *,
                    windows: np.ndarray | None = None, valid: np.ndarray | None = None,
                    length_range: tuple[float, float] = FULL_RANGE, source: str = "predictions") -> dict:
    """Official R1@θ and mAP for one split.

    Pass either `predictions` (dicts as read from a jsonl file) or the
    fixed-shape `windows` [N, K, 3] / `valid` [N, K] aligned with `records`.

    Returns:
      {"R1": {"0.5": .., ...}, "mAP": {"0.5": .., ..., "average": ..},
       "num_queries": int, "brief": {R1@0.5, R1@0.7, mAP, mAP@0.5, mAP@0.75}}
      with values ×100, 2 decimals.
    """
    scores = per_query_scores(records, predictions, windows=windows, valid=valid,
                              length_range=length_range, source=source)
    return metrics_from_scores(scores["r1_iou"], scores["ap"])


def _brief_unrounded(r1_iou: np.ndarray, ap: np.ndarray) -> np.ndarray:
    """[5] brief figures x100, unrounded, from per-query scores (official rules)."""
    scored = ap[~np.isnan(ap[:, 0])]
    per_t = scored.mean(axis=0) if len(scored) else np.zeros(ap.shape[1])
    col = {t: int(np.argmin(np.abs(IOU_THRESHOLDS - t))) for t in (0.5, 0.75)}
    return 100 * np.asarray([np.mean(r1_iou >= 0.5), np.mean(r1_iou >= 0.7), per_t.mean(),
                             per_t[col[0.5]], per_t[col[0.75]]])


def bootstrap_interval(runs: Sequence[tuple[np.ndarray, np.ndarray]], *,
                       num_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap interval over queries of the run-averaged brief figures.

    Args:
      runs: one `(r1_iou [N], ap [N, num_thresholds])` per run (seed), the same N
        queries in the same order (`per_query_scores`).
      num_resamples: bootstrap resamples; each draws N queries with replacement,
        scores every run on them with the official rules and averages the runs.
      seed: of the resampling.
      level: coverage of the interval.

    Returns:
      {brief key: (low, high)} x100.
    """
    n = len(runs[0][0])
    if any(len(r1) != n for r1, _ in runs):
        raise ValueError("every run must score the same queries")
    rng = np.random.default_rng(seed)
    samples = np.empty((num_resamples, len(BRIEF_KEYS)))
    for b in range(num_resamples):
        idx = rng.integers(0, n, n)
        samples[b] = np.mean([_brief_unrounded(r1[idx], ap[idx]) for r1, ap in runs], axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)
    return {k: (float(lo), float(hi)) for k, lo, hi in zip(BRIEF_KEYS, low, high)}


def brief(metrics: dict) -> dict:
    """The five headline figures, in the order DCASE reports them."""
    return {"R1@0.5": metrics["R1"]["0.5"], "R1@0.7": metrics["R1"]["0.7"],
            "mAP": metrics["mAP"]["average"], "mAP@0.5": metrics["mAP"]["0.5"],
            "mAP@0.75": metrics["mAP"]["0.75"]}


def metrics_by_length(records: Sequence[QueryRecord], predictions: Sequence[dict] | None = None,
                      **kwargs) -> dict[str, dict]:
    """Metrics restricted to GT windows of each length bin (<10 s, 10-30 s, >30 s)."""
    return {name: compute_metrics(records, predictions, length_range=rng, **kwargs)
            for name, rng in LENGTH_RANGES.items()}


def format_table(rows: dict[str, dict], *, title: str = "") -> str:
    """Formats {row name: metrics dict} as a fixed-width table of the brief figures."""
    name_w = max([len(n) for n in rows] + [6])
    header = f"{'system':<{name_w}}  {'#q':>6}  " + "  ".join(f"{k:>8}" for k in BRIEF_KEYS)
    lines = ([title] if title else []) + [header, "-" * len(header)]
    for name, m in rows.items():
        b = m.get("brief") or {}
        cells = "  ".join(f"{b[k]:>8.2f}" if k in b else f"{'-':>8}" for k in BRIEF_KEYS)
        lines.append(f"{name:<{name_w}}  {m.get('num_queries', 0):>6}  {cells}")
    return "\n".join(lines)


def format_thresholds(metrics: dict) -> str:
    """One line per metric family with all ten thresholds."""
    keys = [str(t) for t in IOU_THRESHOLDS]
    head = "        " + " ".join(f"{k:>6}" for k in keys)
    r1 = "R1      " + " ".join(f"{metrics['R1'][k]:>6.2f}" for k in keys)
    ap = "mAP     " + " ".join(f"{metrics['mAP'][k]:>6.2f}" for k in keys)
    return "\n".join([head, r1, ap])
