"""Dense all-window saliency targets (seed 003, DESIGN 9.2), host-side numpy.

The reference labels saliency from the first window of a query only. With
`config.data.saliency_labels = "all_windows"` every frame inside *any* of the
query's training windows is labelled 1 and every other valid frame 0:

  * frame i covers [i, i + 1) clips; the frames of one window [st, ed] seconds
    are `int(st / clip) .. max(0, min(int(ed / clip), ctx_l) - 1)` (at least
    one frame), the reference's rule for its single window, so the first-window
    labels are always a subset of the dense ones;
  * hinge pairs: 2 positives drawn uniformly without replacement from the
    labelled frames (the only one twice when a single frame is labelled), 2
    negatives from the unlabelled valid frames (the positives again when fewer
    than 2 exist, as the reference does);
  * the rank-contrastive term reads the dense 0/1 frame labels; the
    negative-pair term reads no labels (it covers every valid frame).
"""

from __future__ import annotations

import numpy as np

NUM_SALIENCY_PAIRS = 2


def window_frames(window: np.ndarray, ctx_len: int, *, clip_length: float) -> tuple[int, int]:
    """First and last (inclusive) frame of a window [2] in seconds (reference rule)."""
    gt_ed = max(0, min(int(window[1] / clip_length), ctx_len) - 1)
    gt_st = min(int(window[0] / clip_length), gt_ed)
    return gt_st, gt_ed


def all_window_saliency_labels(windows: np.ndarray, ctx_len: int, max_frames: int,
                               rng: np.random.Generator, *, clip_length: float = 1.0
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saliency targets of one query from all of its windows.

    Args:
      windows: [K, 2] (start, end) seconds, K >= 1 (all training windows of the
        query, not only the first `max_windows`).
      ctx_len: number of valid frames (ctx_l), 1 <= ctx_len <= max_frames.
      max_frames: T, the padded length of the frame labels.
      rng: numpy generator for the pair sampling.
      clip_length: seconds per frame.

    Returns:
      pos [P] int32, neg [P] int32 (P = 2) frame indices and labels [T] float32
      (1 on every frame of any window, 0 elsewhere and on padding).
    """
    windows = np.asarray(windows, np.float64).reshape(-1, 2)
    if len(windows) == 0:
        raise ValueError("dense saliency labels need at least one window")
    labels = np.zeros(max_frames, np.float32)
    for window in windows:
        gt_st, gt_ed = window_frames(window, ctx_len, clip_length=clip_length)
        labels[gt_st:gt_ed + 1] = 1.0
    positive = np.flatnonzero(labels[:ctx_len] > 0)
    negative = np.flatnonzero(labels[:ctx_len] == 0)
    if len(positive) >= NUM_SALIENCY_PAIRS:
        pos = rng.choice(positive, size=NUM_SALIENCY_PAIRS, replace=False)
    else:
        pos = np.full(NUM_SALIENCY_PAIRS, positive[0])
    if len(negative) >= NUM_SALIENCY_PAIRS:
        neg = rng.choice(negative, size=NUM_SALIENCY_PAIRS, replace=False)
    else:
        neg = pos
    return pos.astype(np.int32), neg.astype(np.int32), labels
