"""SYNTHETIC MS-CLAP features in the exact DCASE layout, for tests and demos.

Real MS-CLAP weights and DCASE features cannot be downloaded here, so this
module builds a small generative "world" that stands in for them:

- a *nuisance* subspace N of the 768-d backbone space holds a large modality
  offset for audio and for text, and a smooth query-independent fluctuation
  over time in the audio. Raw backbone cosine is dominated by these terms, so
  localizing with it is close to chance (the published finding);
- MS-CLAP projection heads with random weights whose first linear layer is
  built to annihilate N (`W1 = G (I - U U^T)`): after the heads only the
  semantic content remains and the joint space is sharp;
- queries are bags of hashed word vectors in the semantic subspace; audio
  frames inside a query's windows contain that query's vector, every frame
  contains a slowly varying background ("background sound", "ambient noise",
  "background audio") and a few unrelated distractor events;
- frames sit in time as the real extractors cut them (`amr_jax.data.timing`):
  CASTELLA frame i covers [i, i+1) s; Clotho-Moment is centre-cut (T = duration
  + 1, frame i covers [i - 0.5, i + 0.5)), so an event's overlap with each frame
  is measured on that frame's own interval.

Everything here is synthetic and says so in the files it writes
(`SYNTHETIC.json`). The world depends on `world_seed` only, so train, val and
test splits written with different `seed`s share vocabulary and heads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import zlib
from pathlib import Path

import numpy as np
import tqdm
from absl import logging

from amr_jax.data import features as features_lib
from amr_jax.data.timing import FRAME_OFFSET_S
from amr_jax.data.records import QueryRecord, read_annotations
from amr_jax.io_utils import atomic_save_npz, atomic_write_text

DIM = features_lib.FEATURE_DIM
JOINT_DIM = 1024
NEUTRAL_PHRASES = ("background sound", "ambient noise", "background audio")
PROJECTION_KEYS = ("linear1.weight", "linear2.weight", "layer_norm.weight", "layer_norm.bias")
HEAD_PREFIXES = ("audio_encoder.projection.", "caption_encoder.projection.")
CHECKPOINT_STEM = "msclap_synthetic"
MAX_CASTELLA_FRAMES = 300
PRESETS = ("castella", "clotho_moment", "clotho_moment_long")

_STOPWORDS = frozenset(
    "a an the is are as and of in on with while then by to from at something someone being it its "
    "some there into over while".split())
_SUBJECTS = ("A dog", "A man", "A woman", "A car", "A bird", "Water", "A door", "A phone", "A child",
             "An engine", "A bell", "Wind", "Rain", "A crowd", "A motorcycle", "A train", "Music",
             "A cat", "Birds", "A horn", "A baby", "A siren", "A hammer", "Thunder")
_VERBS = ("barks", "speaks", "laughs", "honks", "chirps", "runs", "slams", "rings", "cries", "revs",
          "tolls", "blows", "falls", "cheers", "passes by", "plays", "meows", "sings", "blares",
          "shouts", "knocks", "whistles", "splashes", "rumbles")
_TAILS = ("", "", "loudly", "in the distance", "nearby", "repeatedly", "twice", "softly")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Magnitudes of the generative model (norms in the 768-d backbone space)."""

    nuisance_dims: int = 8
    fluct_dims: int = 4
    modality_offset: float = 8.0      # norm of the audio and the text offsets
    fluct_amplitude: float = 2.5      # per-dimension std of the query-independent fluctuation
    fluct_smoothing: float = 6.0      # frames
    event_strength: float = 1.0
    background_strength: float = 1.0
    background_variation: float = 0.5
    frame_noise: float = 0.45          # per-dimension std of white frame noise
    text_signal: float = 1.0
    text_noise: float = 0.25
    # Every caption shares a generic "this is a sound" direction with the
    # background, so raw joint similarity rises with background loudness for all
    # queries alike (what background contrast removes).
    caption_background: float = 0.8
    head_text_perturbation: float = 0.05
    linear2_scale: float = 0.1
    distractors_per_minute: float = 1.0


def tokenize(query: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", query.lower())


def _smooth_noise(rng: np.random.Generator, length: int, dims: int, sigma: float) -> np.ndarray:
    """[length, dims] zero-mean, unit-std Gaussian-smoothed noise."""
    pad = int(4 * sigma) + 1
    raw = rng.standard_normal((length + 2 * pad, dims))
    x = np.arange(-pad, pad + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= np.sqrt((kernel ** 2).sum())
    out = np.stack([np.convolve(raw[:, d], kernel, mode="valid") for d in range(dims)], axis=1)
    return out[:length]


class SyntheticWorld:
    """Word vectors, nuisance subspace and MS-CLAP heads shared by every split of a world."""

    def __init__(self, world_seed: int = 0, config: WorldConfig = WorldConfig()):
        self.seed = world_seed
        self.config = config
        rng = np.random.default_rng([world_seed, 7])
        basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        self.nuisance = basis[:, :config.nuisance_dims]                   # [768, k] orthonormal
        self.fluct = self.nuisance[:, :config.fluct_dims]                  # [768, f]
        self.semantic_projector = np.eye(DIM) - self.nuisance @ self.nuisance.T
        # Offsets live in the nuisance subspace; both share the fluctuation
        # directions, so the audio fluctuation moves the raw text-audio dot product
        # the same way for every query.
        c_audio = rng.standard_normal(config.nuisance_dims)
        c_text = rng.standard_normal(config.nuisance_dims)
        c_text[:config.fluct_dims] = np.abs(c_text[:config.fluct_dims]) + 1.0
        self.audio_offset = self.nuisance @ (config.modality_offset * c_audio / np.linalg.norm(c_audio))
        self.text_offset = self.nuisance @ (config.modality_offset * c_text / np.linalg.norm(c_text))
        self._word_cache: dict[str, np.ndarray] = {}
        self.background = self.phrase_vector(" ".join(NEUTRAL_PHRASES))
        self.heads = self._make_heads(rng)

    def _make_heads(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        c = self.config
        shared = rng.standard_normal((JOINT_DIM, DIM)) / np.sqrt(DIM)
        params = {}
        for prefix in HEAD_PREFIXES:
            g = shared
            if prefix.startswith("caption"):
                g = shared + c.head_text_perturbation * rng.standard_normal(shared.shape) / np.sqrt(DIM)
            params[prefix + "linear1.weight"] = (g @ self.semantic_projector).astype(np.float32)
            params[prefix + "linear2.weight"] = (
                c.linear2_scale * rng.standard_normal((JOINT_DIM, JOINT_DIM)) / np.sqrt(JOINT_DIM)
            ).astype(np.float32)
            params[prefix + "layer_norm.weight"] = (1.0 + 0.1 * rng.standard_normal(JOINT_DIM)).astype(np.float32)
            params[prefix + "layer_norm.bias"] = (0.02 * rng.standard_normal(JOINT_DIM)).astype(np.float32)
        params["logit_scale"] = np.asarray(np.log(1 / 0.07), np.float32)
        return params

    def word_vector(self, word: str) -> np.ndarray:
        """Unit vector of a word in the semantic subspace (deterministic per world)."""
        if word not in self._word_cache:
            rng = np.random.default_rng([self.seed, zlib.crc32(word.encode("utf-8"))])
            v = self.semantic_projector @ rng.standard_normal(DIM)
            self._word_cache[word] = v / np.linalg.norm(v)
        return self._word_cache[word]

    def _weighted_words(self, words: list[str]) -> np.ndarray:
        """[len(words), 768] weighted word vectors (stop words count little)."""
        if not words:
            words = ["<empty>"]
        return np.stack([(0.2 if w in _STOPWORDS else 1.0) * self.word_vector(w) for w in words])

    def phrase_vector(self, text: str) -> np.ndarray:
        """Unit semantic vector of a whole query."""
        v = self._weighted_words(tokenize(text)).sum(0)
        return v / np.linalg.norm(v)

    def text_features(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """[L, 768] float32 per-token states; row i summarizes words <= i, last row = end-of-text."""
        c = self.config
        words = tokenize(text) or ["<empty>"]
        cumulative = np.cumsum(self._weighted_words(words), axis=0)
        cumulative /= np.linalg.norm(cumulative, axis=1, keepdims=True)
        cumulative += c.caption_background * self.background[None]
        rows = np.concatenate([cumulative, cumulative[-1:]], axis=0)        # + end-of-text row
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        noise = rng.standard_normal(rows.shape) * (c.text_noise / np.sqrt(DIM))
        out = self.text_offset + c.text_signal * rows + noise
        return out.astype(np.float32)

    def audio_features(self, num_frames: int, events: list[tuple[np.ndarray, np.ndarray]],
                       rng: np.random.Generator, *, frame_offset_s: float) -> np.ndarray:
        """[T, 768] float32 frames.

        Args:
          num_frames: T.
          events: (unit semantic vector [768], windows [K, 2] seconds) pairs; frame
            i covers [i + o, i + 1 + o) and gets the vector scaled by its overlap.
          rng: randomness of this recording.
          frame_offset_s: o, 0 for CASTELLA, -0.5 for centre-cut Clotho-Moment.
        """
        c = self.config
        t = np.arange(num_frames, dtype=np.float64) + frame_offset_s
        fluct = _smooth_noise(rng, num_frames, c.fluct_dims, c.fluct_smoothing) * c.fluct_amplitude
        ambience = self.semantic_projector @ rng.standard_normal(DIM)
        ambience /= np.linalg.norm(ambience)
        level = c.background_strength * (1.0 + c.background_variation
                                         * _smooth_noise(rng, num_frames, 1, 10.0)[:, 0])
        x = (self.audio_offset[None] + fluct @ self.fluct.T
             + level[:, None] * (0.7 * self.background + 0.7 * ambience)[None])
        for vector, windows in events:
            overlap = np.zeros(num_frames)
            for st, en in np.asarray(windows, np.float64).reshape(-1, 2):
                overlap += np.clip(np.minimum(t + 1, en) - np.maximum(t, st), 0, 1)
            # Events differ in loudness and fade in and out frame to frame.
            loudness = c.event_strength * rng.uniform(0.6, 1.4)
            strength = loudness * np.clip(overlap, 0, 1) * rng.uniform(0.6, 1.0, num_frames)
            x += strength[:, None] * vector[None]
        x += rng.standard_normal(x.shape) * c.frame_noise
        return x.astype(np.float32)

    def distractor_vector(self, rng: np.random.Generator) -> np.ndarray:
        words = [rng.choice(_SUBJECTS).split()[-1].lower(), str(rng.choice(_VERBS)).split()[0]]
        v = self._weighted_words(words).sum(0)
        return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- annotations


def _draw_castella_windows(rng: np.random.Generator, duration: int) -> list[list[int]]:
    """Non-overlapping integer windows: median length ~4 s, about half the queries with several."""
    count = 1 if rng.random() < 0.48 else int(min(2 + rng.geometric(0.35), 12))
    windows, occupied = [], np.zeros(duration + 1, bool)
    for _ in range(count * 4):
        if len(windows) == count:
            break
        length = int(np.clip(np.round(np.exp(rng.normal(np.log(4.0), 1.0))), 1, duration // 2))
        start = int(rng.integers(0, max(1, duration - length)))
        if occupied[start:start + length + 1].any():
            continue
        occupied[start:start + length + 1] = True
        windows.append([start, start + length])
    return windows


def draw_castella_annotations(rng: np.random.Generator, num_recordings: int) -> list[dict]:
    """CASTELLA-like statistics: durations 59-300 s, 1-5 queries per recording."""
    lines = []
    for i in range(num_recordings):
        vid = f"synth{i:05d}"
        duration = int(300 if rng.random() < 0.4 else rng.integers(59, 301))
        for k in range(1, int(rng.integers(1, 6)) + 1):
            query = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)}".strip()
            lines.append({"qid": f"{vid}_{k}", "query": query, "duration": duration, "vid": vid,
                          "relevant_windows": _draw_castella_windows(rng, duration)})
    return lines


def draw_clotho_moment_annotations(rng: np.random.Generator, num_recordings: int,
                                   first_qid: int = 0) -> list[dict]:
    """Clotho-Moment-like: 60 s recordings, one window per query, mostly >= 10 s, 0.1 s bounds."""
    lines = []
    for i in range(num_recordings):
        length = float(np.clip(rng.normal(19.0, 6.0), 1.0, 30.0)) if rng.random() > 0.04 else float(
            rng.uniform(1.0, 10.0))
        start = float(rng.uniform(0, 60.0 - length))
        query = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_TAILS)} while "
                 f"{str(rng.choice(_SUBJECTS)).lower()} {rng.choice(_VERBS)}").replace("  ", " ")
        lines.append({"qid": f"{first_qid + i:05d}", "query": query, "duration": 60,
                      "vid": f"synthclotho_{i:05d}",
                      "relevant_windows": [[round(start, 1), round(start + length, 1)]],
                      "fg_dB": round(float(rng.uniform(-5, 5)), 3)})
    return lines


def draw_clotho_moment_long_annotations(rng: np.random.Generator, num_recordings: int,
                                        first_qid: int = 0) -> list[dict]:
    """Clotho-Moment-Long-like: the real recipe (`clotho_moment_long.generate_recipes`, 300 s,
    Exp(45 s) gaps, recurrences) over a synthetic clip pool; one 300 s background per clip.

    The pool has Clotho-like clips (durations as the Clotho-Moment windows: mostly
    N(19, 6) s cut to [1, 30]) with five captions sharing a subject and a verb.
    """
    from amr_jax.data import clotho_moment_long as cml  # the recipe, not needed otherwise

    pool = []
    for i in range(max(200, 3 * num_recordings)):
        duration = (float(np.clip(rng.normal(19.0, 6.0), 1.0, 30.0)) if rng.random() > 0.04
                    else float(rng.uniform(1.0, 10.0)))
        subject, verb = rng.choice(_SUBJECTS), rng.choice(_VERBS)
        captions = tuple(
            f"{subject} {verb} {rng.choice(_TAILS)} while {str(rng.choice(_SUBJECTS)).lower()} "
            f"{rng.choice(_VERBS)}".replace("  ", " ") for _ in range(5))
        pool.append(cml.Foreground(f"synthfg_{i:05d}", round(duration, 2), captions,
                                   f"synthfg_{i:05d}.wav"))
    config = cml.RecipeConfig()
    backgrounds = [cml.Background(f"synthwalk{i:05d}", config.clip_s, f"synthwalk{i:05d}.wav")
                   for i in range(num_recordings)]
    recipes, _ = cml.generate_recipes(pool, backgrounds, config=config,
                                      seed=int(rng.integers(2 ** 31)), first_qid=first_qid)
    return cml.annotation_lines(recipes)


def _records_to_lines(records: list[QueryRecord]) -> list[dict]:
    lines = []
    for r in records:
        line = {"qid": r.qid, "query": r.query, "duration": r.duration, "vid": r.vid}
        if float(r.duration).is_integer():
            line["duration"] = int(r.duration)
        if r.raw_windows is not None:
            line["relevant_windows"] = [[int(v) if float(v).is_integer() else float(v) for v in w]
                                        for w in r.raw_windows.tolist()]
        line.update(r.extra)
        lines.append(line)
    return lines


def _limit_recordings(lines: list[dict], num_recordings: int | None) -> list[dict]:
    if num_recordings is None:
        return lines
    keep = set(list(dict.fromkeys(line["vid"] for line in lines))[:num_recordings])
    return [line for line in lines if line["vid"] in keep]


# ----------------------------------------------------------------------------- writing


def num_frames_for(preset: str, duration: float) -> int:
    """Frames as the real extractors produce them (see DESIGN section 2)."""
    if preset == "clotho_moment":
        return int(np.floor(duration)) + 1              # half a window padded on each side
    return int(min(np.floor(duration), MAX_CASTELLA_FRAMES))


def write_checkpoint(world: SyntheticWorld, output: Path) -> list[Path]:
    """Writes the heads in MS-CLAP key names: `.npz` always, `.pth` when torch is installed."""
    paths = [atomic_save_npz(output / f"{CHECKPOINT_STEM}.npz", **world.heads)]
    try:
        import torch  # optional: only to produce the real checkpoint container
    except ImportError:
        logging.info("torch not installed: writing the .npz checkpoint only")
        return paths
    import io
    from amr_jax.io_utils import atomic_write_bytes
    buffer = io.BytesIO()
    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in world.heads.items()}}, buffer)
    paths.append(atomic_write_bytes(output / f"{CHECKPOINT_STEM}.pth", buffer.getvalue()))
    return paths


def generate_split(preset: str, output: str | os.PathLike, *, seed: int = 0, world_seed: int = 0,
                   annotations: str | os.PathLike | None = None, num_recordings: int | None = None,
                   num_workers: int = 4, progress: bool = True) -> dict:
    """Writes a SYNTHETIC split in the DCASE layout.

    Layout under `output`:
      annotations.jsonl, clap/<vid>.npz, clap_text/qid<qid>.npz,
      neutral_text/<phrase>.npz, msclap_synthetic.npz (+ .pth), SYNTHETIC.json.

    Args:
      preset: "castella", "clotho_moment" or "clotho_moment_long" (300 s recordings,
        whole-second frames as CASTELLA: the report extracts its features that way).
      output: target folder (created).
      seed: randomness of this split (annotations when drawn, features).
      world_seed: the shared world (vocabulary, heads, nuisance subspace).
      annotations: reuse the queries, durations and windows of a real file.
      num_recordings: keep only the first N recordings (default: all / 200 drawn).

    Returns:
      A summary dict (also written to SYNTHETIC.json).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    output = Path(output)
    rng = np.random.default_rng([seed, 1])
    if annotations is not None:
        lines = _limit_recordings(_records_to_lines(read_annotations(annotations)), num_recordings)
    elif preset == "castella":
        lines = draw_castella_annotations(rng, num_recordings or 200)
    elif preset == "clotho_moment_long":
        lines = draw_clotho_moment_long_annotations(rng, num_recordings or 200)
    else:
        lines = draw_clotho_moment_annotations(rng, num_recordings or 200)
    world = SyntheticWorld(world_seed)
    # SYNTHETIC.json is written last: while a (re)generation runs, or after it is
    # interrupted, the folder carries no completion mark (each file is whole, old or new).
    (output / "SYNTHETIC.json").unlink(missing_ok=True)
    ann_path = atomic_write_text(output / "annotations.jsonl",
                                 "".join(json.dumps(line) + "\n" for line in lines))
    records = read_annotations(ann_path)

    by_vid: dict[str, list[QueryRecord]] = {}
    for r in records:
        by_vid.setdefault(r.vid, []).append(r)
    vids = list(by_vid)

    def write_recording(index: int) -> int:
        vid = vids[index]
        vrng = np.random.default_rng([seed, 2, index])
        queries = by_vid[vid]
        frames = num_frames_for(preset, queries[0].duration)
        events = [(world.phrase_vector(q.query), q.windows) for q in queries if q.windows is not None]
        per_minute = world.config.distractors_per_minute * frames / 60.0
        for _ in range(int(vrng.poisson(per_minute))):
            length = float(np.clip(np.exp(vrng.normal(np.log(4.0), 0.8)), 1, 30))
            start = float(vrng.uniform(0, max(1.0, frames - length)))
            events.append((world.distractor_vector(vrng), np.asarray([[start, start + length]])))
        atomic_save_npz(features_lib.audio_feature_path(output / "clap", vid),
                        features=world.audio_features(frames, events, vrng,
                                                      frame_offset_s=FRAME_OFFSET_S[preset]))
        for q in queries:
            qrng = np.random.default_rng([seed, 3, zlib.crc32(q.key.encode("utf-8"))])
            atomic_save_npz(features_lib.text_feature_path(output / "clap_text", q.qid),
                            last_hidden_state=world.text_features(q.query, qrng))
        return frames

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        frames = list(tqdm.tqdm(pool.map(write_recording, range(len(vids))), total=len(vids),
                                desc=f"synthetic {preset}", unit="rec", disable=not progress,
                                mininterval=1.0))
    for phrase in NEUTRAL_PHRASES:
        prng = np.random.default_rng([world_seed, 4, zlib.crc32(phrase.encode("utf-8"))])
        atomic_save_npz(output / "neutral_text" / f"{phrase.replace(' ', '_')}.npz",
                        last_hidden_state=world.text_features(phrase, prng))
    checkpoints = write_checkpoint(world, output)
    summary = {
        "SYNTHETIC": "features and MS-CLAP weights are synthetic stand-ins, not real data",
        "preset": preset, "seed": seed, "world_seed": world_seed,
        "frame_offset_s": FRAME_OFFSET_S[preset],
        "annotations_source": str(annotations) if annotations else None,
        "num_queries": len(records), "num_recordings": len(vids), "num_frames": int(sum(frames)),
        "checkpoints": [p.name for p in checkpoints],
    }
    atomic_write_text(output / "SYNTHETIC.json", json.dumps(summary, indent=2) + "\n")
    return summary
