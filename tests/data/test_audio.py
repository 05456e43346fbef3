"""WAV reading/writing against the stdlib `wave` module, resampling against analytic tones
and scipy.signal.resample_poly."""

import struct
import wave

import numpy as np
import pytest
from scipy.signal import resample_poly

from amr_jax.data import audio


def _stdlib_wav(path, x, rate, width, channels=1):
    """Integer PCM written by the stdlib (independent of our writer); x [N, channels] in [-1, 1]."""
    x = np.asarray(x, np.float64).reshape(len(x), channels)
    scale = float(2 ** (8 * width - 1) - 1)
    ints = np.round(x * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints.reshape(-1))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return ints / float(2 ** (8 * width - 1))


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_read_integer_pcm_matches_stdlib_writer(tmp_path, width):
    rng = np.random.default_rng(width)
    x = rng.uniform(-0.9, 0.9, (500, 2))
    expected = _stdlib_wav(tmp_path / "a.wav", x, 8000, width, channels=2)
    y, rate = audio.read_wav(tmp_path / "a.wav")
    assert rate == 8000
    np.testing.assert_allclose(y, expected.mean(axis=1), atol=1e-12)  # channels averaged
    part, _ = audio.read_wav(tmp_path / "a.wav", start_s=0.01, duration_s=0.02)
    np.testing.assert_allclose(part, expected.mean(axis=1)[80:240], atol=1e-12)


@pytest.mark.parametrize("encoding, atol", [("pcm16", 2 / 32768), ("float32", 1e-7)])
def test_write_then_read(tmp_path, encoding, atol):
    x = np.sin(np.linspace(0, 20, 1001)) * 0.8
    (tmp_path / "b.wav").write_bytes(audio.wav_bytes(x, 16000, encoding=encoding))
    y, rate = audio.read_wav(tmp_path / "b.wav")
    assert rate == 16000 and len(y) == 1001
    np.testing.assert_allclose(y, x, atol=atol)
    if encoding == "pcm16":
        with wave.open(str(tmp_path / "b.wav")) as w:  # the stdlib reads our file too
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (
                1, 2, 16000, 1001)


def test_read_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(audio.AudioError, match="x.wav: not a RIFF/WAVE file"):
        audio.read_wav(tmp_path / "x.wav")
    adpcm = bytearray(audio.wav_bytes(np.zeros(10), 8000))
    adpcm[20:22] = struct.pack("<H", 2)  # format tag 2: MS ADPCM
    (tmp_path / "adpcm.wav").write_bytes(bytes(adpcm))
    with pytest.raises(audio.AudioError, match="unsupported WAV encoding"):
        audio.read_wav(tmp_path / "adpcm.wav")
    (tmp_path / "s.wav").write_bytes(audio.wav_bytes(np.zeros(100), 1000))
    with pytest.raises(audio.AudioError, match=r"start 0.5 s is outside the file \(0.1 s\)"):
        audio.read_wav(tmp_path / "s.wav", start_s=0.5)
    with pytest.raises(FileNotFoundError):
        audio.read_wav(tmp_path / "missing.wav")


@pytest.mark.parametrize("rate_in, rate_out", [(44100, 32000), (48000, 32000), (16000, 32000),
                                               (22050, 32000), (32000, 44100)])
def test_resample_tone_is_the_tone_at_the_new_rate(rate_in, rate_out):
    t = np.arange(int(0.5 * rate_in)) / rate_in
    y = audio.resample(np.sin(2 * np.pi * 1234.5 * t + 0.3), rate_in, rate_out)
    assert len(y) == int(np.ceil(len(t) * rate_out / rate_in))
    expected = np.sin(2 * np.pi * 1234.5 * np.arange(len(y)) / rate_out + 0.3)
    inner = slice(rate_out // 20, -rate_out // 20)  # away from the zero-padded edges
    np.testing.assert_allclose(y[inner], expected[inner], atol=1e-4)
    ref = resample_poly(np.sin(2 * np.pi * 1234.5 * t + 0.3), rate_out, rate_in)
    np.testing.assert_allclose(y[inner], ref[:len(y)][inner], atol=5e-3)  # scipy's own error


def test_resample_removes_what_the_new_rate_cannot_hold():
    t = np.arange(44100) / 44100
    y = audio.resample(np.sin(2 * np.pi * 20000 * t), 44100, 32000)  # above 16 kHz Nyquist
    assert np.sqrt(np.mean(y[3200:-3200] ** 2)) < 1e-3
    noise = np.random.default_rng(0).standard_normal(4000)
    np.testing.assert_array_equal(audio.resample(noise, 8000, 8000), noise)
