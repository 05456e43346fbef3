"""Whole-split training-free localization: load once, embed once, score in one jitted call.

`run_localization` is what `experiments.localize` runs: it loads a split, projects each
recording once into the MS-CLAP joint space (shared by its queries), computes every relevance
curve and localizes every query in jitted batch calls, writes the predictions atomically and
scores them when the annotations carry windows.

Queries are embedded from the released end-of-text row (`query_route="features"`) or from their
raw text through MS-CLAP's GPT-2 (`query_route="text"`, needs GPT-2 weights in the converted
folder and `tokenizer_dir`); gmm_contrast's neutral direction comes from `neutral_feats` when
given, else from the three phrases through GPT-2. Frames are mapped to seconds with the
config's `frame_offset_s`; a split whose lengths suggest the other convention is warned about.

On several processes (`amr_jax.distributed`; `experiments.localize --num_processes`) each
process loads, embeds and localizes only its shard of the split (`amr_jax.eval.shards`: the
queries of recordings p, p + N, ...), padded to the shapes the whole split gets (frames, query
slots, the relevance kernel's query rows, the localizer batch), so every query's windows are bit for bit those of a one-process run;
process 0 gathers them, writes the predictions, timings and metrics, the others write nothing.

This module is the run orchestration (load, embed, localize, write, plot, score; several systems
on one split). The stages have their own modules: `arrays` (padding a split into fixed shapes),
`embedding` (projection and query vectors), `program` (the jitted relevance + localizer program);
their public names are re-exported here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np
from absl import logging

from amr_jax import distributed
from amr_jax.compiled import CompiledCache
from amr_jax.data import timing
from amr_jax.data import sources
from amr_jax.data.loader import Split, load_split  # noqa: F401 (re-exported)
from amr_jax.data.records import is_annotated
from amr_jax.errors import UsageError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import predictions as predictions_lib
from amr_jax.eval import shards as shards_lib
from amr_jax.io_utils import atomic_write_text
# The stages live in their own modules; they are re-exported here, the localize API users know.
from amr_jax.localize.arrays import SplitArrays, frame_length, split_arrays  # noqa: F401
from amr_jax.localize.embedding import (  # noqa: F401
    DEFAULT_QUERY_ROUTE, QUERY_ROUTES, Embedded, embed_split, neutral_direction)
from amr_jax.localize.program import (  # noqa: F401
    LocalizeResult, localize_curves, localize_split)
from amr_jax.saliency import relevance_curves  # noqa: F401


def run_localization(config: ml_collections.ConfigDict, *, annotations: str | os.PathLike,
                     audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                     output: str | os.PathLike, clap_dir: str | os.PathLike | None = None,
                     neutral_feats: str | os.PathLike | None = None,
                     tokenizer_dir: str | os.PathLike | None = None,
                     query_route: str = DEFAULT_QUERY_ROUTE,
                     timings: str | os.PathLike | None = None,
                     plot_qids: Sequence[str] = (), plot_dir: str | os.PathLike | None = None,
                     split: Split | None = None, arrays: SplitArrays | None = None,
                     embedded: Embedded | None = None, print_report: bool = True,
                     cache: CompiledCache | None = None,
                     shard: shards_lib.RecordingShard | None = None) -> dict:
    """Localizes a whole split with one system and writes its predictions.

    Args:
      config: from `experiments/configs/localize.py`.
      annotations, audio_feats, text_feats: the split (DCASE layout).
      output: predictions jsonl (written atomically).
      clap_dir: converted MS-CLAP folder (joint-space systems).
      neutral_feats: folder of the three neutral-prompt text features (gmm_contrast); without
        it the phrases are encoded through GPT-2 (needs `tokenizer_dir`).
      tokenizer_dir: local GPT-2 tokenizer folder (vocab.json, merges.txt) of the raw-text route.
      query_route: "features" (released end-of-text row) or "text" (raw query through GPT-2).
      timings: optional JSON path for the stage seconds.
      plot_qids: qids to draw (PNG per qid in `plot_dir`).
      plot_dir: folder of the figures; default `<output stem>_plots` beside the output.
      split: an already loaded split (then `load_s` is 0).
      arrays: `split_arrays(split)` when already built for this config's shapes.
      embedded: `embed_split(config, arrays)` when already computed.
      print_report: print the metrics table and the final JSON line.
      cache: compiled kernels owned by the caller (see `localize_split`).
      shard: on several processes with a given `split`, the `RecordingShard` it was loaded
        with (`run_all_systems`); made here when the split is loaded here.

    Returns:
      {"system", "metrics" (None on blind sets and on processes other than 0), "timings",
       "result" (LocalizeResult; of this process's queries on several processes), "plots"
       (paths of the figures written), "embedded" (the Embedded the localizer used)}.

    Raises:
      UsageError: on several processes, `plot_qids` or the llm localizer (both one-host).
    """
    start = time.perf_counter()
    if split is None:
        shard = shards_lib.process_shard()
        check_shardable(config, shard, plot_qids=plot_qids)
        split = load_shard(config, shard, annotations=annotations, audio_feats=audio_feats,
                           text_feats=text_feats)
        if distributed.is_primary():  # on several processes, judged from process 0's shard
            check_timing(split, config.frame_offset_s)
    elif distributed.process_count() > 1 and shard is None:
        raise ValueError("on several processes a given split needs the shard it was loaded with")
    else:
        check_shardable(config, shard, plot_qids=plot_qids)
    load_s = time.perf_counter() - start

    t0 = time.perf_counter()
    if arrays is None:
        arrays = shard_arrays(split, config, shard)
    if embedded is None:
        embedded = embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=neutral_feats,
                               tokenizer_dir=tokenizer_dir, query_route=query_route)
    embed_s = time.perf_counter() - t0

    backend = None
    if config.localizer == "llm":
        from amr_jax.localize import llm

        backend = llm.make_backend(config, clap_dir=clap_dir, tokenizer_dir=tokenizer_dir)
    result = localize_split(config, arrays, embedded, backend=backend, cache=cache,
                            split_queries=None if shard is None else len(shard.records))
    if config.localizer == "llm":
        fallbacks = int(np.asarray(result.details.fallback).sum())
        print(f"{config.system}: {fallbacks} of {len(split.records)} answers did not parse and "
              "used the FWHM fallback", flush=True)
    records, windows, valid = split.records, result.windows, result.valid
    if shard is not None:
        gathered = shards_lib.gather_in_file_order(shard, windows, valid)
        if gathered is None:  # not process 0: it writes and scores
            return {"system": config.system, "metrics": None,
                    "timings": {"load_s": load_s, "embed_s": embed_s,
                                "localize_s": result.localize_s, "compile_s": result.compile_s,
                                "total_s": time.perf_counter() - start},
                    "result": result, "plots": [], "embedded": embedded}
        records, windows, valid = gathered
    predictions_lib.write_predictions(output, records, windows, valid)
    total_s = time.perf_counter() - start
    times = {"load_s": load_s, "embed_s": embed_s, "localize_s": result.localize_s,
             "compile_s": result.compile_s, "total_s": total_s}
    if config.localizer == "llm":
        times["llm_fallbacks"] = fallbacks
    logging.info("%s: %d queries; load %.2f s, embed %.2f s, compile %.2f s, localize %.3f s",
                 config.system, len(records), load_s, embed_s, result.compile_s,
                 result.localize_s)
    if timings:
        atomic_write_text(timings, json.dumps({k: round(v, 4) for k, v in times.items()}) + "\n")

    plots = []
    if plot_qids:
        from amr_jax.eval import plots as plots_lib  # matplotlib only when figures are asked for

        folder = Path(plot_dir) if plot_dir else Path(output).with_name(Path(output).stem + "_plots")
        plots = plots_lib.plot_queries(split.records, result, plot_qids, folder,
                                       title=config.system)

    metrics = None
    if is_annotated(records):
        metrics = metrics_lib.compute_metrics(records, windows=windows, valid=valid,
                                              source=str(output))
        if print_report:
            from amr_jax.eval.report import report_text, summary_json_line

            print(report_text(config.system, metrics))
            print(summary_json_line(metrics), flush=True)
    return {"system": config.system, "metrics": metrics, "timings": times, "result": result,
            "plots": plots, "embedded": embedded}


def check_shardable(config: ml_collections.ConfigDict, shard: shards_lib.RecordingShard | None,
                    *, plot_qids: Sequence[str] = ()) -> None:
    """Raises UsageError, naming the flag, for what runs on one process only."""
    if shard is None:
        return
    if plot_qids:
        raise UsageError(f"--plot_qids draws on one host; drop it with --num_processes="
                         f"{shard.count} (or plot from a one-process run)")
    if config.localizer == "llm":
        raise UsageError(f"{config.system} generates on one host: run it without "
                         f"--num_processes (got {shard.count} processes)")


def load_shard(config: ml_collections.ConfigDict, shard: shards_lib.RecordingShard | None, *,
               annotations, audio_feats, text_feats) -> Split:
    """The split (`shard` None) or this process's shard of it, from the config's source."""
    return sources.load_source(config.source, annotations=annotations, audio_dir=audio_feats,
                               text_dir=text_feats, data_dir=config.data_dir,
                               num_workers=config.num_workers,
                               progress=config.progress and distributed.is_primary(),
                               select=shard)


def shard_arrays(split: Split, config: ml_collections.ConfigDict,
                 shard: shards_lib.RecordingShard | None) -> SplitArrays:
    """`split_arrays`; of a shard, padded to the whole split's frames and query slots (the
    largest over the processes: a collective)."""
    if shard is None:
        return split_arrays(split, max_frames=config.max_frames, frame_bucket=config.frame_bucket)
    longest, slots = (int(distributed.all_int(n).max()) for n in split_shapes(split))
    return split_arrays(split, max_frames=config.max_frames, frame_bucket=config.frame_bucket,
                        longest=longest, slots=slots)


def split_shapes(split: Split) -> tuple[int, int]:
    """(frames of the longest recording, most queries of one recording) of a loaded split."""
    per_vid: dict[str, int] = {}
    for r in split.records:
        per_vid[r.vid] = per_vid.get(r.vid, 0) + 1
    return max(a.shape[0] for a in split.audio.values()), max(per_vid.values())


def check_timing(split: Split, frame_offset_s: float) -> str | None:
    """Warns when the split's feature lengths suggest the other frame convention."""
    return timing.check_frame_convention(
        split.records, {v: a.shape[0] for v, a in split.audio.items()},
        frame_offset_s=frame_offset_s)


def run_all_systems(configs: Sequence[ml_collections.ConfigDict], *,
                    annotations: str | os.PathLike, audio_feats: str | os.PathLike,
                    text_feats: str | os.PathLike, output_dir: str | os.PathLike,
                    clap_dir: str | os.PathLike | None = None,
                    neutral_feats: str | os.PathLike | None = None,
                    tokenizer_dir: str | os.PathLike | None = None,
                    query_route: str = DEFAULT_QUERY_ROUTE,
                    print_table: bool = True) -> dict[str, dict | None]:
    """Runs several systems on one split (loaded and projected once), prints one table.

    `neutral_feats`, `tokenizer_dir`, `query_route` as `run_localization`; backbone_cosine
    always reads the released end-of-text rows (the raw-text route is a joint-space route).

    Writes `<output_dir>/<system>.jsonl` and `<output_dir>/timings.json`. Returns
    `{system: metrics}` as `metrics.compute_metrics` gives them (None on blind sets and, on
    several processes, on every process but 0, which alone writes and prints).
    With `print_table`, prints the table and, last, the JSON of every system's
    five headline figures.
    """
    first = configs[0]
    shard = shards_lib.process_shard()
    for config in configs:
        check_shardable(config, shard)
    split = load_shard(first, shard, annotations=annotations, audio_feats=audio_feats,
                       text_feats=text_feats)
    if distributed.is_primary():
        for offset in dict.fromkeys(c.frame_offset_s for c in configs):
            check_timing(split, offset)
    arrays = shard_arrays(split, first, shard)
    # Every joint-space system shares one projection of the split; contrast adds `n` to it.
    joint: Embedded | None = None
    rows, times = {}, {}
    cache = CompiledCache()  # systems of one shape share their relevance kernels
    for config in configs:
        same_shapes = (config.max_frames, config.frame_bucket) == (first.max_frames,
                                                                    first.frame_bucket)
        embedded, shared_embed_s = None, 0.0
        route = query_route if config.relevance != "backbone" else "features"
        if route != query_route:
            logging.info("%s reads the released end-of-text rows (query route %r is for the "
                         "joint-space systems)", config.system, query_route)
        routes = {"clap_dir": clap_dir, "neutral_feats": neutral_feats,
                  "tokenizer_dir": tokenizer_dir, "query_route": route}
        if same_shapes and config.relevance != "backbone":
            if joint is None:
                t0 = time.perf_counter()
                joint = embed_split(config, arrays, **routes)
                shared_embed_s = time.perf_counter() - t0  # counted once, by its first user
            embedded = joint
            if config.relevance == "contrast" and joint.neutral is None:
                from amr_jax.clap import convert

                clap = convert.load_converted(clap_dir).to_model()
                embedded = joint = dataclasses.replace(joint, neutral=neutral_direction(
                    config, clap, clap_dir=clap_dir, neutral_feats=neutral_feats,
                    tokenizer_dir=tokenizer_dir))
        out = run_localization(config, annotations=annotations, audio_feats=audio_feats,
                               text_feats=text_feats, split=split, print_report=False, **routes,
                               arrays=arrays if same_shapes else None, embedded=embedded,
                               output=Path(output_dir) / f"{config.system}.jsonl", cache=cache,
                               shard=shard)
        out["timings"]["embed_s"] += shared_embed_s
        out["timings"]["total_s"] += shared_embed_s
        times[config.system] = {k: round(v, 4) for k, v in out["timings"].items()}
        rows[config.system] = out["metrics"]
    if not distributed.is_primary():  # process 0 writes and prints for every process
        return rows
    atomic_write_text(Path(output_dir) / "timings.json", json.dumps(times, indent=2) + "\n")
    if print_table:
        scored = {name: m for name, m in rows.items() if m is not None}
        if scored:
            print(metrics_lib.format_table(scored, title=f"{annotations}"))
        print(json.dumps({name: metrics_lib.brief(m) if m else {} for name, m in rows.items()}),
              flush=True)
    return rows


def draw_examples(config: ml_collections.ConfigDict, *, annotations: str | os.PathLike,
                  audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                  clap_dir: str | os.PathLike, num: int, seed: int) -> list:
    """`num` worked examples (`llm.Example`) with the config's relevance curves of a split.

    Raises:
      UsageError: a blind split (the examples need their windows).
    """
    from amr_jax.localize import llm

    split = sources.load_source(config.source, annotations=annotations, audio_dir=audio_feats,
                                text_dir=text_feats, data_dir=config.data_dir,
                                num_workers=config.num_workers, progress=config.progress)
    if not is_annotated(split.records):
        raise UsageError(f"{annotations}: worked examples need annotated windows")
    arrays = split_arrays(split, max_frames=config.max_frames, frame_bucket=config.frame_bucket)
    embedded = embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=None)
    rel_args = (embedded.audio, arrays.audio_mask, embedded.queries, embedded.neutral,
                arrays.query_recording, arrays.query_slot, arrays.slot_query)
    curves = np.asarray(jax.jit(functools.partial(relevance_curves, config.relevance))(*rel_args))
    return llm.select_examples(split.records, curves, arrays.audio_mask[arrays.query_recording],
                               num=num, seed=seed)
