"""Bounded-memory localization: a split read, embedded and localized chunk by chunk.

`pipeline.run_localization` holds every feature file of a split in memory at once (padded to
`[N, T, 768]` audio and `[B, L, 768]` text), so its peak memory grows with the split. Here the
recordings are taken in file order, `recordings_per_chunk` at a time (never more than
`queries_per_chunk` queries, a recording's queries always together); each chunk's features are
read, embedded, localized with the same kernels and dropped before the next chunk is read.

Every chunk has one fixed shape, so each kernel compiles once: recordings are padded to
`recordings_per_chunk` rows, queries to `queries_per_chunk` rows (padded queries point at slot 0
of row 0; their outputs are discarded), frames to the length the whole split would get
(`localize_arrays.frame_length` over every recording, read from the `.npz` headers alone), slots to the
split's largest number of queries per recording. Text is kept as each query's end-of-text row
only (`[B, 1, 768]`): the only row the released-feature route reads. Only the annotations, the
per-query outputs (`[B, 10, 3]`) and one chunk live in memory, whatever the split's size.

The predictions are bit-identical to the whole-split run with `query_chunk = stream_queries`
(tests/localize/test_streaming.py): XLA:CPU's float32 localizer results depend on the batch
size by about one ulp, so against the default `query_chunk = 0` (one batch of every query) the
window bounds agree and scores may differ by ~1e-7 (invisible at the 4 decimals written).

Not covered: `query_route="text"` with GPT-2 (it runs per query anyway) and `--plot_qids`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import ml_collections
import numpy as np
from absl import logging

from amr_jax.compiled import CompiledCache
from amr_jax.data import features
from amr_jax.data.loader import Split, check_missing
from amr_jax.data.npz import NpzArchive
from amr_jax.data.records import QueryRecord, is_annotated, read_annotations
from amr_jax.errors import ConfigError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import predictions as predictions_lib
from amr_jax.io_utils import atomic_write_text
from amr_jax.localize import arrays as localize_arrays
from amr_jax.localize import embedding
from amr_jax.localize import program
from amr_jax.localize import pipeline


def plan_chunks(records: list[QueryRecord], *, recordings_per_chunk: int,
                queries_per_chunk: int) -> list[list[str]]:
    """Groups the recordings (first-appearance order) into chunks of whole recordings.

    Returns:
      vids per chunk; a chunk holds at most `recordings_per_chunk` recordings and
      `queries_per_chunk` queries.

    Raises:
      ConfigError: a recording has more queries than `queries_per_chunk`.
    """
    per_vid: dict[str, int] = {}
    for r in records:
        per_vid[r.vid] = per_vid.get(r.vid, 0) + 1
    chunks, current, queries = [], [], 0
    for vid, n in per_vid.items():
        if n > queries_per_chunk:
            raise ConfigError(f"recording {vid} has {n} queries, more than stream_queries="
                              f"{queries_per_chunk}; raise --config.stream_queries")
        if current and (len(current) == recordings_per_chunk or queries + n > queries_per_chunk):
            chunks.append(current)
            current, queries = [], 0
        current.append(vid)
        queries += n
    if current:
        chunks.append(current)
    return chunks


def audio_lengths(audio_dir: str | os.PathLike, vids: list[str]) -> dict[str, int]:
    """Frames per recording read from the `.npz` headers alone (the data is validated later)."""
    lengths = {}
    for vid in vids:
        path = features.audio_feature_path(audio_dir, vid)
        with NpzArchive(path) as npz:
            shape = npz.shape(features.AUDIO_KEY) if features.AUDIO_KEY in npz.files else (0,)
        lengths[vid] = shape[1] if len(shape) == 3 and shape[0] == 1 else shape[0]
    return lengths


def chunk_arrays(split: Split, *, t_len: int, num_recordings: int, num_queries: int,
                 slots: int) -> localize_arrays.SplitArrays:
    """One chunk as fixed-shape `SplitArrays` (padding described in the module docstring)."""
    dim = features.FEATURE_DIM
    # Padding recordings have no frame; padding queries get one zero end-of-text row.
    recordings = [split.audio[v][:t_len] for v in split.vids]
    recordings += [np.zeros((0, dim), np.float32)] * (num_recordings - len(recordings))
    texts = [split.text[r.key][-1:] for r in split.records]
    texts += [np.zeros((1, dim), np.float32)] * (num_queries - len(texts))
    query_recording = np.zeros(num_queries, np.int32)
    query_slot = np.zeros(num_queries, np.int32)
    slot_query = np.full((num_recordings, slots), -1, np.int32)
    row = {v: i for i, v in enumerate(split.vids)}
    counts = np.zeros(num_recordings, np.int32)
    for b, r in enumerate(split.records):
        n = row[r.vid]
        query_recording[b], query_slot[b] = n, counts[n]
        slot_query[n, counts[n]] = b
        counts[n] += 1
    duration = np.ones(num_queries, np.float32)
    duration[:len(split.records)] = [r.duration for r in split.records]
    return localize_arrays.SplitArrays(
        recordings=recordings,
        audio_mask=localize_arrays.length_mask([len(a) for a in recordings], t_len),
        texts=texts, text_mask=np.ones((num_queries, 1), bool), query_recording=query_recording,
        query_slot=query_slot, slot_query=slot_query, duration=duration,
        query_text=[r.query for r in split.records])


def _load_chunk(records: list[QueryRecord], vids: list[str], audio_dir, text_dir,
                annotations: Path) -> Split:
    wanted = set(vids)
    chunk_records = [r for r in records if r.vid in wanted]
    audio = {v: features.load_audio_features(features.audio_feature_path(audio_dir, v))
             for v in vids}
    text = {r.key: features.load_text_features(features.text_feature_path(text_dir, r.qid))
            for r in chunk_records}
    return Split(records=chunk_records, audio=audio, text=text, vids=list(vids),
                 annotations=annotations)


def stream_localization(config: ml_collections.ConfigDict, *, annotations: str | os.PathLike,
                        audio_feats: str | os.PathLike, text_feats: str | os.PathLike,
                        output: str | os.PathLike, clap_dir: str | os.PathLike | None = None,
                        neutral_feats: str | os.PathLike | None = None,
                        timings: str | os.PathLike | None = None,
                        print_report: bool = True) -> dict:
    """`pipeline.run_localization` in chunks of `config.stream_recordings` recordings and at
    most `config.stream_queries` queries (see the module docstring).

    Returns:
      {"system", "metrics" (None on blind sets), "timings", "windows" [B, K, 3],
       "valid" [B, K], "num_chunks"}.
    """
    if config.source != "folders":
        raise ConfigError("stream_recordings needs config.source='folders' (one file per "
                          "recording and query)")
    start = time.perf_counter()
    annotations = Path(annotations)
    records = read_annotations(annotations)
    vids = list(dict.fromkeys(r.vid for r in records))
    check_missing([features.audio_feature_path(audio_feats, v) for v in vids], "audio")
    check_missing([features.text_feature_path(text_feats, r.qid) for r in records], "text")
    lengths = audio_lengths(audio_feats, vids)
    t_len = localize_arrays.frame_length(list(lengths.values()), max_frames=config.max_frames,
                                  frame_bucket=config.frame_bucket)
    chunks = plan_chunks(records, recordings_per_chunk=config.stream_recordings,
                         queries_per_chunk=config.stream_queries)
    per_vid: dict[str, int] = {}
    for r in records:
        per_vid[r.vid] = per_vid.get(r.vid, 0) + 1
    slots = max(per_vid.values())
    position = {r.key: i for i, r in enumerate(records)}
    windows = valid = None  # allocated with the localizer's dtypes on the first chunk
    annotated = is_annotated(records)
    scored = np.zeros(len(records), bool)
    r1_iou = np.zeros(len(records))
    ap = np.zeros((len(records), len(metrics_lib.IOU_THRESHOLDS)))
    times = {"load_s": 0.0, "embed_s": 0.0, "localize_s": 0.0, "compile_s": 0.0}
    cache = CompiledCache()  # every chunk has the same shapes: its kernels compile once
    for i, chunk in enumerate(chunks):
        t0 = time.perf_counter()
        split = _load_chunk(records, chunk, audio_feats, text_feats, annotations)
        if i == 0:
            pipeline.check_timing(split, config.frame_offset_s)
        times["load_s"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        arrays = chunk_arrays(split, t_len=t_len, num_recordings=config.stream_recordings,
                              num_queries=config.stream_queries, slots=slots)
        embedded = embedding.embed_split(config, arrays, clap_dir=clap_dir,
                                        neutral_feats=neutral_feats)
        times["embed_s"] += time.perf_counter() - t0
        result = program.localize_split(config, arrays, embedded, cache=cache)
        times["localize_s"] += result.localize_s
        times["compile_s"] += result.compile_s
        rows = np.asarray([position[r.key] for r in split.records])
        if windows is None:
            windows = np.zeros((len(records),) + result.windows.shape[1:], result.windows.dtype)
            valid = np.zeros((len(records),) + result.valid.shape[1:], bool)
        windows[rows] = result.windows[:len(rows)]
        valid[rows] = result.valid[:len(rows)]
        if annotated:  # per-query scores now: scoring 50,000 queries at once needs ~200 MB
            scores = metrics_lib.per_query_scores(split.records, windows=windows[rows],
                                                  valid=valid[rows], source=str(output))
            scored[rows[scores["rows"]]] = True
            r1_iou[rows[scores["rows"]]] = scores["r1_iou"]
            ap[rows[scores["rows"]]] = scores["ap"]
        del split, arrays, embedded, result  # before the next chunk is read
        if config.progress:
            logging.info("chunk %d/%d: %d recordings", i + 1, len(chunks), len(chunk))
    predictions_lib.write_predictions(output, records, windows, valid)
    times["total_s"] = time.perf_counter() - start
    if timings:
        atomic_write_text(timings, json.dumps({k: round(v, 4) for k, v in times.items()}) + "\n")
    logging.info("%s: %d queries in %d chunks; load %.2f s, embed %.2f s, compile %.2f s, "
                 "localize %.3f s", config.system, len(records), len(chunks), times["load_s"],
                 times["embed_s"], times["compile_s"], times["localize_s"])
    metrics = None
    if annotated:
        # File order, as compute_metrics averages: the same figures bit for bit.
        metrics = metrics_lib.metrics_from_scores(r1_iou[scored], ap[scored])
        if print_report:
            from amr_jax.eval.report import report_text, summary_json_line

            print(report_text(config.system, metrics))
            print(summary_json_line(metrics), flush=True)
    return {"system": config.system, "metrics": metrics, "timings": times, "windows": windows,
            "valid": valid, "num_chunks": len(chunks)}
