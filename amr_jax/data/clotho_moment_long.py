"""Clotho-Moment-Long recipes: long, sparse, multi-moment mixtures (DESIGN 9.7).

Clotho-Moment (lighthouse's generator, `Lighthouse-Wrapper-for-Audio-Moment-Retrieval/
clotho-moment_generetor`) overlays Clotho foreground clips on Walking Tours background
recordings: for each background clip it walks through time, drawing before each event a
silence `~ Exp(mean)` and stopping at the first event that no longer fits; foreground levels
are U[-5, 5] dB, background levels U[-25, -15] dB (the mixing rule is in
`amr_jax/data/cm_mixer.py`). Clotho-Moment-Long keeps that recipe with a 300 s context, a
45 s mean gap, and events that recur: with probability 0.35 an event occurs k in {2, 3, 4}
times (uniform). One query per event (one of its captions, uniform), every occurrence in its
`relevant_windows`.

How the gap process and the recurrences fit together here (our construction; the report
gives only the parameters):

- an *event* is drawn with its foreground clip (clips are used in shuffled passes over the
  list, so usage is even), its caption, k, one level per occurrence and one gap
  `~ Exp(mean_gap_s)` before each occurrence. Gaps are redrawn until the event's k
  occurrences and gaps fit the context (the gaps' distribution conditioned on fitting: a
  k = 4 event needs about 4 x (45 + 22) s of 300 s, so about a third of them redraw and
  their gaps average about 33 s; single events are unaffected);
- clips are filled in order: each event is placed while the clip's remaining room holds all
  its occurrences with their gaps; the first event that does not fit closes the clip (the
  reference's stopping rule) and *opens the next clip* instead of being discarded. So every
  drawn event ends up in the data and the realized share of recurring events is the
  recipe's. (Discarding it, as the reference does with its single events, keeps mostly
  short single events: at 300 s, 45 s gaps and ~22 s clips the realized recurrence share
  falls from 0.35 to about 0.27.) An event is also deferred when its foreground clip is
  already in the clip;
- inside a clip the (gap, occurrence) pairs of its events are shuffled, so recurrences are
  interleaved with other events, then laid out from 0 s: occurrence i starts after the
  end of occurrence i-1 plus its own gap. Occurrences therefore never overlap each other,
  and the silence before each occurrence is exactly its drawn gap; what is left after the
  last occurrence is trailing silence (as in the reference).

Realized gaps (`recipe_statistics`): the silences of a clip with N occurrences are its
N + 1 stretches between the clip edges and the occurrences (leading, between, trailing);
their mean is the recipe's mean gap within a few percent (the trailing one is a gap cut
short by the clip end, the conditioned gaps of recurring events are shorter). The silence
before occurrences of single events alone is the unconditioned Exp(mean) draw.

Files (the release layout of `clotho_moment_{split}_release.jsonl`):
  recipes.jsonl: one line per clip (background id/start/level, events with occurrences),
    enough for `cm_mixer.render_recipe` to rebuild the audio from local files;
  annotations.jsonl: one line per event, `{"qid", "query", "duration", "vid",
    "relevant_windows", "fg_dB"}`; windows rounded to 0.1 s and sorted, `fg_dB` a list aligned
    with the windows (Clotho-Moment has one scalar; here each occurrence has its own level).

Input lists (jsonl, one object per line):
  foreground: `{"id": str, "duration": s, "captions": [str, ...], "path"?: str,
  "offset"?: s}` (the clip is [offset, offset + duration) of its file; `cm_lists` builds this
  list from Clotho with the generator's trimming);
  background: `{"id": str, "duration": s, "path"?: str}`; `path` (relative to the audio
  root) defaults to `<id>.wav`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import iter_json_lines
from amr_jax.io_utils import atomic_write_text


class InputListError(AnnotationError):
    """A malformed foreground / background list (names the file, line and field)."""

    hint = ("fix the list; each line is a JSON object: foreground {\"id\", \"duration\", "
            "\"captions\": [...]}, background {\"id\", \"duration\"} (see "
            "amr_jax/data/clotho_moment_long.py)")


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """Parameters of the recipe (DESIGN 9.7); defaults are the report's."""

    clip_s: float = 300.0
    mean_gap_s: float = 45.0
    recur_prob: float = 0.35
    recur_counts: tuple[int, ...] = (2, 3, 4)
    fg_db: tuple[float, float] = (-5.0, 5.0)
    bg_db: tuple[float, float] = (-25.0, -15.0)
    # Start of consecutive background segments of one recording (s). The reference cut its
    # 60 s clips every 1 s; the default here gives non-overlapping segments.
    bg_hop_s: float = 300.0

    def __post_init__(self):
        if not (self.clip_s > 0 and self.mean_gap_s > 0 and self.bg_hop_s > 0):
            raise ValueError(f"clip_s, mean_gap_s and bg_hop_s must be positive: {self}")
        if not 0 <= self.recur_prob <= 1 or not self.recur_counts or min(self.recur_counts) < 2:
            raise ValueError(f"recur_prob must be in [0, 1] and recur_counts >= 2: {self}")


@dataclasses.dataclass(frozen=True)
class Foreground:
    id: str
    duration: float
    captions: tuple[str, ...]
    path: str
    offset: float = 0.0  # where the clip starts in its file (s): the generator trims quiet heads


@dataclasses.dataclass(frozen=True)
class Background:
    id: str
    duration: float
    path: str


# ----------------------------------------------------------------------------- input lists


def _json_lines(path: str | os.PathLike, kind: str):
    """`iter_json_lines`, its errors (missing file, malformed JSON) as InputListError."""
    try:
        yield from iter_json_lines(path, kind=kind)
    except AnnotationError as e:
        raise InputListError(str(e)) from None


def _field(obj, name: str, where: str, kind: type | tuple[type, ...]):
    if not isinstance(obj, dict):
        raise InputListError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if name not in obj:
        raise InputListError(f"{where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputListError(f"{where}: field '{name}' has the wrong type ({value!r})")
    return value


def _common(obj, where: str, seen: dict[str, str]) -> tuple[str, float, str]:
    item_id = _field(obj, "id", where, str)
    if not item_id:
        raise InputListError(f"{where}: field 'id' is empty")
    if item_id in seen:
        raise InputListError(f"{where}: duplicate id {item_id!r} (first at {seen[item_id]})")
    seen[item_id] = where
    duration = float(_field(obj, "duration", where, (int, float)))
    if not math.isfinite(duration) or duration <= 0:
        raise InputListError(f"{where} id={item_id}: field 'duration' must be a positive "
                             f"number, got {obj['duration']!r}")
    path = obj.get("path", f"{item_id}.wav")  # optional field of the list format
    if not isinstance(path, str) or not path:
        raise InputListError(f"{where} id={item_id}: field 'path' must be a non-empty string")
    return item_id, duration, path


def read_foreground_list(path: str | os.PathLike, *, max_duration_s: float) -> list[Foreground]:
    """Foreground clips `{"id", "duration", "captions", "path"?}`, file order.

    Raises:
      InputListError: missing file, malformed JSON, missing/ill-typed fields, duplicate ids,
        no captions, a clip longer than `max_duration_s` (it could never be placed), no clips.
    """
    items, seen = [], {}
    for where, obj in _json_lines(path, "foreground list"):
        item_id, duration, rel = _common(obj, where, seen)
        captions = _field(obj, "captions", f"{where} id={item_id}", list)
        if not captions or not all(isinstance(c, str) and c.strip() for c in captions):
            raise InputListError(f"{where} id={item_id}: field 'captions' must be a non-empty "
                                 f"list of non-empty strings")
        if duration > max_duration_s:
            raise InputListError(f"{where} id={item_id}: duration {duration:g} s exceeds the "
                                 f"{max_duration_s:g} s context")
        offset = obj.get("offset", 0.0)  # optional field of the list format
        if not isinstance(offset, (int, float)) or isinstance(offset, bool) or not (
                math.isfinite(offset) and offset >= 0):
            raise InputListError(f"{where} id={item_id}: field 'offset' must be a number >= 0, "
                                 f"got {offset!r}")
        items.append(Foreground(item_id, duration, tuple(c.strip() for c in captions), rel,
                                float(offset)))
    if not items:
        raise InputListError(f"{path}: no foreground clips")
    return items


def read_background_list(path: str | os.PathLike) -> list[Background]:
    """Background recordings `{"id", "duration", "path"?}`, file order.

    Raises:
      InputListError: missing file, malformed JSON, missing/ill-typed fields, duplicate ids,
        no recordings.
    """
    items, seen = [], {}
    for where, obj in _json_lines(path, "background list"):
        items.append(Background(*_common(obj, where, seen)))
    if not items:
        raise InputListError(f"{path}: no background recordings")
    return items


# ----------------------------------------------------------------------------- recipes


@dataclasses.dataclass
class _Event:
    fg: Foreground
    caption: str
    gaps: np.ndarray      # [k] seconds of silence before each occurrence
    levels: np.ndarray    # [k] dB

    @property
    def need_s(self) -> float:
        return float(self.gaps.sum()) + len(self.gaps) * self.fg.duration


def background_segments(backgrounds: Sequence[Background], config: RecipeConfig
                        ) -> list[tuple[Background, float]]:
    """(recording, start s) of every `clip_s` segment at `bg_hop_s` steps, list order."""
    out = []
    for bg in backgrounds:
        starts = np.arange(0.0, bg.duration - config.clip_s + 1e-9, config.bg_hop_s)
        out.extend((bg, float(s)) for s in starts)
    return out


def _fmt_s(x: float) -> str:
    return f"{x:.1f}"


class _EventStream:
    """Draws events: foreground clips in shuffled passes over the list (even use)."""

    def __init__(self, foregrounds: Sequence[Foreground], config: RecipeConfig,
                 rng: np.random.Generator):
        self.fgs, self.config, self.rng = list(foregrounds), config, rng
        self.order: list[int] = []
        self.redrawn_gaps = 0

    def _next_fg(self) -> Foreground:
        if not self.order:
            self.order = list(self.rng.permutation(len(self.fgs)))
        return self.fgs[self.order.pop()]

    def draw(self) -> _Event:
        """The next event; its gaps are redrawn until it fits an empty clip (counted).

        A recurring event whose k copies cannot fit (or fit only with improbably short gaps,
        100 tries) takes the next foreground clip instead; `generate_recipes` checks that the
        shortest clip fits k times.
        """
        c = self.config
        k = 1
        if self.rng.random() < c.recur_prob:
            k = int(c.recur_counts[self.rng.integers(len(c.recur_counts))])
        levels = self.rng.uniform(*c.fg_db, k)
        while True:
            fg = self._next_fg()
            if k * fg.duration >= c.clip_s:
                continue
            caption = fg.captions[self.rng.integers(len(fg.captions))]
            for _ in range(100):
                event = _Event(fg, caption, self.rng.exponential(c.mean_gap_s, k), levels)
                if event.need_s <= c.clip_s:
                    return event
                self.redrawn_gaps += 1


def generate_recipes(foregrounds: Sequence[Foreground], backgrounds: Sequence[Background], *,
                     config: RecipeConfig = RecipeConfig(), seed: int = 0,
                     num_clips: int | None = None, first_qid: int = 0,
                     progress: Callable[[int, int], None] | None = None
                     ) -> tuple[list[dict], dict]:
    """Recipes of Clotho-Moment-Long clips (see the module docstring for the construction).

    Args:
      foregrounds: clips with durations (s) and captions.
      backgrounds: recordings with durations (s); cut into `clip_s` segments every `bg_hop_s`.
      config: the recipe parameters.
      seed: everything drawn depends on it only (same lists + seed -> same recipes).
      num_clips: number of clips; default one per background segment. Fewer: a random subset
        of the segments (kept in list order).
      first_qid: qids are `f"{first_qid + n:05d}"`, n = 0, 1, ... in clip order.
      progress: called as progress(done, total) after each clip.

    Returns:
      (recipes, generation summary). A recipe:
      `{"vid", "duration", "background": {"id", "path", "start", "dB"},
        "events": [{"qid", "fg_id", "path", "offset", "caption", "duration",
                    "occurrences": [{"start", "dB"}, ...]}, ...]}` (times in seconds).

    Raises:
      InputListError: no background recording is as long as the context, or `num_clips`
        exceeds the number of segments.
    """
    if not foregrounds or not backgrounds:
        raise InputListError("no foreground clips or no background recordings given")
    shortest = min(fg.duration for fg in foregrounds)
    if max(config.recur_counts) * shortest >= config.clip_s:
        raise InputListError(f"the shortest foreground clip ({shortest:g} s) cannot occur "
                             f"{max(config.recur_counts)} times in a {config.clip_s:g} s clip")
    segments = background_segments(backgrounds, config)
    if not segments:
        raise InputListError(f"no background recording is {config.clip_s:g} s long or longer "
                             f"(longest {max(b.duration for b in backgrounds):g} s)")
    rng = np.random.default_rng([seed, 11])
    if num_clips is not None:
        if not 0 < num_clips <= len(segments):
            raise InputListError(
                f"num_clips={num_clips} but the background list gives {len(segments)} segments "
                f"of {config.clip_s:g} s at a {config.bg_hop_s:g} s hop; pass fewer clips or a "
                f"smaller hop")
        keep = np.sort(rng.choice(len(segments), num_clips, replace=False))
        segments = [segments[i] for i in keep]
    stream = _EventStream(foregrounds, config, rng)
    pending: _Event | None = None
    recipes, qid = [], first_qid
    for index, (bg, start) in enumerate(segments):
        placed: list[_Event] = []
        room = config.clip_s
        while True:
            event = pending if pending is not None else stream.draw()
            pending = None
            if event.need_s > room or any(e.fg.id == event.fg.id for e in placed):
                pending = event  # closes this clip, opens the next one
                break
            placed.append(event)
            room -= event.need_s
        slots = [(e_i, j) for e_i, e in enumerate(placed) for j in range(len(e.gaps))]
        order = rng.permutation(len(slots))
        starts: dict[tuple[int, int], float] = {}
        t = 0.0
        for s in order:
            e_i, j = slots[s]
            t += float(placed[e_i].gaps[j])
            starts[(e_i, j)] = t
            t += placed[e_i].fg.duration
        events = []
        for e_i, e in enumerate(placed):
            occ = sorted(({"start": starts[(e_i, j)], "dB": float(e.levels[j])}
                          for j in range(len(e.gaps))), key=lambda o: o["start"])
            events.append({"qid": f"{qid:05d}", "fg_id": e.fg.id, "path": e.fg.path,
                           "offset": e.fg.offset, "caption": e.caption,
                           "duration": e.fg.duration, "occurrences": occ})
            qid += 1
        recipes.append({
            "vid": f"{bg.id}_{_fmt_s(start)}_{_fmt_s(start + config.clip_s)}",
            "duration": int(config.clip_s) if float(config.clip_s).is_integer() else config.clip_s,
            "background": {"id": bg.id, "path": bg.path, "start": start,
                           "dB": float(rng.uniform(*config.bg_db))},
            "events": events,
        })
        if progress is not None:
            progress(index + 1, len(segments))
    summary = {"redrawn_gap_sets": stream.redrawn_gaps,
               "unplaced_events_at_end": int(pending is not None),
               "config": dataclasses.asdict(config), "seed": seed}
    return recipes, summary


def annotation_lines(recipes: Sequence[dict]) -> list[dict]:
    """One annotation line per event in the release layout (windows rounded to 0.1 s)."""
    lines = []
    for recipe in recipes:
        for event in recipe["events"]:
            pairs = sorted((round(o["start"], 1), round(o["start"] + event["duration"], 1),
                            round(o["dB"], 3)) for o in event["occurrences"])
            lines.append({"qid": event["qid"], "query": event["caption"],
                          "duration": recipe["duration"], "vid": recipe["vid"],
                          "relevant_windows": [[st, en] for st, en, _ in pairs],
                          "fg_dB": [db for _, _, db in pairs]})
    return lines


# ----------------------------------------------------------------------------- statistics


def recipe_statistics(recipes: Sequence[dict]) -> dict:
    """What the recipes realize: counts, windows per query, window lengths, gaps (seconds).

    `gap_s`: every silence of every clip, N + 1 per clip with N occurrences (from the clip
    start to the first occurrence, between consecutive occurrences, after the last one).
    `gap_before_occurrence_s`: the N silences before occurrences (the drawn gaps);
    `gap_before_single_s`: those before occurrences of single (k = 1) events;
    `trailing_silence_s`: the silence after the last occurrence of each clip.
    """
    per_query, lengths, before, before_single, trailing, occupancy = [], [], [], [], [], []
    for recipe in recipes:
        spans = sorted((o["start"], o["start"] + e["duration"], len(e["occurrences"]))
                       for e in recipe["events"] for o in e["occurrences"])
        per_query += [len(e["occurrences"]) for e in recipe["events"]]
        lengths += [e["duration"] for e in recipe["events"] for _ in e["occurrences"]]
        end = 0.0
        for st, en, k in spans:
            before.append(st - end)
            if k == 1:
                before_single.append(st - end)
            end = en
        trailing.append(recipe["duration"] - end)
        occupancy.append(sum(en - st for st, en, _ in spans) / recipe["duration"])
    per_query_a = np.asarray(per_query, np.int64)

    def describe(values: list[float]) -> dict:
        x = np.asarray(values, np.float64)
        if not x.size:
            return {"n": 0}
        return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
                "min": float(x.min()), "median": float(np.median(x)), "max": float(x.max())}

    counts = {str(k): int((per_query_a == k).sum()) for k in sorted(set(per_query))}
    return {
        "clips": len(recipes), "queries": int(per_query_a.size),
        "windows": int(per_query_a.sum()),
        "queries_per_clip": float(per_query_a.size / max(1, len(recipes))),
        "windows_per_query": {"mean": float(per_query_a.mean()) if per_query else 0.0,
                              "counts": counts},
        "recurrence_share": float((per_query_a > 1).mean()) if per_query else 0.0,
        "window_length_s": describe(lengths), "gap_s": describe(before + trailing),
        "gap_before_occurrence_s": describe(before),
        "gap_before_single_s": describe(before_single),
        "trailing_silence_s": describe(trailing),
        "occupancy": float(np.mean(occupancy)) if occupancy else 0.0,
    }


def format_statistics(stats: dict) -> str:
    """A few readable lines of `recipe_statistics`."""
    w, g = stats["window_length_s"], stats["gap_s"]
    lines = [
        f"clips {stats['clips']}, queries {stats['queries']} ({stats['queries_per_clip']:.2f} "
        f"per clip), windows {stats['windows']}",
        f"windows per query: mean {stats['windows_per_query']['mean']:.2f}, counts "
        f"{stats['windows_per_query']['counts']}, recurring share {stats['recurrence_share']:.3f}",
    ]
    if w["n"]:
        b, s, t = (stats[k] for k in ("gap_before_occurrence_s", "gap_before_single_s",
                                      "trailing_silence_s"))
        lines.append(f"window length s: mean {w['mean']:.1f}, median {w['median']:.1f}, "
                     f"min {w['min']:.1f}, max {w['max']:.1f}")
        lines.append(f"gaps s (all silences, N+1 per clip): mean {g['mean']:.1f}, median "
                     f"{g['median']:.1f}, max {g['max']:.1f}; before each occurrence "
                     f"{b['mean']:.1f}, before single events "
                     f"{s['mean'] if s['n'] else float('nan'):.1f}, trailing {t['mean']:.1f}; "
                     f"occupancy {stats['occupancy']:.2f}")
    return "\n".join(lines)


def write_release(output: str | os.PathLike, recipes: Sequence[dict], *,
                  annotations_name: str = "annotations.jsonl") -> tuple[Path, Path]:
    """Writes `recipes.jsonl` and the annotation jsonl atomically; returns both paths."""
    output = Path(output)
    rec = atomic_write_text(output / "recipes.jsonl",
                            "".join(json.dumps(r) + "\n" for r in recipes))
    ann = atomic_write_text(output / annotations_name,
                            "".join(json.dumps(a) + "\n" for a in annotation_lines(recipes)))
    return rec, ann


def read_recipes(path: str | os.PathLike) -> list[dict]:
    """Reads `recipes.jsonl` back, checking the fields the mixer uses.

    Raises:
      InputListError: naming the file, line and field.
    """
    recipes = []
    for where, obj in _json_lines(path, "recipe"):
        vid = _field(obj, "vid", where, str)
        where = f"{where} vid={vid}"
        _field(obj, "duration", where, (int, float))
        bg = _field(obj, "background", where, dict)
        for name, kind in (("path", str), ("start", (int, float)), ("dB", (int, float))):
            _field(bg, name, f"{where} background", kind)
        for e in _field(obj, "events", where, list):
            for name, kind in (("path", str), ("offset", (int, float)), ("duration", (int, float)),
                               ("occurrences", list)):
                _field(e, name, f"{where} event", kind)
            for o in e["occurrences"]:
                _field(o, "start", f"{where} qid={e.get('qid')}", (int, float))
                _field(o, "dB", f"{where} qid={e.get('qid')}", (int, float))
        recipes.append(obj)
    if not recipes:
        raise InputListError(f"{path}: no recipes")
    return recipes
