"""Batch structures shared by every system: shapes and masks documented once.

All arrays are padded to fixed maximum lengths taken from the config (never to
the per-batch maximum) so that jitted functions compile once per split.
Boolean masks are True on valid entries.
"""

from __future__ import annotations

import flax.struct
import jax


@flax.struct.dataclass
class QueryBatch:
    """One row per query, audio repeated per query.

    Attributes:
        audio: [B, T, D_a] float32 backbone audio features (D_a = 768), zero padded.
        audio_mask: [B, T] bool, True on the first `num_frames` frames.
        text: [B, L, D_t] float32 per-token text features (D_t = 768); the last
            valid row is the end-of-text token.
        text_mask: [B, L] bool.
        windows: [B, W, 2] float32 ground-truth (start, end) in seconds, zero padded.
        window_mask: [B, W] bool; all False on blind sets.
        duration: [B] float32 recording duration in seconds (from the annotations).
    """

    audio: jax.Array
    audio_mask: jax.Array
    text: jax.Array
    text_mask: jax.Array
    windows: jax.Array
    window_mask: jax.Array
    duration: jax.Array

    @property
    def batch_size(self) -> int:
        return self.audio.shape[0]
