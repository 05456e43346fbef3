"""Input lists from local audio: the generator's trimming rule, Clotho CSV, background folder."""

import numpy as np
import pytest

from amr_jax.data import audio, cm_lists
from amr_jax.data.clotho_moment_long import InputListError, read_foreground_list


def _reference_trim(s, sr, clip_db):
    """The Clotho-Moment generator's loops (4_clip_fg.py), transcribed in plain Python."""
    global_power = (s ** 2).mean()
    threshold = global_power * 10 ** (-clip_db / 10)
    onset = 0
    for sec in range(len(s) // sr):
        if (s[sec * sr:(sec + 1) * sr] ** 2).mean() > threshold:
            onset = sec
            break
    offset = len(s) // sr
    for sec in range(len(s) // sr, 0, -1):
        if (s[(sec - 1) * sr:sec * sr] ** 2).mean() > threshold:
            offset = sec
            break
    return onset, offset


@pytest.mark.parametrize("seed", range(6))
def test_trim_bounds_is_the_generator_rule(seed):
    rng = np.random.default_rng(seed)
    sr = 100
    head, body, tail = rng.integers(0, 4, 3)
    x = np.concatenate([0.01 * rng.standard_normal(head * sr + int(rng.integers(0, 50))),
                        rng.standard_normal(int(body + 2) * sr),
                        0.01 * rng.standard_normal(tail * sr + int(rng.integers(0, 99)))])
    clip_db = float(rng.uniform(2, 10))
    assert cm_lists.trim_bounds(x, sr, clip_db) == _reference_trim(x, sr, clip_db)


def test_foreground_list_from_clotho(tmp_path):
    sr = 8000
    quiet, loud = 0.001 * np.ones(2 * sr), np.sin(np.arange(3 * sr) * 0.3)
    (tmp_path / "a b.wav").write_bytes(audio.wav_bytes(np.concatenate([quiet, loud, quiet]), sr))
    (tmp_path / "c.wav").write_bytes(audio.wav_bytes(loud[:sr + 100], sr))
    csv_path = tmp_path / "captions.csv"
    csv_path.write_text('file_name,caption_1,caption_2\n"a b.wav","A loud, clear tone",second\n'
                        "c.wav,short one,\n")
    lines = cm_lists.foreground_list_from_clotho(csv_path, tmp_path)
    assert lines == [
        {"id": "a b", "duration": 3.0, "offset": 2.0, "captions": ["A loud, clear tone", "second"],
         "path": "a b.wav"},
        {"id": "c", "duration": 1.0, "offset": 0.0, "captions": ["short one"], "path": "c.wav"}]
    (tmp_path / "fg.jsonl").write_text("".join(__import__("json").dumps(x) + "\n" for x in lines))
    fgs = read_foreground_list(tmp_path / "fg.jsonl", max_duration_s=300)
    assert fgs[0].offset == 2.0 and fgs[0].duration == 3.0
    csv_path.write_text("file_name,caption_1\nc.wav,\n")
    with pytest.raises(InputListError, match=r"captions.csv:2: a row needs a file name"):
        cm_lists.foreground_list_from_clotho(csv_path, tmp_path)
    with pytest.raises(InputListError, match="captions CSV not found"):
        cm_lists.foreground_list_from_clotho(tmp_path / "nope.csv", tmp_path)
    csv_path.write_text("file_name,caption_1\nmissing.wav,x\n")
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        cm_lists.foreground_list_from_clotho(csv_path, tmp_path)


def test_background_list_from_folder(tmp_path):
    with pytest.raises(InputListError, match="no .wav files"):
        cm_lists.background_list_from_folder(tmp_path)
    (tmp_path / "walk2.wav").write_bytes(audio.wav_bytes(np.zeros(16000 * 3), 16000))
    (tmp_path / "walk1.wav").write_bytes(audio.wav_bytes(np.zeros(500), 1000, encoding="float32"))
    assert cm_lists.background_list_from_folder(tmp_path) == [
        {"id": "walk1", "duration": 0.5, "path": "walk1.wav"},
        {"id": "walk2", "duration": 3.0, "path": "walk2.wav"}]
