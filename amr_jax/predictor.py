"""`Predictor`: localize free-text (or feature) queries in any recording, weights loaded once.

    from amr_jax import Predictor
    predictor = Predictor(system="gmm_contrast", clap_dir="runs/clap_converted",
                          tokenizer_dir="gpt2_tokenizer")
    result = predictor.predict("my_recording.npz", "a dog barks")
    result.windows   # [[start_s, end_s, score], ...] best first, at most 10

A `Predictor` runs exactly the code of the binaries: a training-free system through
`localize.pipeline` (as `experiments.localize`), or a trained DETR workdir through the
trainer's prediction program (as `experiments.predict_detr`). For a recording of at most
`max_frames` frames (300) its windows equal what those binaries write for the same data.

Longer recordings are not truncated: the audio is cut into overlapping segments of
`max_frames` frames with a hop of `hop_frames` (default half a segment), every segment is
localized as its own recording, its windows are shifted to absolute seconds, and the
windows of all segments are merged by greedy temporal NMS (IoU > `merge_iou`, default 0.7)
in score order, keeping the best 10. Scores of different segments are compared as they
are (each system's score is computed per recording: for the training-free systems from
the recording's own standardized curve), so this merge is a documented approximation,
not the result of a single 900 s pass. The returned relevance curve is the mean of the
segments' curves where they overlap.

Queries are raw text (needs the GPT-2 weights in the converted MS-CLAP folder and a
tokenizer folder, `tokenizer_dir`) or released-style text features `[L, 768]` (the last
valid row is the end-of-text token). Audio is `[T, 768]` features, a `.npz` path in the
release layout (key `features`), or a `.wav` path: the wav is encoded in JAX by the
converted folder's HTS-AT (`clap_dir` converted from a checkpoint with
`audio_encoder.base.htsat.*`), 1 s windows with 1 s hop over whole seconds without a
300 s cap (lighthouse's inference cut, `audio_frontend.window_audio(..., "lighthouse")`),
and `duration` defaults to the file's length.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amr_jax.compiled import CompiledCache
from amr_jax.data import features as features_lib
from amr_jax.data.loader import Split
from amr_jax.data.records import QueryRecord
from amr_jax.errors import UsageError

MAX_WINDOWS = 10
RECORDING = "recording"


@dataclasses.dataclass
class Prediction:
    """One query's result.

    Attributes:
      query: the query text (empty for feature queries without text).
      windows: `[[start_s, end_s, score], ...]`, best first, at most 10.
      curve: `[T]` relevance per frame (training-free systems; None for DETR).
    """

    query: str
    windows: list[list[float]]
    curve: np.ndarray | None


def segment_starts(num_frames: int, *, max_frames: int, hop_frames: int) -> list[int]:
    """First frame of each segment; the last segment ends at the last frame."""
    if num_frames <= max_frames:
        return [0]
    starts = list(range(0, num_frames - max_frames, hop_frames))
    return starts + [num_frames - max_frames]


def merge_segment_windows(windows: np.ndarray, valid: np.ndarray, *, iou_threshold: float,
                          num_windows: int = MAX_WINDOWS) -> list[list[float]]:
    """Greedy NMS over the windows of every segment of one query.

    Args:
      windows: `[S, K, 3]` absolute (start_s, end_s, score) of each segment.
      valid: `[S, K]` bool.

    Returns:
      up to `num_windows` `[start_s, end_s, score]` lists, best first.
    """
    from amr_jax.localize.nms import nms_top_windows

    flat, ok = windows.reshape(-1, 3), valid.reshape(-1)
    score = np.where(ok, flat[:, 2], -np.inf)[None]
    merged, kept = nms_top_windows(flat[None, :, 0], flat[None, :, 1], score,
                                   iou_threshold=iou_threshold, num_windows=num_windows)
    merged, kept = np.asarray(merged)[0], np.asarray(kept)[0]
    return [[float(v) for v in w] for w in merged[kept]]


def _audio_array(audio) -> np.ndarray:
    if isinstance(audio, (str, os.PathLike)):
        return features_lib.load_audio_features(audio)
    x = np.asarray(audio, np.float32)
    if x.ndim != 2 or x.shape[1] != features_lib.FEATURE_DIM or len(x) < 2:
        raise UsageError(f"audio features must be [T >= 2, {features_lib.FEATURE_DIM}], got {x.shape}")
    return x


class Predictor:
    """Loads a system once and localizes queries in any recording.

    Interactive and single-process: a multi-host whole split goes through
    `experiments.localize` / `experiments.predict_detr` with --num_processes.

    Args:
      system: a training-free system of `experiments/configs/localize.py` (ignored with
        `detr_workdir`).
      clap_dir: converted MS-CLAP folder (`experiments.convert_clap`).
      tokenizer_dir: GPT-2 tokenizer folder (vocab.json, merges.txt) for raw-text queries.
      neutral_feats: the three neutral-prompt text features (gmm_contrast; else from text).
      detr_workdir: a `train_detr` / `convert_detr` workdir (best checkpoint, else latest).
      config: a localize config to use instead of `system`'s default.
      hop_frames: segment hop for long recordings (default `max_frames // 2`).
      merge_iou: NMS IoU threshold when merging segments.
      model_factory: as `train_and_evaluate` (default: QD-DETR), for `detr_workdir`.
    """

    def __init__(self, *, system: str = "gmm_contrast", clap_dir: str | os.PathLike | None = None,
                 tokenizer_dir: str | os.PathLike | None = None,
                 neutral_feats: str | os.PathLike | None = None,
                 detr_workdir: str | os.PathLike | None = None, config=None,
                 hop_frames: int | None = None, merge_iou: float = 0.7, model_factory=None):
        self.clap_dir, self.tokenizer_dir, self.neutral_feats = clap_dir, tokenizer_dir, neutral_feats
        self.merge_iou = merge_iou
        self._detr = None
        if detr_workdir is not None:
            from amr_jax.train import trainer
            from amr_jax.train.checkpointing import restore_params

            self.config = trainer.load_config(detr_workdir)
            self._programs, state = trainer.build_programs(
                self.config, steps_per_epoch=1,
                model_factory=model_factory or trainer.build_qd_detr,
                mesh=trainer.data_mesh())
            self._detr, _ = restore_params(detr_workdir, state)
            self.max_frames = int(self.config.data.max_frames)
        else:
            from amr_jax.configs import localize as localize_configs

            self.config = config if config is not None else localize_configs.get_config(system)
            self.max_frames = int(self.config.max_frames)
        self.hop_frames = hop_frames or max(1, self.max_frames // 2)
        self._embedded_cache = None
        self._compiled = CompiledCache(max_entries=8)  # queries of recurring shapes reuse kernels
        self._audio_encoder = None

    def _wav_features(self, path: Path) -> tuple[np.ndarray, float]:
        """`[T, 768]` features of a wav file and its duration in seconds."""
        from amr_jax.clap import audio_frontend, convert, extract

        if self._audio_encoder is None:
            if self.clap_dir is None:
                raise UsageError(f"{path}: a wav input needs clap_dir (a converted MS-CLAP folder "
                                 "with HTS-AT weights)")
            model = convert.load_converted(self.clap_dir).htsat_module()
            if model is None:
                raise UsageError(f"{path}: {self.clap_dir} holds no HTS-AT weights "
                                 "(audio_encoder.base.htsat.*); convert the full MS-CLAP 2023 "
                                 "checkpoint with experiments.convert_clap")
            self._audio_encoder = extract.AudioEncoder(model)
        signal, rate = audio_frontend.load_wav(path)
        feats = self._audio_encoder.encode_signal(signal, rate, "lighthouse")
        return feats, len(signal) / rate

    # ------------------------------------------------------------------------------------

    def _split(self, segments: list[np.ndarray], durations: list[float], texts: list[str],
               text_feats: list[np.ndarray]) -> Split:
        """An in-memory split: every query on every segment (qid `<query>@<segment>`)."""
        records, audio, text = [], {}, {}
        for s, (seg, duration) in enumerate(zip(segments, durations)):
            vid = f"{RECORDING}@{s}"
            audio[vid] = seg
            for q, (query, feats) in enumerate(zip(texts, text_feats)):
                record = QueryRecord(qid=f"{q}@{s}", query=query, duration=float(duration),
                                     vid=vid, windows=None, raw_windows=None)
                records.append(record)
                text[record.key] = feats
        return Split(records=records, audio=audio, text=text, vids=list(audio),
                     annotations=Path("<Predictor>"))

    def _localize(self, split: Split, query_route: str):
        from amr_jax.localize import arrays as localize_arrays
        from amr_jax.localize import embedding
        from amr_jax.localize import program

        arrays = localize_arrays.split_arrays(split, max_frames=self.config.max_frames,
                                       frame_bucket=self.config.frame_bucket)
        embedded = embedding.embed_split(self.config, arrays, clap_dir=self.clap_dir,
                                        neutral_feats=self.neutral_feats,
                                        tokenizer_dir=self.tokenizer_dir, query_route=query_route)
        result = program.localize_split(self.config, arrays, embedded, cache=self._compiled)
        return result.windows, result.valid, result.curves, result.mask

    def _predict_detr(self, split: Split):
        windows, valid = self._programs.predict_split(self._detr, split, self.config.data,
                                                      batch_size=self.config.train.eval_batch_size)
        return np.asarray(windows), np.asarray(valid), None, None

    def predict(self, audio, queries: str | np.ndarray | Sequence[str | np.ndarray], *,
                duration: float | None = None) -> Prediction | list[Prediction]:
        """Localizes one or several queries in one recording.

        Args:
          audio: `[T, 768]` float features (one row per second), a `.npz` path, or a
            `.wav` path (encoded with the HTS-AT of `clap_dir`).
          queries: a query text, a `[L, 768]` text-feature array, or a list of either kind
            (all of one kind). Raw text needs `clap_dir` with GPT-2 weights and
            `tokenizer_dir` (training-free) or is refused (DETR reads feature rows).
          duration: the recording's length in seconds (windows are clipped to it, as the
            annotation's `duration` in the binaries); default one second per frame.

        Returns:
          a `Prediction` per query (a single one when `queries` is not a list).
        """
        single = isinstance(queries, str) or (isinstance(queries, np.ndarray) and queries.ndim == 2)
        items = [queries] if single else list(queries)
        if not items:
            raise UsageError("no queries given")
        raw_text = isinstance(items[0], str)
        if any(isinstance(q, str) != raw_text for q in items):
            raise UsageError("queries must be all text or all feature arrays")
        if raw_text and self._detr is not None:
            raise UsageError("a DETR predictor reads text features [L, 768]; pass the query's "
                             "GPT-2 feature rows (clap_text/qid<qid>.npz), not its text")
        texts = [q if raw_text else "" for q in items]
        # The text route ignores the feature rows; one placeholder row keeps shapes valid.
        text_feats = [np.zeros((1, features_lib.FEATURE_DIM), np.float32) if raw_text
                      else np.asarray(q, np.float32) for q in items]
        if isinstance(audio, (str, os.PathLike)) and Path(audio).suffix.lower() == ".wav":
            audio, wav_seconds = self._wav_features(Path(audio))
            duration = wav_seconds if duration is None else duration
        frames = _audio_array(audio)
        starts = segment_starts(len(frames), max_frames=self.max_frames, hop_frames=self.hop_frames)
        segments = [frames[s:s + self.max_frames] for s in starts]
        total = float(duration) if duration is not None else float(len(frames))
        # Inner segments end where the next begins; the last one keeps the recording's end.
        durations = [float(len(seg)) if k < len(starts) - 1 else total - start
                     for k, (start, seg) in enumerate(zip(starts, segments))]
        split = self._split(segments, durations, texts, text_feats)
        if self._detr is not None:
            windows, valid, curves, mask = self._predict_detr(split)
        else:
            windows, valid, curves, mask = self._localize(split, "text" if raw_text else "features")
        num_q = len(items)
        windows = np.asarray(windows).reshape(len(segments), num_q, *np.shape(windows)[1:])
        valid = np.asarray(valid).reshape(len(segments), num_q, -1)
        if curves is not None:  # [S, Q, T] per segment and query
            curves = np.asarray(curves).reshape(len(segments), num_q, -1)
            mask = np.asarray(mask).reshape(len(segments), num_q, -1)
        results = []
        for q in range(num_q):
            shifted = windows[:, q].copy()
            shifted[..., :2] += np.asarray(starts, np.float64)[:, None, None]
            if len(segments) == 1:
                kept = [[float(v) for v in w] for w in shifted[0][valid[0, q]]][:MAX_WINDOWS]
            else:
                kept = merge_segment_windows(shifted, valid[:, q], iou_threshold=self.merge_iou)
            curve = None
            if curves is not None:
                curves_q, mask_q = curves[:, q], mask[:, q]
                total, count = np.zeros(len(frames)), np.zeros(len(frames))
                for s, start in enumerate(starts):
                    n = int(mask_q[s].sum())
                    total[start:start + n] += curves_q[s, :n]
                    count[start:start + n] += 1
                curve = (total / np.maximum(count, 1)).astype(np.float32)
            results.append(Prediction(query=texts[q], windows=kept, curve=curve))
        return results[0] if single else results
