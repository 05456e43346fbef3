"""The mixer on generated tones and noise: the generator's level rules, normalization, errors."""

import numpy as np
import pytest

from amr_jax.data import audio, cm_mixer


def _wav(path, x, rate, encoding="float32"):
    path.write_bytes(audio.wav_bytes(x, rate, encoding=encoding))
    return path


def _recipe(duration=4.0, bg_db=-20.0, events=()):
    return {"vid": "walk_0.0_4.0", "duration": duration,
            "background": {"id": "walk", "path": "walk.wav", "start": 1.0, "dB": bg_db},
            "events": [{"qid": f"{i:05d}", "fg_id": name, "path": f"{name}.wav", "offset": 0.0,
                        "caption": "c",
                        "duration": dur, "occurrences": [{"start": s, "dB": db} for s, db in occ]}
                       for i, (name, dur, occ) in enumerate(events)]}


def test_mix_is_the_generator_rule_exactly(tmp_path):
    """Sources at the output rate (no resampling): the rule transcribed in numpy."""
    rate = 8000
    rng = np.random.default_rng(0)
    walk = 0.3 * rng.standard_normal(6 * rate)
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(1.5 * rate)) / rate)
    chirp = 0.2 * np.sin(2 * np.pi * np.cumsum(np.linspace(200, 900, rate)) / rate)
    _wav(tmp_path / "walk.wav", walk, rate)
    _wav(tmp_path / "tone.wav", tone, rate)
    _wav(tmp_path / "chirp.wav", chirp, rate)
    recipe = _recipe(events=[("tone", 1.5, [(0.2, 3.0), (2.3, -4.0)]),
                             ("chirp", 1.0, [(1.7, 0.5)])])
    config = cm_mixer.MixConfig(sample_rate=rate)
    out = cm_mixer.render_recipe(recipe, fg_root=tmp_path, bg_root=tmp_path, config=config)

    b = walk[rate:5 * rate].astype(np.float32).astype(np.float64)   # the 4 s segment from 1 s
    f_tone, f_chirp = (x.astype(np.float32).astype(np.float64) for x in (tone, chirp))
    expected = 10 ** (-20 / 20) * b
    for f, start, db in ((f_tone, 0.2, 3.0), (f_tone, 2.3, -4.0), (f_chirp, 1.7, 0.5)):
        i = int(start * rate)
        expected[i:i + len(f)] += 10 ** (db / 20) * np.sqrt(np.mean(b ** 2)) * f / np.abs(f).max()
    expected /= np.abs(expected).max()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert len(out) == 4 * rate and np.abs(out).max() == 1.0


def test_levels_follow_the_rules_after_resampling(tmp_path):
    """Background noise at 48 kHz (stereo), a 1 kHz tone at 44.1 kHz, rendered at 32 kHz: the
    tone's amplitude over the background's RMS is fg_dB - bg_dB, the peak is 1."""
    rng = np.random.default_rng(1)
    noise = 0.1 * rng.standard_normal((8 * 48000, 2))
    stereo = audio.wav_bytes(noise.reshape(-1), 48000, encoding="float32")
    # Same samples declared as 2 channels: patch channels, byte rate and block align.
    header = bytearray(stereo[:44])
    header[22:24] = (2).to_bytes(2, "little")
    header[28:32] = (48000 * 8).to_bytes(4, "little")
    header[32:34] = (8).to_bytes(2, "little")
    (tmp_path / "walk.wav").write_bytes(bytes(header) + stereo[44:])
    tone = 0.7 * np.sin(2 * np.pi * 1000 * np.arange(int(1.2 * 44100)) / 44100)
    _wav(tmp_path / "tone.wav", tone, 44100, encoding="pcm16")
    fg_db, bg_db = 2.5, -22.0
    recipe = _recipe(bg_db=bg_db, events=[("tone", 1.2, [(1.0, fg_db)])])
    out = cm_mixer.render_recipe(recipe, fg_root=tmp_path, bg_root=tmp_path,
                                 config=cm_mixer.MixConfig(sample_rate=32000))
    assert len(out) == 4 * 32000 and np.isclose(np.abs(out).max(), 1.0)
    bg_rms = np.sqrt(np.mean(out[int(2.4 * 32000):int(3.9 * 32000)] ** 2))  # no tone there
    seg = out[int(1.1 * 32000):int(2.1 * 32000)]
    t = np.arange(int(1.1 * 32000), int(2.1 * 32000)) / 32000
    basis = np.stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)], 1)
    amplitude = np.linalg.norm(np.linalg.lstsq(basis, seg, rcond=None)[0])
    assert abs(20 * np.log10(amplitude / bg_rms) - (fg_db - bg_db)) < 0.15
    # The occurrence starts at floor(start * rate): silence-to-tone step right there.
    onset = int(1.0 * 32000)
    before, after = out[onset - 800:onset - 50], out[onset + 50:onset + 800]
    assert np.sqrt(np.mean(after ** 2)) > 5 * np.sqrt(np.mean(before ** 2))


def test_render_recipes_writes_atomically_and_resumes(tmp_path):
    rate = 8000
    _wav(tmp_path / "walk.wav", np.random.default_rng(2).uniform(-0.2, 0.2, 6 * rate), rate)
    _wav(tmp_path / "tone.wav", np.sin(np.arange(rate)), rate)
    recipe = _recipe(events=[("tone", 1.0, [(0.5, 0.0)])])
    config = cm_mixer.MixConfig(sample_rate=rate)
    paths, written = cm_mixer.render_recipes([recipe], tmp_path / "wav", fg_root=tmp_path,
                                             bg_root=tmp_path, config=config, progress=False)
    assert written == 1 and paths == [tmp_path / "wav" / "walk_0.0_4.0.wav"]
    y, r = audio.read_wav(paths[0])
    # 16-bit: written as round(x * 32767), read as / 32768 (libsndfile does the same).
    assert r == rate and len(y) == 4 * rate and np.abs(y).max() == 32767 / 32768
    assert [p.name for p in (tmp_path / "wav").iterdir()] == ["walk_0.0_4.0.wav"]  # no temp
    _, again = cm_mixer.render_recipes([recipe], tmp_path / "wav", fg_root=tmp_path,
                                       bg_root=tmp_path, config=config, progress=False)
    assert again == 0


def test_mixer_errors(tmp_path):
    rate = 8000
    config = cm_mixer.MixConfig(sample_rate=rate)
    _wav(tmp_path / "walk.wav", np.zeros(6 * rate), rate)
    _wav(tmp_path / "tone.wav", np.sin(np.arange(rate)), rate)
    recipe = _recipe(events=[("tone", 1.0, [(0.5, 0.0)])])
    with pytest.raises(audio.AudioError, match="walk.wav: the background segment is silent"):
        cm_mixer.render_recipe(recipe, fg_root=tmp_path, bg_root=tmp_path, config=config)
    _wav(tmp_path / "walk.wav", np.ones(6 * rate) * 0.1, rate)
    short = _recipe(events=[("tone", 1.5, [(0.5, 0.0)])])
    with pytest.raises(audio.AudioError,
                       match=r"tone.wav: has 1.000 s from 0 s, the recipe needs 1.5 s"):
        cm_mixer.render_recipe(short, fg_root=tmp_path, bg_root=tmp_path, config=config)
    _wav(tmp_path / "tone.wav", np.zeros(rate), rate)
    with pytest.raises(audio.AudioError, match="tone.wav: the foreground clip is silent"):
        cm_mixer.render_recipe(recipe, fg_root=tmp_path, bg_root=tmp_path, config=config)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cm_mixer.render_recipe(recipe, fg_root=tmp_path / "nowhere", bg_root=tmp_path,
                               config=config)
    _wav(tmp_path / "walk.wav", np.ones(3 * rate) * 0.1, rate)  # segment [1, 5) s needs 5 s
    with pytest.raises(audio.AudioError,
                       match=r"walk.wav: has 2.000 s from 1 s, the recipe needs 4 s"):
        cm_mixer.render_recipe(recipe, fg_root=tmp_path, bg_root=tmp_path, config=config)
