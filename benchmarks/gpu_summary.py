"""The one table of `benchmarks/gpu_report.sh`, read from the logs it wrote in --out.

  python benchmarks/gpu_summary.py --out=DIR

Missing steps (a time limit reached, a failure) show as "n/a" with the log to read.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def _row(text: str, label: str) -> str:
    """The number at the end of the line starting with `label` (first match), or n/a."""
    for line in text.splitlines():
        if line.startswith(label):
            numbers = re.findall(r"[-+]?\d+(?:\.\d+)?", line[len(label):])
            if numbers:
                return numbers[-1]
    return "n/a"


def _training(out: Path) -> list[tuple[str, str]]:
    records = []
    for line in _read(out / "train_metrics.jsonl").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    if not records:
        return [("QD-DETR recipe", "n/a (train.txt)")]
    vals = [(r["epoch"], r["val"]) for r in records if r.get("val")]
    best = max(vals, key=lambda ev: ev[1].get("R1@0.7", -1)) if vals else None
    rate = records[-1].get("steps_per_s")
    rows = [("QD-DETR recipe: epochs done", str(records[-1]["epoch"])),
            ("QD-DETR recipe: steps/s (after compile)", f"{rate:.1f}" if rate else "n/a")]
    if best:
        rows.append(("QD-DETR recipe: best val R1@0.7 (epoch)",
                     f"{best[1]['R1@0.7']:.2f} (epoch {best[0]})"))
    test = "n/a"
    for line in _read(out / "train.txt").splitlines():
        if line.startswith('{"R1@0.5"'):  # evaluate's brief JSON line
            test = f"{json.loads(line)['R1@0.7']:.2f}"
    rows.append(("QD-DETR recipe: test R1@0.7 (best checkpoint)", test))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    out = Path(parser.parse_args().out)
    step, htsat = _read(out / "train_step.txt"), _read(out / "htsat.txt")
    rows = [("device", _read(out / "env.txt").strip().replace("\n", " | ") or "n/a"),
            ("DETR train step, ours (ms)", _row(step, "train step (jit), ours")),
            ("DETR train step, torch transcription (ms)", _row(step, "train step, torch")),
            ("DETR train step compile (s)", _row(step, "train step compile")),
            ("HTS-AT flax (audio s/s)", _row(htsat, "flax jit")),
            ("HTS-AT torch (audio s/s)", _row(htsat, "torch (")),
            ("HTS-AT max |flax - torch|", (re.search(r"embedding: (\S+);", htsat) or
                                          [None, "n/a"])[1])]
    timings = out / "localize_timings.json"
    if timings.exists():
        for system, stages in json.loads(timings.read_text()).items():
            rows.append((f"localize {system}: embed / localize / compile (s)",
                         " / ".join(f"{stages.get(k, float('nan')):.3f}"
                                    for k in ("embed_s", "localize_s", "compile_s"))))
    else:
        rows.append(("localize --all_systems", "n/a (localize.txt)"))
    wall = re.search(r"wall \(s\): (\d+)", _read(out / "localize.txt"))
    rows.append(("localize --all_systems wall (s, with start-up)", wall.group(1) if wall else "n/a"))
    rows += _training(out)
    print("| figure (SYNTHETIC features, random weights) | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
