"""What the localizers consume: each recording projected once, one vector per query.

`embed_split` turns `SplitArrays` into `Embedded`: the raw backbone rows (backbone_cosine) or
MS-CLAP joint-space frames (only the valid frames are projected: they are packed densely first),
the queries from their released end-of-text rows (`query_route="features"`) or their raw text
through MS-CLAP's GPT-2 (`"text"`), and gmm_contrast's neutral direction.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from amr_jax.errors import UsageError
from amr_jax.localize.arrays import SplitArrays

QUERY_ROUTES = ("features", "text")
DEFAULT_QUERY_ROUTE = "features"


@dataclasses.dataclass
class Embedded:
    """What the localizer consumes: per-recording frames and per-query vectors.

    Attributes:
      audio: `[N, T, E]` frames (joint space, normalized) or raw backbone rows, on device.
      queries: `[B, E]` query vectors.
      neutral: `[E]` neutral direction (contrast only), else None.
      stage_s: seconds per stage ("weights": reading the heads, "queries", "audio": padding or
        packing, projecting and placing the frames), for timings and benchmarks.
    """

    audio: np.ndarray
    queries: np.ndarray
    neutral: np.ndarray | None
    stage_s: dict[str, float] = dataclasses.field(default_factory=dict)


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
        t0 = time.perf_counter()
        queries = arrays.end_of_text_rows()
        t1 = time.perf_counter()
        audio = jax.block_until_ready(jax.device_put(arrays.audio))
        return Embedded(audio=audio, queries=queries, neutral=None,
                        stage_s={"weights": 0.0, "queries": t1 - t0,
                                 "audio": time.perf_counter() - t1})
    if not clap_dir:
        raise ValueError(f"system {config.system} needs --clap (a converted MS-CLAP folder)")
    from amr_jax.clap import convert, embed  # heavy imports only for the joint-space systems
    from amr_jax.clap.text_route import require_tokenizer

    t0 = time.perf_counter()
    clap = convert.load_converted(clap_dir).to_model()
    # Every missing piece of the raw-text route is reported before any heavy work.
    tokenizer = None
    if query_route == "text":
        tokenizer = require_tokenizer(clap, clap_dir=clap_dir, tokenizer_dir=tokenizer_dir,
                                      needed_for="--query_route=text")
    t1 = time.perf_counter()
    neutral = None
    if config.relevance == "contrast":
        neutral = neutral_direction(config, clap, clap_dir=clap_dir, neutral_feats=neutral_feats,
                                    tokenizer_dir=tokenizer_dir, tokenizer=tokenizer)
    if query_route == "text":
        queries = embed.embed_query_from_text(clap, tokenizer, arrays.query_text,
                                              progress=config.progress)
        logging.info("%d queries embedded from their raw text through GPT-2", len(queries))
    else:
        rows = arrays.end_of_text_rows()  # [B, 768]: as one-token texts, no padded copy
        queries = embed.embed_query_from_features(clap, rows[:, None], np.ones((len(rows), 1), bool))
    t2 = time.perf_counter()
    audio = jax.block_until_ready(_project_packed(
        embed.project_audio, clap, arrays, chunk_size=config.embed_chunk, progress=config.progress))
    return Embedded(audio=audio, queries=queries, neutral=neutral,
                    stage_s={"weights": t1 - t0, "queries": t2 - t1,
                             "audio": time.perf_counter() - t2})


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


def _project_packed(project, clap, arrays: SplitArrays, **kwargs) -> jax.Array:
    """Projects only the valid frames: they are packed densely into rows of the padded length
    (the head acts on each frame alone), projected, and put back in place on the device.

    Recordings of a split differ in length (CASTELLA: 59-300 s), so projecting the padded
    `[N, T, 768]` array would spend a third of the work on padding.

    Returns:
      `[N, T, E]` on the device, 0 on padded frames.
    """
    n_rec, t_len = arrays.audio_mask.shape
    packed, position = arrays.packed_frames()
    rows = packed.shape[0]
    packed_mask = (np.arange(rows * t_len) < int(arrays.audio_mask.sum())).reshape(rows, t_len)
    # The projected rows stay on the device (no copy to host and back).
    out = project(clap, packed, packed_mask, on_device=True, **kwargs).reshape(rows * t_len, -1)
    valid = arrays.audio_mask.reshape(-1)
    gathered = _unpack(out, jnp.asarray(position), jnp.asarray(valid))
    return gathered.reshape(n_rec, t_len, -1)


@jax.jit
def _unpack(packed: jax.Array, position: jax.Array, valid: jax.Array) -> jax.Array:
    return jnp.where(valid[:, None], packed[position], 0.0)
