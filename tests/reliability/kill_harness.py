"""SIGKILL-and-resume harness for `experiments.train_detr` (the real QD-DETR at small shapes).

Runs the binary in subprocesses that share one JAX persistent compilation cache (so only the
first process compiles), kills them with SIGKILL at chosen moments and resumes, then compares
the final checkpoints, best record and metrics.jsonl with an uninterrupted run. Used by
tests/reliability/test_kill_resume.py (5 kills) and benchmarks/kill_resume.py (more).

Kill points:
  "step":       at a random delay (0-300 ms) after a "step k/N" log line: inside a training step
                or the checkpoint save that follows it;
  "checkpoint": the moment an orbax temporary folder appears (a checkpoint write in progress);
  "eval":       at a random delay (0-100 ms) after "epoch k/N done": inside the evaluation.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KILL_POINTS = ("step", "checkpoint", "eval")
# Wall-clock fields differ between any two runs; everything else must be equal.
TIMING_KEYS = ("steps_per_s", "eta_s")
SMALL_OVERRIDES = {
    "model.hidden_dim": 16, "model.dim_feedforward": 32, "model.nheads": 2,
    "model.t2v_layers": 1, "model.enc_layers": 1, "model.dec_layers": 2,
    "train.batch_size": 4, "train.eval_batch_size": 4, "train.num_epochs": 4,
    "train.checkpoint_every_steps": 1, "train.log_every_steps": 1,
    "data.max_frames": 32, "data.num_workers": 1,
}


def make_data(root: Path, *, num_recordings: int = 6) -> Path:
    """A tiny SYNTHETIC CASTELLA-like split written by experiments.make_synthetic."""
    subprocess.run([sys.executable, "-m", "experiments.make_synthetic", "--preset=castella",
                    f"--output={root}", "--seed=0", f"--num_recordings={num_recordings}"],
                   cwd=REPO, check=True, capture_output=True, env=child_env(None))
    return root


def child_env(cache_dir: Path | None) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env.pop("XLA_FLAGS", None)  # one CPU device, as an ordinary run
    if cache_dir is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def train_command(workdir: Path, data: Path, overrides: dict | None = None) -> list[str]:
    args = [sys.executable, "-m", "experiments.train_detr",
            "--config=experiments/configs/qd_detr.py:runlocal", f"--workdir={workdir}"]
    for split in ("train", "val"):
        args += [f"--config.data.{split}_annotations={data / 'annotations.jsonl'}",
                 f"--config.data.{split}_audio_feats={data / 'clap'}",
                 f"--config.data.{split}_text_feats={data / 'clap_text'}"]
    args += [f"--config.{k}={v}" for k, v in {**SMALL_OVERRIDES, **(overrides or {})}.items()]
    return args


def finalized_steps(folder: Path) -> list[int]:
    """Steps orbax has committed (a write in progress lives in a '*tmp*' folder until renamed)."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def partial_entries(workdir: Path) -> list[str]:
    found = []
    for sub in ("checkpoints", "best"):
        folder = workdir / sub
        if folder.is_dir():
            found += [f"{sub}/{p.name}" for p in folder.iterdir() if "tmp" in p.name]
    return found


def _pump(stream, lines: queue.Queue, log) -> None:
    for line in iter(stream.readline, ""):
        log.write(line)
        lines.put(line)
    lines.put(None)


def run_once(cmd: list[str], env: dict, workdir: Path, log_path: Path, *,
             kill_point: str | None = None, rng: random.Random | None = None,
             timeout_s: float = 900) -> dict:
    """Runs the binary once; with `kill_point`, SIGKILLs it there.

    Returns:
      {"killed": bool, "rc": int, "resumed_step": int | None (from the log),
       "committed_before": steps committed in checkpoints/ when the process started,
       "partial_seen": orbax temporary folders seen while it ran}.
    """
    committed = finalized_steps(workdir / "checkpoints")
    stale = set(partial_entries(workdir))  # left by an earlier kill: not this run's writes
    lines: queue.Queue = queue.Queue()
    with open(log_path, "a", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        pump = threading.Thread(target=_pump, args=(proc.stderr, lines, log), daemon=True)
        pump.start()
        resumed, kill_at, partial_seen, killed = None, None, set(), False
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(f"{cmd} ran past {timeout_s} s; log: {log_path}")
            try:
                line = lines.get(timeout=0.001)
            except queue.Empty:
                line = None
            if line:
                m = re.search(r"resumed from .* at step (\d+)", line)
                if m:
                    resumed = int(m.group(1))
                if kill_point == "step" and kill_at is None and re.search(r"\bstep \d+/\d+ ", line):
                    kill_at = time.monotonic() + rng.uniform(0.0, 0.3)
                if kill_point == "eval" and kill_at is None and re.search(r"epoch \d+/\d+ done", line):
                    kill_at = time.monotonic() + rng.uniform(0.0, 0.1)
            partial = partial_entries(workdir)
            partial_seen.update(partial)
            partial = [p for p in partial if p not in stale]
            if kill_point == "checkpoint" and partial and kill_at is None:
                kill_at = time.monotonic()
            if kill_at is not None and time.monotonic() >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
        rc = proc.wait()
        pump.join(timeout=5)
    while not lines.empty():  # a resume line logged just before the kill
        line = lines.get()
        m = line and re.search(r"resumed from .* at step (\d+)", line)
        if m:
            resumed = int(m.group(1))
    return {"killed": killed and rc == -signal.SIGKILL, "rc": rc, "resumed_step": resumed,
            "committed_before": committed, "partial_seen": sorted(partial_seen),
            "stale_before": sorted(stale),
            "kill_point": kill_point}


def metrics_without_timing(workdir: Path) -> list[dict]:
    records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def checkpoint_arrays(folder: Path) -> dict:
    """{path: numpy array} of the last committed checkpoint under `folder` (no model needed)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp
    step = finalized_steps(folder)[-1]
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(folder / str(step) / "default")
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def compare_runs(reference: Path, resumed: Path) -> list[str]:
    """Differences between two finished workdirs (empty when identical)."""
    import numpy as np
    problems = []
    if metrics_without_timing(reference) != metrics_without_timing(resumed):
        problems.append("metrics.jsonl differs")
    ref_best = json.loads((reference / "best.json").read_text())
    got_best = json.loads((resumed / "best.json").read_text())
    if ref_best != got_best:
        problems.append(f"best.json differs: {ref_best} vs {got_best}")
    if finalized_steps(resumed / "best") != [got_best["step"]]:
        problems.append(f"best/ holds steps {finalized_steps(resumed / 'best')} but best.json "
                        f"names step {got_best['step']}")
    for sub in ("checkpoints", "best"):
        a, b = checkpoint_arrays(reference / sub), checkpoint_arrays(resumed / sub)
        if a.keys() != b.keys():
            problems.append(f"{sub}: different trees")
            continue
        bad = [k for k in a if a[k].dtype != b[k].dtype or not np.array_equal(a[k], b[k])]
        if bad:
            problems.append(f"{sub}: {len(bad)} arrays differ, e.g. {bad[:3]}")
    return problems


def kill_and_resume(data: Path, workdir: Path, cache_dir: Path, *, kills: int, seed: int,
                    log_path: Path, max_attempts: int | None = None) -> list[dict]:
    """Kills `kills` times (cycling through KILL_POINTS), then runs to the end.

    Returns the per-process records of `run_once`; raises when a resume restored a step that
    was not committed before that process started.
    """
    rng = random.Random(seed)
    env, cmd = child_env(cache_dir), train_command(workdir, data)
    runs, done = [], 0
    for attempt in range(max_attempts or 3 * kills):
        if done >= kills:
            break
        run = run_once(cmd, env, workdir, log_path, kill_point=KILL_POINTS[done % len(KILL_POINTS)],
                       rng=rng)
        runs.append(run)
        _check_resume(run)
        if run["killed"]:
            done += 1
        elif run["rc"] == 0:
            break  # finished before the kill point came: nothing left to kill
        else:
            raise RuntimeError(f"train_detr failed (rc {run['rc']}); log: {log_path}")
    final = run_once(cmd, env, workdir, log_path)
    runs.append(final)
    _check_resume(final)
    if final["rc"] != 0:
        raise RuntimeError(f"the final resume failed (rc {final['rc']}); log: {log_path}")
    return runs


def _check_resume(run: dict) -> None:
    committed = run["committed_before"]
    if run["resumed_step"] is None:
        if committed:
            raise AssertionError(f"steps {committed} were committed but the run did not resume")
    elif run["resumed_step"] != max(committed, default=None):
        raise AssertionError(f"resumed at step {run['resumed_step']}, but the last committed "
                             f"checkpoint was {max(committed, default=None)}")
