r"""Training-free localization: JAX kernels vs the per-query numpy/scipy/sklearn pipeline.

  python -m experiments.make_synthetic --preset=castella --seed=0 --output=/tmp/synth_test \
    --annotations=../shared/data/castella/castella_test_release.jsonl
  python -m experiments.convert_clap --checkpoint=/tmp/synth_test/msclap_synthetic.npz \
    --output=/tmp/synth_test/clap_converted
  python benchmarks/bench_localize.py --data=/tmp/synth_test [--systems=gmm_contrast,...] \
    [--fused_params=PARAMS.json]

Both implementations run in this process on the same split, loaded once. Per system:

  embed      JAX: heads on every recording once (jitted chunks) + queries (+ neutral);
             ref: the same heads in numpy, each recording's valid frames once.
  relevance  JAX: all curves in one jitted call; ref: one dot product per query.
  localize   JAX: one jitted call over all queries; ref: scipy / sklearn per query
             (jointproj_dp: a numpy window table per query; fused: the FWHM, GMM and DP
             references per query, numpy features and NMS).
  whole      load + embed + relevance + localize + writing predictions (JAX: compilation
             excluded and shown separately).

Kernel and embed timings are the best of `--repeats` runs; the reference loops run once. Metrics of both
implementations are printed side by side (same semantics: they should agree within 1 point).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import erf
from threadpoolctl import threadpool_limits

from amr_jax.clap import convert, embed
from amr_jax.compiled import CompiledCache
from amr_jax.data.features import load_text_features
from amr_jax.data.loader import load_split
from amr_jax.eval import metrics as metrics_lib
from amr_jax.eval import predictions as predictions_lib
from amr_jax.localize import fused_fit, pipeline, reference
from experiments.configs import localize as localize_configs


def _np_head(params: dict, x: np.ndarray) -> np.ndarray:
    """MS-CLAP projection head + L2 norm in numpy (float32), rows `[n, 768]`."""
    h = x @ params["linear1"]["kernel"]
    g = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)).astype(np.float32))
    y = h + g @ params["linear2"]["kernel"]
    mu = y.mean(-1, keepdims=True)
    var = ((y - mu) ** 2).mean(-1, keepdims=True)
    y = (y - mu) / np.sqrt(var + 1e-5) * params["layer_norm"]["scale"] + params["layer_norm"]["bias"]
    return y / np.maximum(np.linalg.norm(y, axis=-1, keepdims=True), 1e-12)


def reference_run(config, split, clap_params, neutral_dir, out_path) -> dict:
    """The numpy/scipy/sklearn pipeline: project each recording once, loop over queries."""
    times = {}
    t0 = time.perf_counter()
    if config.relevance == "backbone":
        frames = {v: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
                  for v, a in split.audio.items()}
        queries = [split.text[r.key][-1] for r in split.records]
        queries = [q / max(np.linalg.norm(q), 1e-12) for q in queries]
    else:
        audio_p = jax.tree.map(np.asarray, clap_params.audio_head)
        text_p = jax.tree.map(np.asarray, clap_params.caption_head)
        frames = {v: _np_head(audio_p, a[: config.max_frames]) for v, a in split.audio.items()}
        queries = list(_np_head(text_p, np.stack([split.text[r.key][-1] for r in split.records])))
        if config.relevance == "contrast":
            rows = [load_text_features(embed.neutral_feature_path(neutral_dir, p))[-1]
                    for p in embed.NEUTRAL_PROMPTS]
            n = _np_head(text_p, np.stack(rows)).mean(0)
            n /= np.linalg.norm(n)
            queries = [q - n for q in queries]
    times["embed_s"] = time.perf_counter() - t0

    # Per-query work is tiny: one BLAS thread is fastest for it and keeps the shared cores
    # from oversubscription (the projection above keeps the default thread count).
    with threadpool_limits(limits=1):
        t0 = time.perf_counter()
        curves = [frames[r.vid][: config.max_frames] @ q for r, q in zip(split.records, queries)]
        times["relevance_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        out = []
        for r, c in zip(split.records, curves):
            if config.localizer == "fwhm":
                out.append(reference.fwhm_reference(c, r.duration, num_windows=config.num_windows,
                                                    frame_offset_s=config.frame_offset_s,
                                                    **config.fwhm.to_dict())[0])
            elif config.localizer == "gmm":
                out.append(reference.gmm_reference(c, r.duration, num_windows=config.num_windows,
                                                   frame_offset_s=config.frame_offset_s,
                                                   **config.gmm.to_dict())[0])
            elif config.localizer == "dp":
                out.append(reference.dp_reference(c, r.duration, num_windows=config.num_windows,
                                                  frame_offset_s=config.frame_offset_s,
                                                  **config.dp.to_dict()))
            else:
                out.append(reference.fused_reference(
                    c, r.duration, num_windows=config.num_windows,
                    frame_offset_s=config.frame_offset_s,
                    **fused_fit.fused_kwargs(config, fused_fit.resolve_params(config))))
        times["localize_s"] = time.perf_counter() - t0
    windows, valid = reference.to_arrays(out, config.num_windows)
    t0 = time.perf_counter()
    predictions_lib.write_predictions(out_path, split.records, windows, valid)
    times["write_s"] = time.perf_counter() - t0
    return {"times": times, "windows": windows, "valid": valid, "curves": curves}


def jax_run(config, split, data: Path, out_path, repeats: int) -> dict:
    """`pipeline.run_localization`'s stages, with the kernels timed over several runs."""
    # The embed stage runs `repeats` times too (best kept): its first run in a process also
    # compiles the heads, which belongs to compile time, not to the run.
    embed_s, embedded = float("inf"), None
    for _ in range(repeats):
        del embedded  # the previous run's frames are freed before the next is built
        t0 = time.perf_counter()
        arrays = pipeline.split_arrays(split, max_frames=config.max_frames,
                                       frame_bucket=config.frame_bucket)
        embedded = pipeline.embed_split(config, arrays, clap_dir=data / "clap_converted",
                                        neutral_feats=data / "neutral_text")
        t = time.perf_counter() - t0
        if t < embed_s:
            embed_s, stage_s = t, embedded.stage_s
    cache = CompiledCache()  # the first run compiles, the repeats reuse its kernels
    runs = [pipeline.localize_split(config, arrays, embedded, cache=cache)
            for _ in range(repeats)]
    result = runs[0]
    localize_s = min(r.localize_s for r in runs)

    # Split the kernel time into relevance and localizer (same executables, warm).
    rel_args = (embedded.audio, arrays.audio_mask, embedded.queries, embedded.neutral,
                arrays.query_recording, arrays.query_slot, arrays.slot_query)
    rel_exec = [v for k, v in cache.items()
                if k[0] == "relevance" and k[1] == config.relevance][-1]
    best_rel = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(rel_exec(*rel_args))
        best_rel = min(best_rel, time.perf_counter() - t)
    t0 = time.perf_counter()
    predictions_lib.write_predictions(out_path, split.records, result.windows, result.valid)
    write_s = time.perf_counter() - t0
    stages = {f"{k}_s": v for k, v in stage_s.items()}
    return {"times": {"embed_s": embed_s, **stages, "relevance_s": best_rel,
                      "localize_s": max(localize_s - best_rel, 0.0), "write_s": write_s,
                      "compile_s": result.compile_s},
            "windows": result.windows, "valid": result.valid}


def gemm_peak(repeats: int = 5, n: int = 2048) -> dict:
    """GFLOP/s of an n x n x n float32 matmul through XLA (jit) and numpy (OpenBLAS)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    flops = 2.0 * n ** 3
    xla = jax.jit(jnp.matmul)
    da, db = jax.device_put(a), jax.device_put(b)
    jax.block_until_ready(xla(da, db))
    best = {"xla": float("inf"), "numpy": float("inf")}
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(xla(da, db))
        best["xla"] = min(best["xla"], time.perf_counter() - t)
        t = time.perf_counter()
        np.matmul(a, b)
        best["numpy"] = min(best["numpy"], time.perf_counter() - t)
    return {k: flops / v / 1e9 for k, v in best.items()}


def projection_flops(num_frames: int, clap_params) -> float:
    """FLOPs of projecting every valid frame through the audio head (768 -> 1024 -> 1024)."""
    shapes = [np.shape(w) for w in jax.tree.leaves(clap_params.audio_head)
              if np.ndim(w) == 2]
    return 2.0 * num_frames * sum(int(np.prod(s)) for s in shapes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="synthetic split folder (see docstring)")
    parser.add_argument("--systems", default=",".join(localize_configs.SYSTEMS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fused_params", default="",
                        help="PARAMS.json of experiments.fit_fused for the fused row")
    parser.add_argument("--output", default="/tmp/bench_localize")
    parser.add_argument("--skip_reference", action="store_true",
                        help="time only the JAX side (the floor table needs no reference)")
    args = parser.parse_args()
    data = Path(args.data)
    out_dir = Path(args.output)
    t0 = time.perf_counter()
    split = load_split(data / "annotations.jsonl", data / "clap", data / "clap_text", progress=False)
    load_s = time.perf_counter() - t0
    clap_params = convert.load_converted(data / "clap_converted")
    print(f"{len(split.records)} queries, {len(split.vids)} recordings, "
          f"{sum(a.shape[0] for a in split.audio.values())} frames; load {load_s:.2f} s "
          f"(shared); device {jax.devices()[0].device_kind}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    rows = []
    for system in args.systems.split(","):
        config = localize_configs.get_config(system)
        if config.localizer == "fused" and args.fused_params:
            config.fused_params = args.fused_params
        ours = jax_run(config, split, data, out_dir / f"{system}_jax.jsonl", args.repeats)
        ref = (ours if args.skip_reference else
               reference_run(config, split, clap_params, data / "neutral_text",
                             out_dir / f"{system}_ref.jsonl"))
        m_ours = metrics_lib.brief(metrics_lib.compute_metrics(
            split.records, windows=ours["windows"], valid=ours["valid"]))
        m_ref = metrics_lib.brief(metrics_lib.compute_metrics(
            split.records, windows=ref["windows"], valid=ref["valid"]))
        row = {"system": system, "jax": ours["times"], "ref": ref["times"], "metrics_jax": m_ours,
               "metrics_ref": m_ref}
        for name, t in (("jax", ours["times"]), ("ref", ref["times"])):
            t["whole_s"] = load_s + t["embed_s"] + t["relevance_s"] + t["localize_s"] + t["write_s"]
        rows.append(row)
        print(json.dumps(row), flush=True)

    if not args.skip_reference:  # else the reference columns would repeat ours
        stages = ("embed_s", "relevance_s", "localize_s", "whole_s")
        print()
        head = (f"{'system':<16}" + "".join(f"{s[:-2] + ' ref/jax (x)':>28}" for s in stages)
                + f"{'compile s':>11}{'R1@0.7 jax/ref':>17}{'mAP jax/ref':>14}")
        print(head)
        print("-" * len(head))
        for row in rows:
            cells = "".join(
                f"{row['ref'][s]:>10.3f}/{row['jax'][s]:>7.3f} ({row['ref'][s] / max(row['jax'][s], 1e-9):>6.1f})"
                for s in stages)
            print(f"{row['system']:<16}{cells}{row['jax']['compile_s']:>11.2f}"
                  f"{row['metrics_jax']['R1@0.7']:>9.2f}/{row['metrics_ref']['R1@0.7']:<7.2f}"
                  f"{row['metrics_jax']['mAP']:>7.2f}/{row['metrics_ref']['mAP']:<7.2f}")
    _print_floor(rows, split, clap_params, load_s)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    (out_dir / "bench.json").write_text(json.dumps(rows, indent=2) + "\n")


def _print_floor(rows, split, clap_params, load_s) -> None:
    """Each system's JAX run as a multiple of the projection's GEMM floor on this CPU."""
    peak = gemm_peak()
    frames = sum(a.shape[0] for a in split.audio.values())
    flops = projection_flops(frames, clap_params)
    floor_s = flops / (max(peak.values()) * 1e9)
    threads = len(os.sched_getaffinity(0))
    print(f"\nGEMM peak, 2048^3 float32, {threads} threads: XLA {peak['xla']:.0f} GFLOP/s, "
          f"numpy/OpenBLAS {peak['numpy']:.0f} GFLOP/s")
    print(f"projection of {frames:,} frames: {flops / 1e9:.1f} GFLOP -> floor {floor_s:.2f} s "
          f"at the better peak")
    head = (f"{'system':<16}{'whole s':>9}{'x floor':>9}{'compute s':>11}{'x floor':>9}"
            f"{'compile s':>11}  |{'weights':>9}{'queries':>9}{'audio':>8}{'localize':>10}")
    print(head + "\n" + "-" * len(head))
    for row in rows:
        t = row["jax"]
        compute = t["embed_s"] + t["relevance_s"] + t["localize_s"]
        print(f"{row['system']:<16}{t['whole_s']:>9.2f}{t['whole_s'] / floor_s:>9.1f}"
              f"{compute:>11.2f}{compute / floor_s:>9.1f}{t['compile_s']:>11.2f}  |"
              f"{t.get('weights_s', 0):>9.2f}{t.get('queries_s', 0):>9.2f}"
              f"{t.get('audio_s', 0):>8.2f}{t['relevance_s'] + t['localize_s']:>10.2f}")
    print(f"(whole = load {load_s:.2f} s + compute + writing; compute = embed (weights, "
          "queries, audio: packing + projection + placing, or padding for backbone) + relevance "
          "+ localize; compile apart)")


if __name__ == "__main__":
    main()
