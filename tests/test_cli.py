"""What a user sees when something is wrong: one line, a remedy, an exit code; outputs readable by others."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amr_jax import cli
from amr_jax.data.errors import AnnotationError, FeatureError
from amr_jax.errors import ConfigError
from amr_jax.io_utils import atomic_save_npz, atomic_write_text

REPO = Path(__file__).resolve().parent.parent


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _annotations(tmp_path, lines):
    path = tmp_path / "gt.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_bad_annotation_is_one_line_with_remedy_and_exit_code(tmp_path):
    gt = tmp_path / "gt.jsonl"
    gt.write_text('{"qid": 1, "query": "q", "duration": 10, "vid": "a", "relevant_windows": [[1, 2]]}\n'
                  '{"qid": 2, "query": "q", "vid": "a"}\n')
    run = _run("experiments.evaluate", f"--gt={gt}", f"--pred={gt}")
    assert run.returncode == cli.EXIT_ANNOTATION
    assert "Traceback" not in run.stderr
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == [f"error: {gt}:2: missing field(s) ['duration']; {AnnotationError.hint}"]
    verbose = _run("experiments.evaluate", f"--gt={gt}", f"--pred={gt}", "--verbose")
    assert verbose.returncode == cli.EXIT_ANNOTATION and "Traceback" in verbose.stderr


def test_unknown_config_key_names_the_closest_valid_key():
    args = ["experiments.localize", "--annotations=a", "--audio_feats=b", "--text_feats=c",
            "--output=d", "--config=experiments/configs/localize.py:gmm_contrast"]
    run = _run(*args, "--config.fwhm.smoth_k=3")
    assert run.returncode == cli.EXIT_CONFIG and "Traceback" not in run.stderr
    assert ("error: unknown config key 'config.fwhm.smoth_k' ('smoth_k' is not a key of "
            "config.fwhm); did you mean --config.fwhm.smooth_k?") in run.stderr
    nested = _run(*args, "--config.smooth_k=3")
    assert nested.returncode == cli.EXIT_CONFIG
    # fwhm and fused both have smooth_k: every home of the key is named, none guessed.
    hint = nested.stderr.split("did you mean one of ", 1)[-1]
    assert "--config.fwhm.smooth_k" in hint and "--config.fused.smooth_k" in hint
    bad_system = _run(*args[:-1], "--config=experiments/configs/localize.py:gmm_contrst")
    assert bad_system.returncode == cli.EXIT_CONFIG and "Traceback" not in bad_system.stderr
    assert "unknown system 'gmm_contrst'" in bad_system.stderr


def test_missing_feature_files_listed_in_one_report(tmp_path):
    gt = _annotations(tmp_path, [{"qid": q, "query": "q", "duration": 10, "vid": "v",
                                  "relevant_windows": [[1, 2]]} for q in (1, 2)])
    (tmp_path / "clap").mkdir()
    run = _run("experiments.localize", f"--annotations={gt}", f"--audio_feats={tmp_path / 'clap'}",
               f"--text_feats={tmp_path / 'clap'}", f"--output={tmp_path / 'p.jsonl'}",
               "--config=experiments/configs/localize.py:backbone_cosine,runlocal")
    assert run.returncode == cli.EXIT_FEATURE and "Traceback" not in run.stderr
    assert "error: 1 of 1 audio feature files are missing:" in run.stderr
    assert str(tmp_path / "clap" / "v.npz") in run.stderr


def test_format_error_and_exit_codes():
    assert cli.format_error(FeatureError("x.npz: bad")) == f"x.npz: bad; {FeatureError.hint}"
    assert cli.format_error(ConfigError("k: bad", hint="use 1")) == "k: bad; use 1"
    missing = FileNotFoundError(2, "No such file or directory", "/a/b")
    assert cli.format_error(missing) == "/a/b: No such file or directory; check the path"
    assert cli.format_error(RuntimeError("a bug")) is None  # bugs keep their traceback
    assert cli._exit_code(FeatureError("x")) == cli.EXIT_FEATURE
    assert cli._exit_code(missing) == cli.EXIT_MISSING_FILE


def test_closest_key():
    assert cli.closest_key("lerning_rate", ["learning_rate", "weight_decay"]) == "learning_rate"
    assert cli.closest_key("zzz", ["learning_rate"]) is None


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_outputs_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "a" / "p.jsonl", "x\n")
        arrays = atomic_save_npz(tmp_path / "f.npz", features=np.zeros((2, 3), np.float32))
        with open(tmp_path / "plain.txt", "w") as f:  # what open() gives, the expectation
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(text).st_mode) == expected
    assert stat.S_IMODE(os.stat(arrays).st_mode) == expected
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_evaluate_warns_about_reversed_and_extra_windows_keeping_official_scores(tmp_path):
    gt = _annotations(tmp_path, [
        {"qid": q, "query": "q", "duration": 30, "vid": "v", "relevant_windows": [[2, 8]]}
        for q in range(4)])
    long_list = [[2, 8, 0.9]] + [[20 + i, 21 + i, 0.1] for i in range(11)]
    preds = [{"qid": 0, "vid": "v", "pred_relevant_windows": long_list},
             {"qid": 1, "vid": "v", "pred_relevant_windows": [[8, 2, 0.9], [2, 8, 0.5]]},
             {"qid": 2, "vid": "v", "pred_relevant_windows": [[2, 8, 0.9]]},
             {"qid": 3, "vid": "v", "pred_relevant_windows": [[2, 7, 0.9]]}]
    pred = tmp_path / "p.jsonl"
    pred.write_text("".join(json.dumps(p) + "\n" for p in preds))
    out = tmp_path / "m.json"
    run = _run("experiments.evaluate", f"--gt={gt}", f"--pred={pred}", f"--output={out}")
    assert run.returncode == 0, run.stderr
    assert "1 queries have more than 10 windows; only the first 10 are scored (qids 0)" in run.stderr
    assert "1 queries have reversed windows (end < start), which overlap nothing" in run.stderr
    assert "(qids 1)" in run.stderr
    # Official semantics unchanged: qid 1's first window is reversed, so R1@0.5 misses it.
    brief = json.loads(run.stdout.strip().splitlines()[-1])
    assert brief["R1@0.5"] == 75.0
    assert f"wrote metrics: {out}" in run.stderr


def test_scoring_does_not_warn_about_windows_past_the_duration(tmp_path):
    gt = _annotations(tmp_path, [{"qid": 1, "query": "q", "duration": 10, "vid": "v",
                                  "relevant_windows": [[2, 4], [10, 12]]}])
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"qid": 1, "vid": "v", "pred_relevant_windows": [[2, 4, 1.0]]}) + "\n")
    run = _run("experiments.evaluate", f"--gt={gt}", f"--pred={pred}")
    assert run.returncode == 0 and "dropping" not in run.stderr and "WARNING" not in run.stderr
