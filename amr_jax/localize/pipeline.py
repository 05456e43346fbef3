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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from amr_jax import saliency
from amr_jax.compiled import CompiledCache
from amr_jax.data import timing
from amr_jax.data import sources
from amr_jax.data.loader import Split, load_split
from amr_jax.data.records import is_annotated
from amr_jax.errors import ConfigError, UsageError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import predictions as predictions_lib
from amr_jax.io_utils import atomic_write_text
from amr_jax.localize import duration_dp, fused, fused_fit, systems

QUERY_ROUTES = ("features", "text")
DEFAULT_QUERY_ROUTE = "features"


@dataclasses.dataclass
class SplitArrays:
    """A split as fixed-shape host arrays.

    Attributes:
      audio: `[N, T, 768]` raw audio features per recording, zero-padded.
      audio_mask: `[N, T]` bool.
      text: `[B, L, 768]` text features per query, zero-padded.
      text_mask: `[B, L]` bool.
      query_recording: `[B]` int32 recording row of each query.
      query_slot: `[B]` int32 position of the query among its recording's queries.
      slot_query: `[N, S]` int32 query of each slot, -1 where empty.
      duration: `[B]` float32 seconds.
      query_text: the B raw query strings (the raw-text route).
    """

    audio: np.ndarray
    audio_mask: np.ndarray
    text: np.ndarray
    text_mask: np.ndarray
    query_recording: np.ndarray
    query_slot: np.ndarray
    slot_query: np.ndarray
    duration: np.ndarray
    query_text: list[str]


@dataclasses.dataclass
class Embedded:
    """What the localizer consumes: per-recording frames and per-query vectors.

    Attributes:
      audio: `[N, T, E]` frames (joint space, normalized) or raw backbone rows, on device.
      queries: `[B, E]` query vectors.
      neutral: `[E]` neutral direction (contrast only), else None.
    """

    audio: np.ndarray
    queries: np.ndarray
    neutral: np.ndarray | None


def frame_length(lengths: Sequence[int], *, max_frames: int, frame_bucket: int) -> int:
    """The padded frame length of a split: longest recording rounded up, capped."""
    longest = max(max(lengths, default=1), 1)
    return int(min(max_frames, math.ceil(longest / frame_bucket) * frame_bucket))


def split_arrays(split: Split, *, max_frames: int, frame_bucket: int) -> SplitArrays:
    """Pads a loaded split into `SplitArrays` (recordings in `split.vids` order)."""
    vids = split.vids
    t_len = frame_length([split.audio[v].shape[0] for v in vids], max_frames=max_frames,
                         frame_bucket=frame_bucket)
    dim = split.audio[vids[0]].shape[1]
    audio = np.zeros((len(vids), t_len, dim), np.float32)
    audio_mask = np.zeros((len(vids), t_len), bool)
    for i, v in enumerate(vids):
        a = split.audio[v][:t_len]
        audio[i, : len(a)] = a
        audio_mask[i, : len(a)] = True
    texts = [split.text[r.key] for r in split.records]
    l_len = max(t.shape[0] for t in texts)
    text = np.zeros((len(texts), l_len, texts[0].shape[1]), np.float32)
    text_mask = np.zeros((len(texts), l_len), bool)
    for i, t in enumerate(texts):
        text[i, : len(t)] = t
        text_mask[i, : len(t)] = True
    query_recording = split.vid_index()
    counts = np.zeros(len(vids), np.int64)
    query_slot = np.zeros(len(texts), np.int32)
    for b, n in enumerate(query_recording):
        query_slot[b] = counts[n]
        counts[n] += 1
    slot_query = np.full((len(vids), max(int(counts.max(initial=1)), 1)), -1, np.int32)
    slot_query[query_recording, query_slot] = np.arange(len(texts), dtype=np.int32)
    duration = np.asarray([r.duration for r in split.records], np.float32)
    return SplitArrays(audio=audio, audio_mask=audio_mask, text=text, text_mask=text_mask,
                       query_recording=query_recording.astype(np.int32), query_slot=query_slot,
                       slot_query=slot_query, duration=duration,
                       query_text=[r.query for r in split.records])


def embed_split(config: ml_collections.ConfigDict, arrays: SplitArrays, *,
                clap_dir: str | os.PathLike | None,
                neutral_feats: str | os.PathLike | None,
                tokenizer_dir: str | os.PathLike | None = None,
                query_route: str = DEFAULT_QUERY_ROUTE) -> Embedded:
    """Audio frames and query vectors for the configured relevance.

    backbone: the raw 768-d rows and end-of-text rows (cosine is taken later);
    joint / contrast: MS-CLAP heads, each recording projected once; the queries from their
    end-of-text rows (`query_route="features"`) or their raw text through GPT-2 (`"text"`).
    contrast also gets the neutral direction (`neutral_direction`).

    Raises:
      ValueError: a missing --clap.
      UsageError: an unknown route, or the text route for backbone_cosine.
      ModelFileError: the text route (asked for, or needed for the neutral direction) without
        GPT-2 weights or tokenizer files; the message names what is missing.
    """
    if query_route not in QUERY_ROUTES:
        raise UsageError(f"unknown query route {query_route!r}; expected one of {QUERY_ROUTES}")
    if config.relevance == "backbone":
        if query_route != "features":
            raise UsageError(f"{config.system} compares the released 768-d end-of-text rows with "
                             "the raw audio rows; --query_route=text applies to the joint-space "
                             "systems only")
        last = arrays.text_mask.sum(-1) - 1
        queries = arrays.text[np.arange(len(last)), last]
        return Embedded(audio=jax.device_put(arrays.audio), queries=queries, neutral=None)
    if not clap_dir:
        raise ValueError(f"system {config.system} needs --clap (a converted MS-CLAP folder)")
    from amr_jax.clap import convert, embed  # heavy imports only for the joint-space systems
    from amr_jax.clap.text_route import require_tokenizer

    clap = convert.load_converted(clap_dir).to_model()
    # Every missing piece of the raw-text route is reported before any heavy work.
    tokenizer = None
    if query_route == "text":
        tokenizer = require_tokenizer(clap, clap_dir=clap_dir, tokenizer_dir=tokenizer_dir,
                                      needed_for="--query_route=text")
    neutral = None
    if config.relevance == "contrast":
        neutral = neutral_direction(config, clap, clap_dir=clap_dir, neutral_feats=neutral_feats,
                                    tokenizer_dir=tokenizer_dir, tokenizer=tokenizer)
    if query_route == "text":
        queries = embed.embed_query_from_text(clap, tokenizer, arrays.query_text,
                                              progress=config.progress)
        logging.info("%d queries embedded from their raw text through GPT-2", len(queries))
    else:
        queries = embed.embed_query_from_features(clap, arrays.text, arrays.text_mask)
    audio = _project_packed(embed.project_audio, clap, arrays.audio, arrays.audio_mask,
                            chunk_size=config.embed_chunk, progress=config.progress)
    return Embedded(audio=audio, queries=queries, neutral=neutral)


def neutral_direction(config: ml_collections.ConfigDict, clap, *,
                      clap_dir: str | os.PathLike | None,
                      neutral_feats: str | os.PathLike | None,
                      tokenizer_dir: str | os.PathLike | None, tokenizer=None) -> np.ndarray:
    """The `[E]` neutral direction of the contrast trace.

    From the three neutral text-feature files in `neutral_feats` when given (the released
    route); otherwise from the phrases themselves through GPT-2 and the caption head, which
    needs GPT-2 weights in `clap_dir` and a tokenizer (`tokenizer`, or `tokenizer_dir`).
    """
    from amr_jax.clap import embed
    from amr_jax.clap.text_route import require_tokenizer

    if neutral_feats:
        logging.info("neutral direction from the text features in %s", neutral_feats)
        return embed.neutral_embedding(clap, neutral_feats_dir=neutral_feats)
    if tokenizer is None:
        files = ", ".join(embed.neutral_feature_path("", p).name for p in embed.NEUTRAL_PROMPTS)
        tokenizer = require_tokenizer(
            clap, clap_dir=clap_dir, tokenizer_dir=tokenizer_dir,
            needed_for=f"{config.system}'s neutral direction from the phrases "
                       f"{', '.join(map(repr, embed.NEUTRAL_PROMPTS))} (no --neutral_feats given)",
            otherwise=f"; or pass --neutral_feats=DIR holding {files}")
    logging.info("neutral direction from the phrases %s through GPT-2",
                 ", ".join(map(repr, embed.NEUTRAL_PROMPTS)))
    return embed.neutral_embedding(clap, tokenizer=tokenizer)


def _project_packed(project, clap, audio: np.ndarray, mask: np.ndarray, **kwargs) -> jax.Array:
    """Projects only the valid frames: they are packed densely into rows of the padded length
    (the head acts on each frame alone), projected, and put back in place on the device.

    Recordings of a split differ in length (CASTELLA: 59-300 s), so projecting the padded
    `[N, T, 768]` array would spend a third of the work on padding.
    """
    n_rec, t_len, dim = audio.shape
    valid = mask.reshape(-1)
    frames = audio.reshape(-1, dim)[valid]
    rows = max(1, -(-len(frames) // t_len))
    packed = np.zeros((rows * t_len, dim), audio.dtype)
    packed[: len(frames)] = frames
    packed_mask = np.arange(rows * t_len) < len(frames)
    out = project(clap, packed.reshape(rows, t_len, dim), packed_mask.reshape(rows, t_len), **kwargs)
    out = jax.device_put(out.reshape(rows * t_len, -1))
    # Frame f of the padded layout reads packed row position[f]; padding is zeroed.
    position = np.zeros(n_rec * t_len, np.int32)
    position[valid] = np.arange(len(frames), dtype=np.int32)
    gathered = _unpack(out, jnp.asarray(position), jnp.asarray(valid))
    return gathered.reshape(n_rec, t_len, -1)


@jax.jit
def _unpack(packed: jax.Array, position: jax.Array, valid: jax.Array) -> jax.Array:
    return jnp.where(valid[:, None], packed[position], 0.0)


def relevance_curves(relevance: str, audio: jax.Array, audio_mask: jax.Array, queries: jax.Array,
                     neutral: jax.Array | None, query_recording: jax.Array,
                     query_slot: jax.Array, slot_query: jax.Array) -> jax.Array:
    """`[B, T]` relevance of every query on its recording (see `Embedded` for inputs)."""
    if relevance == "backbone":
        audio, queries = saliency.normalize(audio), saliency.normalize(queries)
    elif relevance == "contrast":
        queries = queries - neutral[None, :]
    elif relevance != "joint":
        raise ValueError(f"unknown relevance {relevance!r}")
    return saliency.grouped_relevance(audio, audio_mask, queries, query_recording, query_slot,
                                      slot_query)


def localize_curves(config: ml_collections.ConfigDict, curves: jax.Array, mask: jax.Array,
                    duration: jax.Array, fused_params: dict | None = None):
    """Runs the configured localizer on `[B, T]` curves.

    `fused_params`: the fused localizer's linear model (`fused_fit.resolve_params(config)`),
    read once by the caller; resolved here when not given.
    """
    if config.localizer == "fused" and fused_params is None:
        fused_params = fused_fit.resolve_params(config)
    if config.localizer == "fwhm":
        return systems.fwhm_localize(curves, mask, duration, num_windows=config.num_windows,
                                     frame_offset_s=config.frame_offset_s,
                                     **config.fwhm.to_dict())
    if config.localizer == "gmm":
        return systems.gmm_localize(curves, mask, duration, num_windows=config.num_windows,
                                    frame_offset_s=config.frame_offset_s,
                                    **config.gmm.to_dict())
    if config.localizer == "dp":
        return duration_dp.dp_localize(curves, mask, duration, num_windows=config.num_windows,
                                       frame_offset_s=config.frame_offset_s, **config.dp.to_dict())
    if config.localizer == "fused":
        return fused.fused_localize(curves, mask, duration, num_windows=config.num_windows,
                                    frame_offset_s=config.frame_offset_s,
                                    **fused_fit.fused_kwargs(config, fused_params))
    raise ValueError(f"unknown localizer {config.localizer!r}")


@dataclasses.dataclass
class LocalizeResult:
    """Output of `localize_split`: host arrays plus the stage times.

    Attributes:
      windows: `[B, K, 3]`; valid: `[B, K]`.
      curves: `[B, T]` raw relevance; mask: `[B, T]`.
      details: the localizer's output (smoothed curve, posterior, mixtures...) as numpy.
      compile_s, localize_s: compilation and run seconds (relevance + localizer).
      frame_offset_s: frame `i` covers `[i + o, i + 1 + o)` s (for plots).
    """

    windows: np.ndarray
    valid: np.ndarray
    curves: np.ndarray
    mask: np.ndarray
    details: object
    compile_s: float
    localize_s: float
    frame_offset_s: float


def _chunk_rows(x: np.ndarray, start: int, size: int) -> np.ndarray:
    part = x[start:start + size]
    if len(part) < size:
        part = np.concatenate([part, np.zeros((size - len(part),) + part.shape[1:], part.dtype)])
    return part


def _signature(args) -> tuple:
    return tuple((None if a is None else (tuple(a.shape), str(a.dtype))) for a in args)


def _compiled(cache: CompiledCache, key: tuple, fn, args) -> tuple[object, float]:
    """Returns `(executable, compile seconds)`; 0 s when `cache` already holds it.

    Keys name what the executable depends on (system settings and shapes), so several
    systems or splits of one shape sharing a cache compile each kernel once.
    """
    t0 = time.perf_counter()
    exe, built = cache.get_or_build(key, lambda: jax.jit(fn).lower(*args).compile())
    return exe, (time.perf_counter() - t0) if built else 0.0


def localize_split(config: ml_collections.ConfigDict, arrays: SplitArrays,
                   embedded: Embedded, backend=None, *,
                   cache: CompiledCache | None = None) -> LocalizeResult:
    """Relevance curves and localization of every query; compilation timed separately.

    `backend`: the language model of the "llm" localizer (`llm.make_backend`), else unused.
    `cache`: compiled kernels owned by the caller, reused across calls that pass the same
    cache (several systems, chunks of a streamed split, a predictor's queries); None
    compiles for this call alone.
    """
    cache = CompiledCache() if cache is None else cache
    if config.localizer == "llm":
        return _localize_split_llm(config, arrays, embedded, backend, cache=cache)
    num_queries = len(arrays.duration)
    chunk = min(config.query_chunk or num_queries, num_queries)
    rel_args = (embedded.audio, arrays.audio_mask, embedded.queries, embedded.neutral,
                arrays.query_recording, arrays.query_slot, arrays.slot_query)
    mask = arrays.audio_mask[arrays.query_recording]
    t_len = mask.shape[1]
    padded = -(-num_queries // chunk) * chunk
    mask_p = _chunk_rows(mask, 0, padded)
    duration_p = _chunk_rows(arrays.duration, 0, padded)

    rel_exec, rel_compile_s = _compiled(
        cache, ("relevance", config.relevance) + _signature(rel_args),
        functools.partial(relevance_curves, config.relevance), rel_args)
    loc_args = (jax.ShapeDtypeStruct((chunk, t_len), jnp.float32),
                jax.ShapeDtypeStruct((chunk, t_len), jnp.bool_),
                jax.ShapeDtypeStruct((chunk,), jnp.float32))
    fused_params = fused_fit.resolve_params(config) if config.localizer == "fused" else None
    settings = json.dumps({k: config[k].to_dict() if hasattr(config[k], "to_dict") else config[k]
                           for k in ("localizer", "num_windows", "frame_offset_s", "fwhm", "gmm",
                                     "dp", "fused")} | {"fused_params": fused_params},
                          sort_keys=True)
    loc_exec, loc_compile_s = _compiled(cache, ("localize", settings, chunk, t_len),
                                        functools.partial(localize_curves, config,
                                                          fused_params=fused_params), loc_args)
    compile_s = rel_compile_s + loc_compile_s

    t0 = time.perf_counter()
    curves = rel_exec(*rel_args)
    if padded > num_queries:
        curves = jnp.concatenate([curves, jnp.zeros((padded - num_queries, t_len), curves.dtype)])
    outputs = [loc_exec(curves[s:s + chunk], mask_p[s:s + chunk], duration_p[s:s + chunk])
               for s in range(0, padded, chunk)]
    outputs = jax.block_until_ready(outputs)
    localize_s = time.perf_counter() - t0

    host = [jax.tree.map(np.asarray, o) for o in outputs]
    merged = jax.tree.map(lambda *xs: np.concatenate(xs)[:num_queries], *host)
    return LocalizeResult(windows=merged.windows, valid=merged.valid, curves=np.asarray(curves)[:num_queries],
                          mask=mask, details=merged, compile_s=compile_s, localize_s=localize_s,
                          frame_offset_s=config.frame_offset_s)


def _localize_split_llm(config: ml_collections.ConfigDict, arrays: SplitArrays,
                        embedded: Embedded, backend, *, cache: CompiledCache) -> LocalizeResult:
    """The language-model localizer: jitted curves and FWHM fallback, host-side generation.

    The fallback windows are jointproj's FWHM windows with `config.fwhm` (s1 by default); the
    number of queries that used them is in `details.fallback`.
    """
    from amr_jax.localize import llm

    if backend is None:
        raise ValueError("the llm localizer needs a backend (llm.make_backend)")
    if not config.llm.examples:
        raise ConfigError(f"{config.system} needs --config.llm.examples=EXAMPLES.jsonl (worked "
                          "examples from the training split: python -m experiments.llm_examples)")
    examples = llm.load_examples(config.llm.examples)
    fwhm_config = ml_collections.ConfigDict(config.to_dict())
    fwhm_config.localizer = "fwhm"
    base = localize_split(fwhm_config, arrays, embedded, cache=cache)
    t0 = time.perf_counter()
    out = llm.llm_windows(backend, arrays.query_text, base.curves, base.mask, arrays.duration,
                          examples, base.windows, base.valid, num_windows=config.num_windows,
                          batch_size=config.llm.batch_size, max_values=config.llm.max_values)
    details = systems.Localization(windows=out.windows, valid=out.valid,
                                   curve=np.asarray(base.details.curve), fallback=out.fallback)
    return dataclasses.replace(base, windows=out.windows, valid=out.valid, details=details,
                               localize_s=base.localize_s + time.perf_counter() - t0)


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
                     cache: CompiledCache | None = None) -> dict:
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

    Returns:
      {"system", "metrics" (None on blind sets), "timings", "result" (LocalizeResult),
       "plots" (paths of the figures written), "embedded" (the Embedded the localizer used)}.
    """
    start = time.perf_counter()
    if split is None:
        split = sources.load_source(config.source, annotations=annotations, audio_dir=audio_feats,
                                    text_dir=text_feats, data_dir=config.data_dir,
                                    num_workers=config.num_workers, progress=config.progress)
        check_timing(split, config.frame_offset_s)
    load_s = time.perf_counter() - start

    t0 = time.perf_counter()
    if arrays is None:
        arrays = split_arrays(split, max_frames=config.max_frames, frame_bucket=config.frame_bucket)
    if embedded is None:
        embedded = embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=neutral_feats,
                               tokenizer_dir=tokenizer_dir, query_route=query_route)
    embed_s = time.perf_counter() - t0

    backend = None
    if config.localizer == "llm":
        from amr_jax.localize import llm

        backend = llm.make_backend(config, clap_dir=clap_dir, tokenizer_dir=tokenizer_dir)
    result = localize_split(config, arrays, embedded, backend=backend, cache=cache)
    if config.localizer == "llm":
        fallbacks = int(np.asarray(result.details.fallback).sum())
        print(f"{config.system}: {fallbacks} of {len(split.records)} answers did not parse and "
              "used the FWHM fallback", flush=True)
    predictions_lib.write_predictions(output, split.records, result.windows, result.valid)
    total_s = time.perf_counter() - start
    times = {"load_s": load_s, "embed_s": embed_s, "localize_s": result.localize_s,
             "compile_s": result.compile_s, "total_s": total_s}
    if config.localizer == "llm":
        times["llm_fallbacks"] = fallbacks
    logging.info("%s: %d queries; load %.2f s, embed %.2f s, compile %.2f s, localize %.3f s",
                 config.system, len(split.records), load_s, embed_s, result.compile_s,
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
    if is_annotated(split.records):
        metrics = metrics_lib.compute_metrics(split.records, windows=result.windows,
                                              valid=result.valid, source=str(output))
        if print_report:
            from amr_jax.eval.report import report_text, summary_json_line

            print(report_text(config.system, metrics))
            print(summary_json_line(metrics), flush=True)
    return {"system": config.system, "metrics": metrics, "timings": times, "result": result,
            "plots": plots, "embedded": embedded}


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
    `{system: metrics}` as `metrics.compute_metrics` gives them (None on blind sets).
    With `print_table`, prints the table and, last, the JSON of every system's
    five headline figures.
    """
    first = configs[0]
    split = sources.load_source(first.source, annotations=annotations, audio_dir=audio_feats,
                                text_dir=text_feats, data_dir=first.data_dir,
                                num_workers=first.num_workers, progress=first.progress)
    for offset in dict.fromkeys(c.frame_offset_s for c in configs):
        check_timing(split, offset)
    arrays = split_arrays(split, max_frames=first.max_frames, frame_bucket=first.frame_bucket)
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
                               output=Path(output_dir) / f"{config.system}.jsonl", cache=cache)
        out["timings"]["embed_s"] += shared_embed_s
        out["timings"]["total_s"] += shared_embed_s
        times[config.system] = {k: round(v, 4) for k, v in out["timings"].items()}
        rows[config.system] = out["metrics"]
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
