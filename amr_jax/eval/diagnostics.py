"""Diagnostics of the training-free systems: is the relevance curve query-specific?

* matched vs mismatched: each query's peak relevance on its own recording against the peak of
  a randomly drawn other query on the same recording; the win rate is 50% when the curve
  carries no query-specific signal.
* rank-AUC: per query, the probability that a frame inside a ground-truth window scores above
  a frame outside (ties count half), averaged over queries that have both kinds of frames.
* mean IoU of the top window by GMM separation `Delta = |mu_rel - mu_bg|` (Low / Mid / High),
  optionally next to a trained QD-DETR's mean IoU on the same queries (report Table III).
* figures: relevance curves with ground truth and predicted windows (PNG per qid).

Frame `i` covers `[i + o, i + 1 + o)` s (`o` = the config's `frame_offset_s`: 0 for CASTELLA,
-0.5 for centre-cut Clotho-Moment) and counts as inside a window `[st, en]` when its centre
`i + 0.5 + o` lies in it.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from amr_jax.data.records import QueryRecord


def mismatched_partners(num_queries: int, seed: int) -> np.ndarray:
    """`[B]` int32: for each query a uniformly drawn different query (needs B >= 2)."""
    if num_queries < 2:
        raise ValueError("matched/mismatched diagnostics need at least 2 queries")
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, num_queries - 1, size=num_queries)
    return (draw + (draw >= np.arange(num_queries))).astype(np.int32)


def win_rate(own: jax.Array, other: jax.Array, mask: jax.Array) -> dict:
    """Peak (max over valid frames) of own vs mismatched curves `[B, T]`; ties count half."""
    own_peak = jnp.max(jnp.where(mask, own, -jnp.inf), axis=-1)
    other_peak = jnp.max(jnp.where(mask, other, -jnp.inf), axis=-1)
    wins = (own_peak > other_peak).astype(jnp.float32) + 0.5 * (own_peak == other_peak)
    return {"win_rate": float(jnp.mean(wins)), "mean_peak_matched": float(jnp.mean(own_peak)),
            "mean_peak_mismatched": float(jnp.mean(other_peak))}


def frame_labels(windows: np.ndarray, window_mask: np.ndarray, t_len: int, *,
                 frame_offset_s: float) -> np.ndarray:
    """`[B, W, 2]` seconds + `[B, W]` mask -> `[B, T]` bool, frame centre inside a window."""
    centre = np.arange(t_len)[None, None, :] + 0.5 + frame_offset_s
    inside = (centre >= windows[..., :1]) & (centre <= windows[..., 1:2]) & window_mask[..., None]
    return inside.any(axis=1)


@functools.partial(jax.jit, static_argnames="chunk")
def _rank_auc(scores, labels, mask, *, chunk):
    def block(args):
        s, pos, m = args
        neg = m & ~pos
        pos = m & pos
        above = (s[:, :, None] > s[:, None, :]).astype(jnp.float32)
        above += 0.5 * (s[:, :, None] == s[:, None, :])
        pair = pos[:, :, None] & neg[:, None, :]
        num = jnp.sum(jnp.where(pair, above, 0.0), axis=(1, 2))
        den = jnp.sum(pos, -1).astype(jnp.float32) * jnp.sum(neg, -1)
        return jnp.where(den > 0, num / jnp.maximum(den, 1.0), jnp.nan)

    b, t = scores.shape
    pad = -(-b // chunk) * chunk - b
    padded = [jnp.pad(a, ((0, pad), (0, 0))) for a in (scores, labels, mask)]
    split = [a.reshape(-1, chunk, t) for a in padded]
    return jax.lax.map(block, tuple(split)).reshape(-1)[:b]


def rank_auc(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, *, chunk: int) -> np.ndarray:
    """Per-query ROC AUC of frame scores for inside-vs-outside labels; NaN without both kinds.

    Args:
      scores: `[B, T]` relevance.
      labels: `[B, T]` bool, frame inside a ground-truth window.
      mask: `[B, T]` bool valid frames.
      chunk: queries per block of the `[chunk, T, T]` pair comparison.

    Returns:
      `[B]` float32.
    """
    return np.asarray(_rank_auc(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(mask),
                                chunk=chunk))


def top1_iou(windows: np.ndarray, valid: np.ndarray, records: Sequence[QueryRecord]) -> np.ndarray:
    """`[B]` IoU of each query's first window with its best-matching ground-truth window."""
    out = np.zeros(len(records), np.float64)
    for i, r in enumerate(records):
        if not valid[i, 0] or r.windows is None or len(r.windows) == 0:
            continue
        st, en = windows[i, 0, 0], windows[i, 0, 1]
        inter = np.clip(np.minimum(en, r.windows[:, 1]) - np.maximum(st, r.windows[:, 0]), 0, None)
        union = (en - st) + (r.windows[:, 1] - r.windows[:, 0]) - inter
        out[i] = float(np.max(np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)))
    return out


def iou_by_delta(delta: np.ndarray, iou: np.ndarray, edges: Sequence[float]) -> list[dict]:
    """Mean IoU per separation bin: `Delta < e0`, `e0 <= Delta <= e1`, `Delta > e1`."""
    lo, hi = edges
    bins = [(f"Low (Delta < {lo:.3f})", delta < lo),
            (f"Mid ({lo:.3f}-{hi:.3f})", (delta >= lo) & (delta <= hi)),
            (f"High (Delta > {hi:.3f})", delta > hi)]
    return [{"bin": name, "n": int(sel.sum()),
             "mean_iou": float(iou[sel].mean()) if sel.any() else float("nan")} for name, sel in bins]


def format_diagnostics(result: dict) -> str:
    """One-screen text of `run_diagnostics`'s result."""
    lines = ["space      win rate  peak matched  peak mismatched  rank-AUC  (#queries with AUC)"]
    for space in ("backbone", "joint"):
        d = result[space]
        lines.append(f"{space:<9}  {d['win_rate']:>8.3f}  {d['mean_peak_matched']:>12.4f}  "
                     f"{d['mean_peak_mismatched']:>15.4f}  {d['rank_auc']:>8.3f}  ({d['auc_queries']})")
    detr = "detr_workdir" in result
    lines += ["", f"mean IoU of the top window by GMM separation ({result['gmm_system']})",
              f"{'Delta bin':<24}  {'n':>6}  {'mean IoU':>8}" + ("  DETR IoU" if detr else "")]
    for row in result["iou_by_delta"]:
        lines.append(f"{row['bin']:<24}  {row['n']:>6}  {row['mean_iou']:>8.3f}"
                     + (f"  {row['detr_mean_iou']:>8.3f}" if detr else ""))
    if detr:
        lines.append(f"DETR: {result['detr_workdir']}")
    return "\n".join(lines)


def run_diagnostics(config: ml_collections.ConfigDict, *, annotations: str | os.PathLike,
                    audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                    clap_dir: str | os.PathLike, neutral_feats: str | os.PathLike | None = None,
                    output: str | os.PathLike | None = None,
                    detr_workdir: str | os.PathLike | None = None,
                    tokenizer_dir: str | os.PathLike | None = None,
                    query_route: str = "features") -> dict:
    """Backbone and joint-space win rate and rank-AUC, and the GMM IoU-by-Delta table.

    Args:
      config: a GMM system config from `experiments/configs/localize.py` (its `diagnostics`
        block and GMM settings are used).
      annotations, audio_feats, text_feats: an annotated split.
      clap_dir: converted MS-CLAP folder.
      neutral_feats: neutral-prompt text features (for gmm_contrast; else GPT-2 + tokenizer).
      output: optional JSON path for the result.
      detr_workdir: optional trained (or converted) QD-DETR workdir; its top-1 window
        IoU is averaged over the same Delta bins (`detr_mean_iou` in each row).
      tokenizer_dir, query_route: the raw-text route, as `pipeline.run_localization`.

    Returns:
      {"backbone": {...}, "joint": {...}, "iou_by_delta": [...], "gmm_system": str,
       and "detr_workdir" when given}.
    """
    from amr_jax.data.loader import load_split
    from amr_jax.data.records import is_annotated
    from amr_jax.io_utils import atomic_write_text
    from amr_jax.localize import arrays as localize_arrays
    from amr_jax.localize import embedding
    from amr_jax.localize import program
    from amr_jax.localize import pipeline
    from amr_jax import saliency

    if config.localizer != "gmm":
        raise ValueError(f"diagnostics need a GMM system config, got {config.system}")
    split = load_split(annotations, audio_feats, text_feats, num_workers=config.num_workers,
                       progress=config.progress)
    if not is_annotated(split.records):
        raise ValueError(f"{annotations}: diagnostics need ground-truth windows")
    pipeline.check_timing(split, config.frame_offset_s)
    arrays = localize_arrays.split_arrays(split, max_frames=config.max_frames,
                                   frame_bucket=config.frame_bucket)
    partners = mismatched_partners(len(split.records), config.diagnostics.seed)
    mism_slots = np.where(arrays.slot_query >= 0, partners[np.maximum(arrays.slot_query, 0)], -1)
    mask = arrays.audio_mask[arrays.query_recording]
    t_len = mask.shape[1]
    max_w = max(len(r.windows) for r in split.records)
    gt = np.zeros((len(split.records), max_w, 2), np.float32)
    gt_mask = np.zeros((len(split.records), max_w), bool)
    for i, r in enumerate(split.records):
        gt[i, : len(r.windows)] = r.windows
        gt_mask[i, : len(r.windows)] = True
    labels = frame_labels(gt, gt_mask, t_len, frame_offset_s=config.frame_offset_s)

    result = {"gmm_system": config.system}
    # The GMM system's embedding (joint space, plus the neutral direction for contrast) also
    # serves the joint-space diagnostics: each recording is projected once.
    embedded = embedding.embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=neutral_feats,
                                    tokenizer_dir=tokenizer_dir, query_route=query_route)
    backbone_config = ml_collections.ConfigDict(config.to_dict())
    backbone_config.relevance = "backbone"
    backbone = embedding.embed_split(backbone_config, arrays, clap_dir=None, neutral_feats=None)
    for space, emb in (("backbone", backbone), ("joint", embedded)):
        curves = jax.jit(functools.partial(saliency.relevance_curves, space))
        args = (emb.audio, arrays.audio_mask, emb.queries, None, arrays.query_recording,
                arrays.query_slot)
        own = curves(*args, arrays.slot_query)
        other = curves(*args, mism_slots)
        stats = win_rate(own, other, jnp.asarray(mask))
        auc = rank_auc(np.asarray(own), labels, mask, chunk=config.diagnostics.auc_chunk)
        stats["rank_auc"] = float(np.nanmean(auc))
        stats["auc_queries"] = int(np.isfinite(auc).sum())
        result[space] = stats

    loc = program.localize_split(config, arrays, embedded)
    delta = np.abs(np.asarray(loc.details.fit.means)[:, 1] - np.asarray(loc.details.fit.means)[:, 0])
    iou = top1_iou(loc.windows, loc.valid, split.records)
    result["iou_by_delta"] = iou_by_delta(delta, iou, config.diagnostics.delta_edges)
    if detr_workdir:
        from amr_jax.train.predict import predict_split

        detr_windows, detr_valid = predict_split(detr_workdir, split)
        detr_rows = iou_by_delta(delta, top1_iou(detr_windows, detr_valid, split.records),
                                 config.diagnostics.delta_edges)
        for row, detr_row in zip(result["iou_by_delta"], detr_rows):
            row["detr_mean_iou"] = detr_row["mean_iou"]
        result["detr_workdir"] = str(detr_workdir)
    print(format_diagnostics(result), flush=True)
    if output:
        atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    return result
