"""Where each audio feature frame sits in time, per dataset, and a check of the convention.

The two released feature sets cut the audio differently (REFERENCE_NOTES 1.2):

- CASTELLA: 1 s windows from 0 s, no padding, so `T = floor(duration)` (capped at 300) and
  frame `i` covers `[i, i + 1)` s: frame offset 0.
- Clotho-Moment: "centre-based cutting" pads half a window on each side, so a 60 s clip gives
  `T = duration + 1 = 61` frames and frame `i` is centred on second `i`, covering
  `[i - 0.5, i + 0.5)` s: frame offset -0.5.

With frame offset `o`, frame `i` covers `[i + o, i + 1 + o)` s and its centre is `i + 0.5 + o`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from absl import logging

from amr_jax.data.records import QueryRecord

# Frame offset (seconds at which frame 0 starts) of each released feature set.
# Clotho-Moment-Long (seed 003) is extracted with CASTELLA's whole-second windows.
FRAME_OFFSET_S = {"castella": 0.0, "clotho_moment": -0.5, "clotho_moment_long": 0.0}
WHOLE_SECONDS, CENTRE_CUT = 0.0, -0.5
_SHOWN_VIDS = 5


def frame_convention(num_frames: int, duration: float) -> str | None:
    """"whole" (`T == floor(duration)`), "centre" (`T == floor(duration) + 1`) or None."""
    whole = math.floor(duration)
    if num_frames == whole:
        return "whole"
    if num_frames == whole + 1:
        return "centre"
    return None


def check_frame_convention(records: Sequence[QueryRecord], num_frames: Mapping[str, int], *,
                           frame_offset_s: float) -> str | None:
    """Warns when the feature lengths suggest the other frame convention.

    Each recording is classified by `frame_convention`. With `frame_offset_s == 0` a majority
    of centre-cut recordings (`T = duration + 1`) is suspicious; with `frame_offset_s == -0.5`
    a majority of whole-second ones (`T = duration`). Other offsets are not checked.

    Args:
      records: the split's queries (their `vid` and `duration`).
      num_frames: vid -> number of feature frames `T`.
      frame_offset_s: the offset the localizer will use.

    Returns:
      The warning text (also logged), or None when the lengths agree or are inconclusive.
    """
    if frame_offset_s == WHOLE_SECONDS:
        other, expected = "centre", "frame i covers [i, i+1), as CASTELLA"
        advice = ("for centre-cut features (Clotho-Moment) use the config preset "
                  "`localize.py:SYSTEM,clotho` or --config.frame_offset_s=-0.5")
        shape = "T = duration + 1 (centre-cut, as Clotho-Moment)"
    elif frame_offset_s == CENTRE_CUT:
        other, expected = "whole", "frame i centred on second i, as Clotho-Moment"
        advice = ("for whole-second features (CASTELLA) use the config preset "
                  "`localize.py:SYSTEM,castella` or --config.frame_offset_s=0")
        shape = "T = duration (whole seconds, as CASTELLA)"
    else:
        return None
    durations: dict[str, float] = {}
    for r in records:
        durations.setdefault(r.vid, r.duration)
    suspicious = [v for v, d in durations.items() if frame_convention(num_frames[v], d) == other]
    if not durations or 2 * len(suspicious) <= len(durations):
        return None
    message = (f"{len(suspicious)} of {len(durations)} recordings have {shape} "
               f"(e.g. vids {', '.join(suspicious[:_SHOWN_VIDS])}), but frame_offset_s="
               f"{frame_offset_s:g} ({expected}); {advice}")
    logging.warning("%s", message)
    return message
