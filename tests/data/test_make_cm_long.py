"""experiments.make_cm_long and make_synthetic --preset=clotho_moment_long, end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amr_jax import cli
from amr_jax.data import audio
from amr_jax.data.loader import load_split
from amr_jax.data.records import read_annotations

REPO = Path(__file__).resolve().parents[2]


def _run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    """12 short tone clips (one at 22.05 kHz, resampled) and two 40 s noise recordings."""
    root = tmp_path_factory.mktemp("cm_long")
    rng = np.random.default_rng(0)
    fg_lines = []
    for i in range(12):
        rate = 22050 if i == 0 else 16000
        duration = round(float(rng.uniform(1.0, 2.0)), 2)
        t = np.arange(int(duration * rate)) / rate
        (root / "audio").mkdir(exist_ok=True)
        (root / "audio" / f"clip{i}.wav").write_bytes(
            audio.wav_bytes(0.5 * np.sin(2 * np.pi * (300 + 50 * i) * t), rate))
        fg_lines.append({"id": f"clip{i}", "duration": duration,
                         "captions": [f"tone {i} rings", f"a tone of kind {i}"]})
    (root / "bg").mkdir()
    for name in ("walkA", "walkB"):
        (root / "bg" / f"{name}.wav").write_bytes(
            audio.wav_bytes(0.1 * rng.standard_normal(40 * 16000), 16000))
    (root / "fg.jsonl").write_text("".join(json.dumps(x) + "\n" for x in fg_lines))
    (root / "bg.jsonl").write_text(
        json.dumps({"id": "walkA", "duration": 40.0}) + "\n"
        + json.dumps({"id": "walkB", "duration": 40.0, "path": "walkB.wav"}) + "\n")
    return root


def test_binary_writes_release_audio_and_statistics(lists, tmp_path):
    args = [f"--foreground={lists / 'fg.jsonl'}", f"--background={lists / 'bg.jsonl'}",
            f"--output={tmp_path / 'out'}", "--seed=3", "--clip_s=10", "--mean_gap_s=2",
            "--bg_hop_s=10", f"--audio_root={lists / 'audio'}", f"--bg_audio_root={lists / 'bg'}",
            "--sample_rate=16000"]
    run = _run("experiments.make_cm_long", *args)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "clips 8, queries" in run.stdout and "recurring share" in run.stdout
    assert "audio: 8 written, 0 kept" in run.stdout and "wrote annotations:" in run.stderr
    out = tmp_path / "out"
    records = read_annotations(out / "annotations.jsonl")
    stats = json.loads((out / "statistics.json").read_text())
    assert stats["statistics"]["queries"] == len(records) and stats["generation"]["seed"] == 3
    for r in records:
        assert r.duration == 10 and r.raw_windows.min() >= 0 and r.raw_windows.max() <= 10
    wavs = sorted((out / "wav").iterdir())
    assert [p.stem for p in wavs] == sorted({r.vid for r in records} | {
        json.loads(line)["vid"] for line in (out / "recipes.jsonl").read_text().splitlines()})
    y, rate = audio.read_wav(wavs[0])
    assert rate == 16000 and len(y) == 10 * 16000
    again = _run("experiments.make_cm_long", *args)
    assert "audio: 0 written, 8 kept" in again.stdout
    # Render-only mode from the recipes reproduces the same files.
    render = _run("experiments.make_cm_long", f"--recipes={out / 'recipes.jsonl'}",
                  f"--output={tmp_path / 'render'}", f"--audio_root={lists / 'audio'}",
                  f"--bg_audio_root={lists / 'bg'}", "--sample_rate=16000")
    assert render.returncode == 0, render.stderr[-3000:]
    assert (tmp_path / "render/wav" / wavs[0].name).read_bytes() == wavs[0].read_bytes()


def test_binary_bad_input(lists, tmp_path):
    bad = tmp_path / "fg.jsonl"
    bad.write_text('{"id": "a", "duration": 2, "captions": ["x"]}\n{"id": "b", "duration": 2}\n')
    run = _run("experiments.make_cm_long", f"--foreground={bad}",
               f"--background={lists / 'bg.jsonl'}", f"--output={tmp_path / 'o'}")
    assert run.returncode == cli.EXIT_ANNOTATION and "Traceback" not in run.stderr
    assert f"error: {bad}:2 id=b: missing field 'captions'" in run.stderr
    usage = _run("experiments.make_cm_long", f"--output={tmp_path / 'o'}")
    assert usage.returncode == cli.EXIT_USAGE
    assert "pass --foreground and --background" in usage.stderr


def test_synthetic_preset_binary(tmp_path):
    run = _run("experiments.make_synthetic", "--preset=clotho_moment_long",
               f"--output={tmp_path}", "--seed=1", "--num_recordings=3")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "SYNTHETIC.json").read_text())
    assert summary["preset"] == "clotho_moment_long" and summary["num_recordings"] == 3
    assert summary["frame_offset_s"] == 0.0 and summary["num_frames"] == 3 * 300
    split = load_split(tmp_path / "annotations.jsonl", tmp_path / "clap", tmp_path / "clap_text",
                       progress=False)
    assert all(split.audio[r.vid].shape == (300, 768) for r in split.records)
    assert all(r.duration == 300 and len(r.windows) == len(r.extra["fg_dB"])
               for r in split.records)


def test_binary_builds_lists_from_audio(lists, tmp_path):
    """Clotho CSV + WAV folder (quiet heads trimmed) and a background folder, then render: the
    rendered occurrence starts with the clip's active part, not its quiet head."""
    clotho = tmp_path / "clotho"
    clotho.mkdir()
    rate = 16000
    for i in range(6):
        tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)
        (clotho / f"c{i}.wav").write_bytes(audio.wav_bytes(
            np.concatenate([np.zeros(rate) + 1e-4, tone]), rate))
    (tmp_path / "captions.csv").write_text(
        "file_name,caption_1\n" + "".join(f"c{i}.wav,tone {i}\n" for i in range(6)))
    run = _run("experiments.make_cm_long", f"--clotho_captions={tmp_path / 'captions.csv'}",
               f"--audio_root={clotho}", "--background_from_audio",
               f"--bg_audio_root={lists / 'bg'}", f"--output={tmp_path / 'out'}",
               "--clip_s=10", "--mean_gap_s=2", "--bg_hop_s=20", "--sample_rate=16000")
    assert run.returncode == 0, run.stderr[-3000:]
    fg = [json.loads(x) for x in (tmp_path / "out/foreground.jsonl").read_text().splitlines()]
    assert all(x["offset"] == 1.0 and x["duration"] == 1.0 for x in fg) and len(fg) == 6
    assert "walkA" in (tmp_path / "out/background.jsonl").read_text()
    # An occurrence with at least 0.3 s of silence before it.
    for line in (tmp_path / "out/recipes.jsonl").read_text().splitlines():
        recipe = json.loads(line)
        spans = sorted((o["start"], o["start"] + e["duration"])
                       for e in recipe["events"] for o in e["occurrences"])
        ends = [0.0] + [en for _, en in spans]
        found = [st for (st, _), end in zip(spans, ends) if st - end >= 0.3]
        if found:
            start = found[0]
            break
    y, _ = audio.read_wav(tmp_path / "out/wav" / f"{recipe['vid']}.wav")
    first = int(start * rate)
    # The 440 Hz tone (not the quiet head, which peak normalization would make a loud
    # constant) right from the onset.
    t = np.arange(first, first + rate // 4) / rate
    basis = np.stack([np.sin(2 * np.pi * 440 * t), np.cos(2 * np.pi * 440 * t)], 1)
    amplitude = np.linalg.norm(np.linalg.lstsq(basis, y[first:first + rate // 4], rcond=None)[0])
    assert amplitude > 3 * np.sqrt(np.mean(y[first - rate // 4:first] ** 2))
