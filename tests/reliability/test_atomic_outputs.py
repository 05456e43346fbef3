"""Interrupted binaries leave the previous file or none, never a truncated one; re-runs complete.

`experiments.make_synthetic` and `experiments.localize` are interrupted with SIGINT and SIGKILL
at spread-out moments (and the moment a temporary output file appears, i.e. during a write).
After each interruption every output file must be byte-equal to its previous version or to the
complete new version (no third state), and running the binary again must produce exactly the
uninterrupted output.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _env():
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def _snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of the visible files (temporary files start with a dot)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else {}


def _writing(watch: Path, known: dict[str, tuple[int, int]]) -> bool:
    """A temporary file exists, or a file appears or changes size or time (a non-atomic writer
    shows it while it is still being written; an atomic one only once it is complete)."""
    for p in watch.rglob("*"):
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            return True
        try:
            if p.is_file() and known.get(str(p.relative_to(watch))) != (
                    p.stat().st_size, p.stat().st_mtime_ns):
                return True
        except FileNotFoundError:  # renamed away meanwhile
            return True
    return False


def _interrupt(cmd: list[str], watch: Path, *, sig: int, delay: float | None) -> int:
    """Starts `cmd`, sends `sig` after `delay` s, or (delay None) the moment an output file is
    being written under `watch` (see `_writing`); returns the exit status."""
    known = _stats(watch)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while proc.poll() is None:
        if delay is not None and time.monotonic() - t0 >= delay:
            break
        if delay is None and _writing(watch, known):
            break
        if time.monotonic() - t0 > 300:
            break
        time.sleep(0.0005)
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=120)


def _check_old_or_new(got: dict, old: dict, new: dict, what: str) -> None:
    for name, digest in got.items():
        assert digest in (old.get(name), new.get(name)), f"{what}: {name} is neither old nor new"


def test_make_synthetic_interrupted(tmp_path):
    def cmd(out, seed):
        return [sys.executable, "-m", "experiments.make_synthetic", "--preset=castella",
                f"--output={out}", f"--seed={seed}", "--num_recordings=80"]

    new_ref = tmp_path / "new_ref"
    subprocess.run(cmd(new_ref, 1), cwd=REPO, env=_env(), check=True, capture_output=True)
    new = _snapshot(new_ref)
    out = tmp_path / "out"
    subprocess.run(cmd(out, 0), cwd=REPO, env=_env(), check=True, capture_output=True)
    old = _snapshot(out)
    assert old != new  # other seed: other features (and other queries, hence other text files)
    rng = random.Random(0)
    outcomes = []
    for i, sig in enumerate([signal.SIGKILL, signal.SIGINT] * 3):
        delay = None if i < 2 else rng.uniform(2.5, 5.0)
        rc = _interrupt(cmd(out, 1), out, sig=sig, delay=delay)
        got = _snapshot(out)
        _check_old_or_new(got, old, new, f"interrupt {i} ({sig.name}, rc {rc})")
        # Until a run completes, the folder is not marked complete with the new summary.
        assert (got.get("SYNTHETIC.json") != new["SYNTHETIC.json"]
                or {k: got.get(k) for k in new} == new)
        outcomes.append((sig.name, rc, sum(got.get(k) == new[k] for k in new)))
    # The interruptions landed mid-run: some files already new, others not.
    assert any(0 < n_new < len(new) for _, _, n_new in outcomes), outcomes
    subprocess.run(cmd(out, 1), cwd=REPO, env=_env(), check=True, capture_output=True)
    got = _snapshot(out)
    assert {k: got.get(k) for k in new} == new  # files only the old seed had stay as they were


@pytest.fixture(scope="module")
def converted_split(tmp_path_factory):
    from amr_jax.clap import convert
    from amr_jax.data.synthetic import generate_split
    root = tmp_path_factory.mktemp("split")
    generate_split("castella", root, seed=0, num_recordings=6, progress=False)
    convert.convert_and_save(root / "msclap_synthetic.npz", root / "clap_converted")
    return root


def test_localize_interrupted(converted_split, tmp_path):
    d = converted_split

    def cmd(system, out):
        return [sys.executable, "-m", "experiments.localize",
                f"--config=experiments/configs/localize.py:{system},runlocal",
                f"--annotations={d / 'annotations.jsonl'}", f"--audio_feats={d / 'clap'}",
                f"--text_feats={d / 'clap_text'}", f"--clap={d / 'clap_converted'}",
                f"--output={out / 'pred.jsonl'}", f"--timings={out / 'timings.json'}"]

    ref = tmp_path / "ref"
    subprocess.run(cmd("jointproj_s1", ref), cwd=REPO, env=_env(), check=True, capture_output=True)
    new = _snapshot(ref)
    out = tmp_path / "out"
    subprocess.run(cmd("backbone_cosine", out), cwd=REPO, env=_env(), check=True,
                   capture_output=True)
    old = _snapshot(out)
    assert old["pred.jsonl"] != new["pred.jsonl"]
    rng = random.Random(1)
    for i, sig in enumerate([signal.SIGKILL, signal.SIGINT] * 3):
        delay = None if i < 2 else rng.uniform(1.0, 12.0)
        rc = _interrupt(cmd("jointproj_s1", out), out, sig=sig, delay=delay)
        got = _snapshot(out)
        _check_old_or_new({k: v for k, v in got.items() if k != "timings.json"}, old, new,
                          f"interrupt {i} ({sig.name}, rc {rc})")
        if rc == 0:  # finished before the signal: the complete new file
            assert got["pred.jsonl"] == new["pred.jsonl"]
    subprocess.run(cmd("jointproj_s1", out), cwd=REPO, env=_env(), check=True, capture_output=True)
    got = _snapshot(out)
    assert got["pred.jsonl"] == new["pred.jsonl"]
