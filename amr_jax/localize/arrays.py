"""A loaded split as fixed-shape host arrays: recordings and queries padded for one program.

`split_arrays` lays a split out for one program: every recording padded to one frame length
(the longest, rounded up to `frame_bucket` and capped at `max_frames`), and the queries laid
out so that the relevance kernel reads each recording once for all of its queries
(`query_recording`, `query_slot`, `slot_query`).

The padded feature arrays (`audio` `[N, T, 768]`, `text` `[B, L, 768]`) are built only when
first read: the joint-space systems project the valid frames straight from `recordings`
(`packed_frames`) and read only each query's end-of-text row (`end_of_text_rows`), so a
whole CASTELLA split never pays for the 0.5 GB padded copy it would not use.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from amr_jax.data.loader import Split


@dataclasses.dataclass
class SplitArrays:
    """A split as fixed-shape host arrays.

    Attributes:
      recordings: N arrays `[t_n, 768]` (t_n <= T): each recording's frames, truncated to T
        (views of the loaded features, not copies).
      audio_mask: `[N, T]` bool, True on the first t_n frames of row n.
      texts: B arrays `[l_b, 768]` (l_b <= L): each query's token rows.
      text_mask: `[B, L]` bool, True on the first l_b rows of row b.
      query_recording: `[B]` int32 recording row of each query.
      query_slot: `[B]` int32 position of the query among its recording's queries.
      slot_query: `[N, S]` int32 query of each slot, -1 where empty.
      duration: `[B]` float32 seconds.
      query_text: the B raw query strings (the raw-text route).
    """

    recordings: list[np.ndarray]
    audio_mask: np.ndarray
    texts: list[np.ndarray]
    text_mask: np.ndarray
    query_recording: np.ndarray
    query_slot: np.ndarray
    slot_query: np.ndarray
    duration: np.ndarray
    query_text: list[str]

    @functools.cached_property
    def audio(self) -> np.ndarray:
        """`[N, T, 768]` float32 raw audio features per recording, zero-padded."""
        return _pad_rows(self.recordings, self.audio_mask.shape[1])

    @functools.cached_property
    def text(self) -> np.ndarray:
        """`[B, L, 768]` float32 text features per query, zero-padded."""
        return _pad_rows(self.texts, self.text_mask.shape[1])

    def end_of_text_rows(self) -> np.ndarray:
        """`[B, 768]` each query's last valid token row (what CLAP pools): the row
        `saliency.end_of_text` takes from the padded `text`, read without padding."""
        empty = [b for b, t in enumerate(self.texts) if len(t) == 0]
        if empty:
            raise ValueError(f"text rows {empty[:10]} have no valid token")
        return np.stack([t[-1] for t in self.texts]).astype(np.float32, copy=False)

    def packed_frames(self) -> tuple[np.ndarray, np.ndarray]:
        """The valid frames of every recording, packed densely in rows of the padded length.

        Returns:
          packed: `[R, T, 768]` float32, R = ceil(valid frames / T); the frames of recording 0,
            then 1, ...; zero past the last one.
          position: `[N * T]` int32, the packed (flattened) index of each frame of the padded
            layout, 0 on padding (the caller masks those with `audio_mask`).
        """
        n_rec, t_len = self.audio_mask.shape
        lengths = self.audio_mask.sum(axis=1)
        total = int(lengths.sum())
        dim = self.recordings[0].shape[1] if self.recordings else 0
        rows = max(1, -(-total // t_len))
        packed = np.zeros((rows * t_len, dim), np.float32)
        if total:
            np.concatenate([r for r in self.recordings if len(r)], axis=0, out=packed[:total])
        position = np.zeros(n_rec * t_len, np.int32)
        position[self.audio_mask.reshape(-1)] = np.arange(total, dtype=np.int32)
        return packed.reshape(rows, t_len, dim), position


def _pad_rows(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    dim = next((r.shape[1] for r in rows if r.ndim == 2), 0)
    out = np.zeros((len(rows), length, dim), np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def frame_length(lengths: Sequence[int], *, max_frames: int, frame_bucket: int) -> int:
    """The padded frame length of a split: longest recording rounded up, capped."""
    longest = max(max(lengths, default=1), 1)
    return int(min(max_frames, math.ceil(longest / frame_bucket) * frame_bucket))


def length_mask(lengths: Sequence[int], width: int) -> np.ndarray:
    """`[len(lengths), width]` bool, True on the first lengths[i] positions of row i."""
    return np.arange(width)[None, :] < np.asarray(lengths, np.int64).reshape(-1, 1)


def split_arrays(split: Split, *, max_frames: int, frame_bucket: int,
                 longest: int | None = None, slots: int | None = None) -> SplitArrays:
    """Lays a loaded split out as `SplitArrays` (recordings in `split.vids` order).

    `longest`, `slots`: the longest recording (frames) and the most queries of one recording
    to pad for, when `split` is one shard of a larger split whose shapes it must share
    (multi-host scoring); default: this split's own.
    """
    vids = split.vids
    lengths = [split.audio[v].shape[0] for v in vids]
    t_len = frame_length(lengths if longest is None else [longest], max_frames=max_frames,
                         frame_bucket=frame_bucket)
    recordings = [split.audio[v][:t_len] for v in vids]
    texts = [split.text[r.key] for r in split.records]
    l_len = max(t.shape[0] for t in texts)
    query_recording = split.vid_index()
    counts = np.zeros(len(vids), np.int64)
    query_slot = np.zeros(len(texts), np.int32)
    for b, n in enumerate(query_recording):
        query_slot[b] = counts[n]
        counts[n] += 1
    width = max(int(counts.max(initial=1)), 1) if slots is None else slots
    slot_query = np.full((len(vids), width), -1, np.int32)
    slot_query[query_recording, query_slot] = np.arange(len(texts), dtype=np.int32)
    duration = np.asarray([r.duration for r in split.records], np.float32)
    return SplitArrays(recordings=recordings,
                       audio_mask=length_mask([len(a) for a in recordings], t_len),
                       texts=texts, text_mask=length_mask([len(t) for t in texts], l_len),
                       query_recording=query_recording.astype(np.int32), query_slot=query_slot,
                       slot_query=slot_query, duration=duration,
                       query_text=[r.query for r in split.records])
