"""Fits the fused localizer on an annotated (validation) split: what experiments.fit_fused runs.

The split is loaded, projected and scored exactly as `pipeline.run_localization` does; the
candidates of every query are computed in one jitted call (per `query_chunk`), labelled by
their best IoU with the file's windows (the raw windows the scorer reads), and
`fused_fit.fit_weights` fits the linear model. Which features it uses is chosen on the split
itself by two-fold cross-validation (seeded halves of the queries, R1@0.7 of the held-out
half): the window features only, or all features (adding each source's own ranking and the
source). On the synthetic splits the source features helped CASTELLA-structured data and hurt
Clotho-structured data, hence a choice rather than a fixed set. The chosen set is then fitted on
the whole split, and the NMS threshold picked from `nms_grid` by the split's mAP. Only this
split is read: no test data enters the fit.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from amr_jax import saliency
from amr_jax.data import sources
from amr_jax.data.records import is_annotated
from amr_jax.errors import UsageError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.localize import arrays as localize_arrays
from amr_jax.localize import embedding, fused, fused_fit, nms, program, pipeline

NMS_GRID = (0.3, 0.4, 0.5, 0.6, 0.7)


def _candidates(config, curves: np.ndarray, mask: np.ndarray, duration: np.ndarray):
    fn = jax.jit(functools.partial(
        fused.fused_candidates, frame_offset_s=config.frame_offset_s,
        **{k: v for k, v in fused_fit.fused_kwargs(config, {}).items()}))
    num = len(duration)
    chunk = min(config.query_chunk or num, num)
    outs = []
    for s in range(0, num, chunk):
        part = [program.chunk_rows(a, s, chunk) for a in (curves, mask, duration)]
        outs.append(jax.tree.map(np.asarray, fn(*part)))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:num], *outs)


def fit_split(config: ml_collections.ConfigDict, *, annotations: str | os.PathLike,
              audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
              clap_dir: str | os.PathLike | None, neutral_feats: str | os.PathLike | None = None,
              tokenizer_dir: str | os.PathLike | None = None,
              query_route: str = embedding.DEFAULT_QUERY_ROUTE,
              nms_grid: Sequence[float] = NMS_GRID, cv_seed: int = 0) -> dict:
    """The parameters file's content (`fused_fit` module docstring) fitted on one split.

    Raises:
      UsageError: a config whose localizer is not "fused", or a blind split.
    """
    if config.localizer != "fused":
        raise UsageError(f"fit_fused needs the fused config (localize.py:fused), got "
                         f"{config.system!r}")
    t0 = time.perf_counter()
    split = sources.load_source(config.source, annotations=annotations, audio_dir=audio_feats,
                                text_dir=text_feats, data_dir=config.data_dir,
                                num_workers=config.num_workers, progress=config.progress)
    if not is_annotated(split.records):
        raise UsageError(f"{annotations}: a blind split has no windows to fit on; pass an "
                         "annotated validation split")
    pipeline.check_timing(split, config.frame_offset_s)
    arrays = localize_arrays.split_arrays(split, max_frames=config.max_frames,
                                   frame_bucket=config.frame_bucket)
    embedded = embedding.embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=neutral_feats,
                                    tokenizer_dir=tokenizer_dir, query_route=query_route)
    rel_args = (embedded.audio, arrays.audio_mask, embedded.queries, embedded.neutral,
                arrays.query_recording, arrays.query_slot, arrays.slot_query)
    curves = np.asarray(jax.jit(functools.partial(saliency.relevance_curves, config.relevance))(
        *rel_args))
    mask = arrays.audio_mask[arrays.query_recording]
    cands = _candidates(config, curves, mask, arrays.duration)
    iou = fused_fit.best_iou(cands.start, cands.end, [r.raw_windows for r in split.records])
    top = jax.jit(nms.nms_top_windows, static_argnames=("iou_threshold", "num_windows"))

    def metrics_of(fit, rows, threshold):
        score = np.asarray(fused.linear_score(cands.features[rows], cands.present[rows],
                                              mean=fit["mean"], scale=fit["scale"],
                                              weights=fit["weights"]))
        windows, valid = top(cands.start[rows], cands.end[rows], score, iou_threshold=threshold,
                             num_windows=config.num_windows)
        return metrics_lib.brief(metrics_lib.compute_metrics(
            [split.records[i] for i in rows], windows=np.asarray(windows),
            valid=np.asarray(valid)))

    feature_sets = {"window": fused.WINDOW_FEATURES, "all": len(fused.FEATURES)}
    order = np.random.default_rng(cv_seed).permutation(len(split.records))
    halves = (np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:]))
    cv = {}
    for name, used in feature_sets.items():
        r1 = [metrics_of(fused_fit.fit_weights(cands.features[a], cands.present[a], iou[a],
                                               num_used=used), b, 0.5)["R1@0.7"]
              for a, b in (halves, halves[::-1])]
        cv[name] = float(np.mean(r1))
    chosen = max(feature_sets, key=lambda n: (cv[n], -feature_sets[n]))
    logging.info("two-fold CV R1@0.7 by feature set: %s; using %r", cv, chosen)
    fit = fused_fit.fit_weights(cands.features, cands.present, iou,
                                num_used=feature_sets[chosen])
    logging.info("fused fit on %d queries: weights %s (loss %.4f)", len(split.records),
                 fit["weights"], fit["loss"])

    everything = np.arange(len(split.records))
    by_nms = {threshold: metrics_of(fit, everything, threshold) for threshold in nms_grid}
    best = max(nms_grid, key=lambda t: (by_nms[t]["mAP"], by_nms[t]["R1@0.7"]))
    logging.info("NMS threshold %.2f (val mAP %.2f); fitted in %.1f s", best,
                 by_nms[best]["mAP"], time.perf_counter() - t0)
    return {"features": list(fused.FEATURES), "mean": fit["mean"], "scale": fit["scale"],
            "weights": fit["weights"], "nms_iou": best,
            "candidates": fused_fit.candidate_settings(config),
            "fitted_on": str(annotations), "num_queries": len(split.records),
            "loss": fit["loss"], "feature_set": chosen, "cv_r1_at_0.7": cv,
            "val_metrics": by_nms[best],
            "val_metrics_by_nms": {str(k): v for k, v in by_nms.items()}}
