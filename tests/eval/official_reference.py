"""A literal, per-query, loop-based implementation of the official scorer's rules.

Written independently from amr_jax.eval.metrics (plain Python loops, no
vectorization) so that the two can be compared; also used by the metrics
benchmark as the reference timing.
"""

import numpy as np

THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def iou_true_union(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union != 0 else 0.0


def iou_hull(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return inter / hull if hull != 0 else 0.0


def query_ap(preds, gts, thr):
    preds = sorted(preds[:10], key=lambda w: -w[2])  # Python's sort is stable
    locked = [False] * len(gts)
    tps = []
    for p in preds:
        ious = [iou_true_union(p, g) for g in gts]
        order = list(np.argsort(ious, kind="stable"))[::-1]
        tp = False
        for j in order:
            if ious[j] < thr:
                break
            if locked[j]:
                continue
            locked[j] = True
            tp = True
            break
        tps.append(tp)
    ap, n_tp = 0.0, 0
    precisions = []
    for i, tp in enumerate(tps):
        n_tp += tp
        precisions.append(n_tp / (i + 1))
    for i, tp in enumerate(tps):
        if tp:
            ap += max(precisions[i:]) / len(gts)
    return ap


def official_metrics(gt_by_qid, pred_by_qid, lo=0.0, hi=1500.0):
    """gt_by_qid: qid -> list of [st, en]; pred_by_qid: qid -> list of [st, en, score]."""
    r1 = {t: [] for t in THRESHOLDS}
    ap = {t: [] for t in THRESHOLDS}
    for qid, gts in gt_by_qid.items():
        gts = [g for g in gts if lo < g[1] - g[0] <= hi]
        if not gts:
            continue
        preds = pred_by_qid[qid]
        if preds:
            top = preds[0]
            best = max(range(len(gts)), key=lambda j: (iou_true_union(top, gts[j]), -j))
            iou = iou_hull(top, gts[best])
        else:
            iou = 0.0
        for t in THRESHOLDS:
            r1[t].append(iou >= t)
            if preds:
                ap[t].append(query_ap(preds, gts, t))
    ap_means = [np.mean(ap[t]) for t in THRESHOLDS]
    out = {"R1": {str(t): float(f"{np.mean(r1[t]) * 100:.2f}") for t in THRESHOLDS},
           "mAP": {str(t): float(f"{v * 100:.2f}") for t, v in zip(THRESHOLDS, ap_means)}}
    out["mAP"]["average"] = float(f"{np.mean(ap_means) * 100:.2f}")
    return out
