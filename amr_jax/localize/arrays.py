"""A loaded split as fixed-shape host arrays: recordings and queries padded for one program.

`split_arrays` pads every recording to one frame length (the longest, rounded up to
`frame_bucket` and capped at `max_frames`) and lays the queries out so that the relevance kernel
reads each recording once for all of its queries (`query_recording`, `query_slot`, `slot_query`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from amr_jax.data.loader import Split


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
