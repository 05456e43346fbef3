"""Figures a person would rather look at than read: training curves, metrics by moment
length, and per-query timelines of ground truth and predicted windows.

Every function returns PNG bytes (matplotlib's Agg backend, imported on use) so the
binary writes them atomically and notebooks can display them.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amr_jax.data.errors import AnnotationError
from amr_jax.data.records import QueryRecord
from amr_jax.errors import UsageError
from amr_jax.eval import metrics as metrics_lib
from amr_jax.io_utils import atomic_write_bytes

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict]:
    """The per-epoch records a training run appends to `<workdir>/metrics.jsonl`."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: metrics file not found (is this a training workdir?)",
                              hint="pass the workdir of experiments.train_detr")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
    if not records:
        raise AnnotationError(f"{path}: no epochs recorded yet")
    return records


def training_curves(records: Sequence[dict], *, title: str = "") -> bytes:
    """Loss terms (left) and validation figures (right) per epoch; the best epoch marked.

    Args:
      records: `read_metrics_jsonl` output; each has "epoch", "train" {term: value} and,
        when evaluated, "val" {brief key: value}.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    terms = sorted({k for r in records for k in r.get("train", {})})
    for term in terms:
        values = [r["train"].get(term, np.nan) for r in records]
        loss_ax.plot(epochs, values, marker="o", ms=2, lw=1.6 if term == "loss" else 1.0,
                     label=term)
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (epoch mean)")
    loss_ax.set_yscale("log" if all(r["train"].get("loss", 1) > 0 for r in records) else "linear")
    loss_ax.legend(fontsize=7, ncol=2, loc="upper right")
    evaluated = [r for r in records if "val" in r]
    if evaluated:
        for key in metrics_lib.BRIEF_KEYS:
            val_ax.plot([r["epoch"] for r in evaluated], [r["val"][key] for r in evaluated],
                        marker="o", ms=2, label=key)
        best = max(evaluated, key=lambda r: r["val"].get("R1@0.7", -1))
        val_ax.axvline(best["epoch"], color="0.5", ls=":", lw=1)
        val_ax.annotate(f"best R1@0.7: epoch {best['epoch']}", (best["epoch"], 0.97),
                        xycoords=("data", "axes fraction"), fontsize=7, ha="left", va="top")
        val_ax.legend(fontsize=7, loc="lower right")
    else:
        val_ax.text(0.5, 0.5, "no validation split", ha="center", va="center",
                    transform=val_ax.transAxes)
    val_ax.set_xlabel("epoch")
    val_ax.set_ylabel("validation (x100)")
    fig.suptitle(title or "training curves", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def metrics_by_length(records: Sequence[QueryRecord], systems: dict[str, Sequence[dict]], *,
                      keys: Sequence[str] = ("R1@0.7", "mAP"), title: str = "") -> tuple[bytes, dict]:
    """Grouped bars: each system's figures per ground-truth window-length bin.

    Args:
      records: the annotated split.
      systems: {name: predictions (dicts as read from a jsonl)}.
      keys: brief figures to draw, one panel each.

    Returns:
      (PNG bytes, {system: {bin: brief}}).
    """
    plt = _pyplot()
    table = {name: {label: metrics_lib.compute_metrics(records, preds, length_range=rng)["brief"]
                    for label, rng in metrics_lib.LENGTH_RANGES.items()}
             for name, preds in systems.items()}
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False)
    width = 0.8 / max(1, len(systems))
    bins = list(metrics_lib.LENGTH_RANGES)
    positions = np.arange(len(bins))
    for ax, key in zip(axes[0], keys):
        for k, (name, rows) in enumerate(table.items()):
            values = [rows[label].get(key, 0.0) for label in bins]
            bars = ax.bar(positions + k * width, values, width, label=name)
            ax.bar_label(bars, fmt="%.1f", fontsize=6)
        ax.set_xticks(positions + width * (len(systems) - 1) / 2,
                      bins, fontsize=8)
        ax.set_ylabel(f"{key} (x100)")
        ax.set_xlabel("ground-truth window length")
        ax.legend(fontsize=7)
    fig.suptitle(title or "metrics by moment length", fontsize=10)
    fig.tight_layout()
    return _png(fig), table


def query_timelines(records: Sequence[QueryRecord], systems: dict[str, Sequence[dict]],
                    qids: Sequence[str], *, curves: dict[str, np.ndarray] | None = None,
                    top: int = 10) -> bytes:
    """One panel per query: GT windows and each system's top windows on the time axis.

    Args:
      records: the split's queries.
      systems: {name: predictions}.
      qids: queries to draw (raises naming unknown qids).
      curves: optional {qid: [T] relevance curve} drawn above the windows (frame i at
        second i + 0.5).
      top: windows per system (best first; opacity follows rank).
    """
    from amr_jax.errors import UsageError

    plt = _pyplot()
    from matplotlib.patches import Patch

    index = {r.key: r for r in records}
    unknown = [q for q in qids if str(q) not in index]
    if unknown:
        raise UsageError(f"--qids: not in the annotations: {unknown}",
                         hint="pass qids exactly as written in the annotation file")
    by_system = {name: {str(p["qid"]): p["pred_relevant_windows"] for p in preds}
                 for name, preds in systems.items()}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(qids), 1, figsize=(10, 1.2 + 1.1 * (len(systems) + 1) * len(qids)),
                             squeeze=False)
    for ax, qid in zip(axes[:, 0], qids):
        r = index[str(qid)]
        lanes = ["ground truth", *systems]
        for st, en in (r.raw_windows if r.raw_windows is not None else []):
            ax.barh(0, en - st, left=st, height=0.6, color="tab:green", alpha=0.6)
        for k, name in enumerate(systems, start=1):
            windows = by_system[name].get(str(qid), [])[:top]
            for rank, w in enumerate(windows):
                ax.barh(k, w[1] - w[0], left=w[0], height=0.6, color=colors[k % len(colors)],
                        alpha=max(0.15, 0.9 - 0.08 * rank))
        ax.set_yticks(range(len(lanes)), lanes, fontsize=7)
        ax.set_ylim(len(lanes) - 0.5, -0.5)
        ax.set_xlim(0, r.duration)
        ax.set_title(f"qid={r.qid}: {r.query}", fontsize=8)
        if curves and str(qid) in curves:
            curve = np.asarray(curves[str(qid)])
            twin = ax.twinx()
            twin.plot(np.arange(len(curve)) + 0.5, curve, color="0.3", lw=0.8)
            twin.set_ylabel("relevance", fontsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    fig.legend(handles=[Patch(color="tab:green", alpha=0.6, label="ground truth"),
                        Patch(color="0.4", alpha=0.9, label="prediction 1 (darkest)"),
                        Patch(color="0.4", alpha=0.2, label=f"prediction {top} (lightest)")],
               loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


def ablation_bars(summaries: dict[str, dict], *, keys: Sequence[str] = metrics_lib.BRIEF_KEYS,
                  title: str = "") -> bytes:
    """Grouped bars: one group per figure, one bar per row (mean, with std error bars).

    Args:
      summaries: {row: {"mean": {key: x}, "std": {key: x}, "num_runs": n}} in table order.
      keys: brief figures to draw.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) * max(1, len(summaries)) / 3), 3.8))
    width = 0.8 / max(1, len(summaries))
    positions = np.arange(len(keys))
    for k, (name, s) in enumerate(summaries.items()):
        means = [s["mean"][key] for key in keys]
        stds = [s["std"][key] for key in keys]
        bars = ax.bar(positions + k * width, means, width, yerr=stds, capsize=2,
                      label=f"{name} ({s['num_runs']} seeds)")
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
    ax.set_xticks(positions + width * (len(summaries) - 1) / 2, list(keys), fontsize=8)
    ax.set_ylabel("test (x100), mean ± std over seeds")
    ax.legend(fontsize=7, ncol=max(1, len(summaries) // 6))
    fig.suptitle(title or "ablation", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_queries(records: Sequence[QueryRecord], result, qids: Sequence[str],
                 folder: str | os.PathLike, *, title: str) -> list[Path]:
    """Writes `<folder>/<qid>.png`: raw and smoothed curves, GT (green), predictions (orange).

    Args:
      records: the split's queries (aligned with `result`).
      result: a `pipeline.LocalizeResult`.
      qids: the queries to draw; unknown qids raise naming them.
      folder: output folder (created).
      title: figure title prefix (the system).
    """
    from matplotlib.patches import Patch

    plt = _pyplot()

    index = {str(r.qid): i for i, r in enumerate(records)}
    unknown = [q for q in qids if str(q) not in index]
    if unknown:
        raise UsageError(f"--plot_qids: qids not in the split: {unknown}",
                         hint="pass qids exactly as written in the annotation file")
    folder = Path(folder)
    written = []
    for qid in qids:
        i = index[str(qid)]
        r = records[i]
        n = int(result.mask[i].sum())
        t = np.arange(n) + 0.5 + result.frame_offset_s  # frame centres (seconds)
        fig, ax = plt.subplots(figsize=(10, 3.6))
        raw = np.asarray(result.curves[i, :n])
        ax.plot(t, raw, lw=0.8, color="0.55", label="relevance (raw)")
        ax.set_ylabel("relevance (raw)", color="0.35")
        # Leave the bottom fifth of the axes to the prediction bars.
        low, high = (float(raw.min()), float(raw.max())) if n else (0.0, 1.0)
        ax.set_ylim(low - 0.3 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
        # The localizer's curve is on another scale (standardized / contrast): min-max
        # normalize it so it is visible beside the posterior, on its own axis.
        curve = np.asarray(result.details.curve)[i, :n]
        spread = float(curve.max(initial=0.0) - curve.min(initial=0.0))
        normalized = (curve - curve.min(initial=0.0)) / spread if spread > 0 else curve * 0.0
        ax2 = ax.twinx()
        ax2.plot(t, normalized, lw=1.4, color="tab:blue", label="localizer curve (smoothed, min-max)")
        posterior = getattr(result.details, "posterior", None)
        if posterior is not None:
            ax2.plot(t, np.asarray(posterior)[i, :n], lw=1.0, color="tab:purple", ls="--",
                     label="GMM posterior")
        ax2.set_ylim(-0.3, 1.05)
        ax2.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
        ax2.set_ylabel("min-max curve / posterior", color="tab:blue")
        for st, en in (r.raw_windows if r.raw_windows is not None else []):
            ax.axvspan(st, en, color="tab:green", alpha=0.25)
        predicted = result.windows[i][result.valid[i]]
        for k, (st, en, _) in enumerate(predicted):
            ax.axvspan(st, en, ymin=0.0, ymax=0.08 if k else 0.16, color="tab:orange",
                       alpha=0.9 if k == 0 else 0.5)
        ax.set_xlim(0, max(n, 1))
        ax.set_xlabel("time (s)")
        ax.set_title(f"{title}  qid={r.qid}: {r.query}", fontsize=9)
        handles = [*ax.get_lines(), *ax2.get_lines(),
                   Patch(color="tab:green", alpha=0.25, label="ground truth"),
                   Patch(color="tab:orange", alpha=0.9, label="prediction 1 (tall bar)"),
                   Patch(color="tab:orange", alpha=0.5, label=f"predictions 2-{len(predicted)}")]
        # Below the axes, never over the curves.
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        path = folder / f"{qid}.png"
        atomic_write_bytes(path, _png(fig))
        written.append(path)
    return written
