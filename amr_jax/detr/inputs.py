"""Host-side (numpy) construction of QD-DETR inputs and training targets.

Everything here runs in the data pipeline, before a batch reaches the device,
and produces fixed shapes: frames padded to `max_frames`, tokens to
`max_tokens`, target spans to `max_windows`.

Reference semantics (DCASE baseline / lighthouse `StartEndDataset`, context mode
"audio_tef"; the two input layouts are described in `amr_jax.detr.layout`):
  * audio rows are L2-normalized per frame, `x / (|x| + 1e-5)`; text rows are raw
    (`dcase`) or L2-normalized per token and cut to 32 tokens (`lighthouse`);
  * `ctx_l = min(max_frames, T)`; each frame gets the two temporal endpoint
    features `(i / ctx_l, (i + 1) / ctx_l)`, placed after (`dcase`) or before
    (`lighthouse`) the 768 audio dims;
  * span labels are the windows in seconds (clipped to the audio context, see
    `training_windows`) divided by `ctx_l * clip_length`, as normalized
    (center, width); when a query has more than `max_windows`
    windows, the window list is shuffled and the first `max_windows` kept;
  * saliency labels come from the first window of that (possibly shuffled)
    list only: two positive frames inside it, two negative frames outside it
    (the positives again when fewer than two frames are outside), and a 0/1
    frame label on the window's frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.struct
import jax
import numpy as np

from amr_jax.data.batching import make_query_batch
from amr_jax.data.loader import Split
from amr_jax.data.records import QueryRecord
from amr_jax.detr.dense_saliency import all_window_saliency_labels
from amr_jax.detr.layout import DCASE, check_text_lengths, get_layout
from amr_jax.norms import l2_normalize_plus_eps
from amr_jax.types import QueryBatch

NORM_EPS = 1e-5
NUM_SALIENCY_PAIRS = 2


@flax.struct.dataclass
class DetrInputs:
    """Model inputs.

    Attributes:
      audio: [B, T, D_a + 2] float32: L2-normalized audio and (tef_start, tef_end),
        in the layout's order (`dcase`: audio first; `lighthouse`: tef first);
        zero on padded frames.
      audio_mask: [B, T] bool, True on the first `ctx_l` frames.
      text: [B, L, D_t] float32 text (raw for `dcase`, per-token L2-normalized for
        `lighthouse`); zero on padding.
      text_mask: [B, L] bool.
    """

    audio: jax.Array
    audio_mask: jax.Array
    text: jax.Array
    text_mask: jax.Array


@flax.struct.dataclass
class DetrTargets:
    """Training targets.

    Attributes:
      spans: [B, W, 2] float32 normalized (center, width); zero on padding.
      span_mask: [B, W] bool, True on real target windows.
      saliency_pos: [B, P] int32 frame indices inside the first window (P = 2).
      saliency_neg: [B, P] int32 frame indices outside it.
      saliency_labels: [B, T] float32, 1 on the first window's frames, else 0.
    """

    spans: jax.Array
    span_mask: jax.Array
    saliency_pos: jax.Array
    saliency_neg: jax.Array
    saliency_labels: jax.Array


def l2_normalize(x: np.ndarray, eps: float = NORM_EPS) -> np.ndarray:
    """Row-wise `x / (||x|| + eps)` over the last axis (zero rows stay zero)."""
    return l2_normalize_plus_eps(x, eps).astype(np.float32)


def temporal_endpoint_features(ctx_len: np.ndarray, max_frames: int) -> np.ndarray:
    """Per-frame (start, end) positions relative to each sample's length.

    Args:
      ctx_len: [B] int number of valid frames per sample (>= 1).
      max_frames: T, the padded length.

    Returns:
      [B, T, 2] float32 `(i / ctx_l, (i + 1) / ctx_l)`, zero on padded frames.
    """
    ctx = np.asarray(ctx_len, np.float32)[:, None]
    idx = np.arange(max_frames, dtype=np.float32)[None, :]
    start = idx / ctx
    tef = np.stack([start, start + 1.0 / ctx], axis=-1)
    valid = idx < ctx
    return np.where(valid[..., None], tef, 0.0).astype(np.float32)


def detr_inputs(batch: QueryBatch, layout: str = DCASE) -> DetrInputs:
    """QueryBatch (numpy, raw features) -> DetrInputs (numpy) in `layout`.

    Args:
      batch: raw features, padded (text already cut or checked by the caller).
      layout: "dcase" (`[audio ‖ tef]`, raw text) or "lighthouse" (`[tef ‖ audio]`,
        per-token L2-normalized text).
    """
    spec = get_layout(layout)
    audio_mask = np.asarray(batch.audio_mask, bool)
    text_mask = np.asarray(batch.text_mask, bool)
    ctx_len = audio_mask.sum(axis=1)
    if np.any(ctx_len < 1):
        raise ValueError("every query needs at least one audio frame")
    audio = l2_normalize(np.asarray(batch.audio, np.float32)) * audio_mask[..., None]
    text = np.asarray(batch.text, np.float32)
    if spec.normalize_text:
        text = l2_normalize(text)
    text = text * text_mask[..., None]
    tef = temporal_endpoint_features(ctx_len, audio_mask.shape[1])
    row = [tef, audio] if spec.tef_first else [audio, tef]
    return DetrInputs(audio=np.concatenate(row, axis=-1).astype(np.float32),
                      audio_mask=audio_mask, text=text.astype(np.float32), text_mask=text_mask)


def training_windows(record: QueryRecord, num_frames: int, *, max_frames: int,
                     clip_length: float = 1.0) -> np.ndarray:
    """The windows a query is trained on: file windows clipped to its audio context.

    The file's windows (as written, `raw_windows`) are clipped to
    `[0, ctx_l * clip_length]` with `ctx_l = min(max_frames, num_frames)`, and
    empty ones dropped, so normalized labels stay in [0, 1]. (The reference
    does not clip at all; clipping to the annotated duration instead would
    drop windows such as [299, 300] on a 299 s recording with 300 frames.)

    Returns:
      [K, 2] float32 in file order; K may be 0.
    """
    raw = record.raw_windows if record.raw_windows is not None else record.windows
    if raw is None:
        return np.zeros((0, 2), np.float32)
    ctx_seconds = min(max_frames, num_frames) * clip_length
    clipped = np.clip(np.asarray(raw, np.float64), 0.0, ctx_seconds)
    return clipped[clipped[:, 1] > clipped[:, 0]].astype(np.float32)


def order_windows(windows: np.ndarray, rng: np.random.Generator, *, max_windows: int) -> np.ndarray:
    """The window list the labels are made from: shuffled when longer than `max_windows`.

    Args:
      windows: [K, 2] seconds, K >= 1, file order.
      rng: numpy generator (consumed only when K > max_windows).
      max_windows: W.

    Returns:
      [K, 2]: `windows` itself when K <= W, else a random permutation of it.
      Span labels use its first W rows and saliency labels its first row.
    """
    if len(windows) > max_windows:
        return windows[rng.permutation(len(windows))]
    return windows


def saliency_labels(window: np.ndarray, ctx_len: int, max_frames: int, rng: np.random.Generator,
                    *, clip_length: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Saliency targets of one query from one window.

    Args:
      window: [2] (start, end) in seconds.
      ctx_len: number of valid frames (ctx_l).
      max_frames: T, the padded length of the frame labels.
      rng: numpy generator for the frame sampling.
      clip_length: seconds per frame.

    Returns:
      pos [P] int32, neg [P] int32 (P = 2), labels [T] float32.
    """
    gt_st = int(window[0] / clip_length)
    gt_ed = max(0, min(int(window[1] / clip_length), ctx_len) - 1)
    gt_st = min(gt_st, gt_ed)
    if gt_st != gt_ed:
        pos = rng.choice(np.arange(gt_st, gt_ed + 1), size=NUM_SALIENCY_PAIRS, replace=False)
    else:
        pos = np.full(NUM_SALIENCY_PAIRS, gt_st)
    pool = np.concatenate([np.arange(0, gt_st), np.arange(gt_ed + 1, ctx_len)])
    if len(pool) >= NUM_SALIENCY_PAIRS:
        neg = rng.choice(pool, size=NUM_SALIENCY_PAIRS, replace=False)
    else:
        neg = pos
    labels = np.zeros(max_frames, np.float32)
    labels[gt_st:gt_ed + 1] = 1.0
    return pos.astype(np.int32), neg.astype(np.int32), labels


def span_labels(batch: QueryBatch, *, clip_length: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """[B, W, 2] seconds -> normalized (center, width) by `ctx_l * clip_length`.

    Returns:
      spans [B, W, 2] float32 (zero on padding), mask [B, W] bool. Not clipped to
      [0, 1], as in the reference.
    """
    ctx_len = np.asarray(batch.audio_mask).sum(axis=1).astype(np.float32)
    xx = np.asarray(batch.windows, np.float32) / (ctx_len * clip_length)[:, None, None]
    cxw = np.stack([(xx[..., 0] + xx[..., 1]) * 0.5, xx[..., 1] - xx[..., 0]], axis=-1)
    mask = np.asarray(batch.window_mask, bool)
    return np.where(mask[..., None], cxw, 0.0).astype(np.float32), mask


def make_detr_batch(split: Split, records: Sequence[QueryRecord], *, max_frames: int,
                    max_tokens: int, max_windows: int, rng: np.random.Generator | None,
                    clip_length: float = 1.0, layout: str = DCASE,
                    saliency_label_mode: str = "first_window",
                    ) -> tuple[DetrInputs, DetrTargets | None, QueryBatch]:
    """Builds the model inputs and, for training, the targets of `records`.

    Args:
      split: loaded features of the split.
      records: the B queries of the batch.
      max_frames, max_tokens, max_windows: T, L, W. A layout that never cuts text
        (`dcase`) raises `TextTooLongError` naming the qids longer than L.
      rng: numpy generator for window shuffling and saliency sampling; None for
        evaluation (no targets are built, the windows keep their file order).
      clip_length: seconds per frame.
      layout: input layout name (see `amr_jax.detr.layout`).
      saliency_label_mode: "first_window" (reference) or "all_windows" (dense
        labels from every window, `amr_jax.detr.dense_saliency`).

    Returns:
      (inputs, targets or None, query batch); the query batch carries the raw
      features, duration and (first W) windows of each query.
    """
    if not get_layout(layout).truncate_text:
        check_text_lengths(split.text, records, max_tokens, source=str(split.annotations))
    if rng is None:
        batch = make_query_batch(split, records, max_frames=max_frames, max_tokens=max_tokens,
                                 max_windows=max_windows)
        return detr_inputs(batch, layout), None, batch
    ordered = []
    for r in records:
        windows = training_windows(r, len(split.audio[r.vid]), max_frames=max_frames,
                                   clip_length=clip_length)
        if len(windows) == 0:
            raise ValueError(f"{split.annotations}: qid={r.qid!r} has no window inside its "
                             "audio; training needs at least one (see `trainable_queries`)")
        ordered.append(order_windows(windows, rng, max_windows=max_windows))
    batch = make_query_batch(
        split, [dataclasses.replace(r, windows=w) for r, w in zip(records, ordered)],
        max_frames=max_frames, max_tokens=max_tokens, max_windows=max_windows)
    inputs = detr_inputs(batch, layout)
    ctx_len = inputs.audio_mask.sum(axis=1)
    if saliency_label_mode == "first_window":
        pos, neg, labels = zip(*(saliency_labels(w[0], int(c), max_frames, rng,
                                                 clip_length=clip_length)
                                 for w, c in zip(ordered, ctx_len)))
    elif saliency_label_mode == "all_windows":
        pos, neg, labels = zip(*(all_window_saliency_labels(w, int(c), max_frames, rng,
                                                            clip_length=clip_length)
                                 for w, c in zip(ordered, ctx_len)))
    else:
        raise ValueError(f"unknown saliency label mode {saliency_label_mode!r} (expected "
                         "'first_window' or 'all_windows')")
    spans, span_mask = span_labels(batch, clip_length=clip_length)
    targets = DetrTargets(spans=spans, span_mask=span_mask, saliency_pos=np.stack(pos),
                          saliency_neg=np.stack(neg), saliency_labels=np.stack(labels))
    return inputs, targets, batch
