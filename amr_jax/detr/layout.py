"""The two QD-DETR input layouts (DESIGN 9.1): how a query's features become model inputs.

Both layouts L2-normalize the audio per frame (`x / (|x| + 1e-5)`, after cutting it
to `max_frames`) and append the two temporal endpoint features
`(i / ctx_l, (i + 1) / ctx_l)`; the model is the same. They differ in:

| | `dcase` (default, official DCASE 2026 baseline) | `lighthouse` |
|---|---|---|
| audio row [770] | `[clap_768 ‖ tef_start, tef_end]` | `[tef_start, tef_end ‖ clap_768]` |
| text | raw `last_hidden_state` rows, never cut | L2-normalized per token, cut to 32 |
| token padding | longest text of the run's splits, or a configured maximum (a longer text is an error naming the qid) | `max_tokens` (0 means 32) |
| best epoch | val R1@0.7 | val mAP |

The DCASE baseline (`src/dataset.py`) concatenates `[audio_feat, tef]`, loads the
text without normalization or cutting (its `max_q_l` is unused) and pads each batch
to its longest text; lighthouse (`training/dataset.py`) feeds tef as the "video"
and concatenates `[video, audio]` in the model. Padding lengths do not change the
model's outputs (padded tokens are masked everywhere), so fixing them per run only
keeps shapes static.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import ml_collections

from amr_jax.data.errors import DataError
from amr_jax.data.records import QueryRecord

DCASE = "dcase"
LIGHTHOUSE = "lighthouse"


class TextTooLongError(DataError):
    """A query's text has more tokens than a configured maximum that must not cut it."""

    hint = "raise data.max_tokens, or set it to 0 to pad to the longest text of the split"


@dataclasses.dataclass(frozen=True)
class Layout:
    """One input layout.

    Attributes:
      name: "dcase" or "lighthouse".
      tef_first: True puts the two endpoint features before the 768 audio dims.
      normalize_text: L2-normalize text per token.
      truncate_text: keep the first `max_tokens` tokens (else a longer text raises).
      default_max_tokens: pad length used when `data.max_tokens` is 0; None pads to
        the longest text of the run's splits.
      best_metric: validation metric (brief key) used when `train.best_metric` is "".
      audio_proj_prefix: the reference state-dict name of the audio input projection.
    """

    name: str
    tef_first: bool
    normalize_text: bool
    truncate_text: bool
    default_max_tokens: int | None
    best_metric: str
    audio_proj_prefix: str


LAYOUTS = {
    DCASE: Layout(name=DCASE, tef_first=False, normalize_text=False, truncate_text=False,
                  default_max_tokens=None, best_metric="R1@0.7",
                  audio_proj_prefix="input_aud_proj"),
    LIGHTHOUSE: Layout(name=LIGHTHOUSE, tef_first=True, normalize_text=True, truncate_text=True,
                       default_max_tokens=32, best_metric="mAP",
                       audio_proj_prefix="input_vid_proj"),
}


def get_layout(name: str) -> Layout:
    """The layout called `name`; raises naming the choices."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown input layout {name!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


def longest_text(texts: dict, records: Iterable[QueryRecord]) -> int:
    """Largest token count among `records` (texts: qid key -> [L, D])."""
    return max((texts[r.key].shape[0] for r in records), default=1)


def check_text_lengths(texts: dict, records: Sequence[QueryRecord], max_tokens: int, *,
                       source: str) -> None:
    """Raises TextTooLongError naming every query whose text exceeds `max_tokens`."""
    long = [(r.qid, texts[r.key].shape[0]) for r in records if texts[r.key].shape[0] > max_tokens]
    if long:
        shown = ", ".join(f"qid {q!r} ({n} tokens)" for q, n in long[:20])
        more = f" and {len(long) - 20} more" if len(long) > 20 else ""
        raise TextTooLongError(
            f"{source}: {len(long)} queries have more than data.max_tokens={max_tokens} text "
            f"tokens: {shown}{more}. The dcase layout never cuts text: raise data.max_tokens "
            "or set it to 0 (pad to the longest text)")


def token_pad_length(layout: Layout, max_tokens: int, splits: Sequence) -> int:
    """The fixed text pad length of a run over `splits` (objects with `text`, `records`).

    `max_tokens` > 0: that length (for a non-truncating layout every text must fit,
    checked here). 0: the layout's default, or the longest text of the splits.
    """
    if max_tokens < 0:
        raise ValueError(f"data.max_tokens must be >= 0, got {max_tokens}")
    if max_tokens == 0 and layout.default_max_tokens is not None:
        return layout.default_max_tokens
    if max_tokens == 0:
        return max(longest_text(s.text, s.records) for s in splits)
    if not layout.truncate_text:
        for s in splits:
            check_text_lengths(s.text, s.records, max_tokens, source=str(s.annotations))
    return max_tokens


def resolve_run_config(config: ml_collections.ConfigDict, splits: Sequence
                       ) -> ml_collections.ConfigDict:
    """A copy of `config` with the layout's defaults filled in for one run.

    `data.max_tokens` becomes the fixed pad length over `splits`, an empty
    `train.best_metric` the layout's metric and `model.tef_first` the layout's
    order. The workdir keeps the config as given (so a later prediction resolves
    the pad length over its own split).
    """
    layout = get_layout(config.data.layout)
    resolved = ml_collections.ConfigDict(config.to_dict())
    resolved.data.max_tokens = token_pad_length(layout, config.data.max_tokens, splits)
    # UVCOM splits the audio row by the layout's order (QD-DETR ignores the field).
    resolved.model.tef_first = layout.tef_first
    if not config.train.best_metric:
        resolved.train.best_metric = layout.best_metric
    resolved.lock()
    return resolved
