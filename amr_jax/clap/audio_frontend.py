"""MS-CLAP 2023's audio front end: wav -> 44.1 kHz -> 1 s windows -> log-mel, in JAX.

Every detail below was read from the `msclap` package (1.3.3: `models/htsat.py`,
`models/audio.py`, `models/config.py`, `CLAPWrapper.py`, `configs/config_2023.yml`),
`torchlibrosa` 0.1.0 (`stft.py`) and the feature extractors behind the released
features (lighthouse `feature_extractor/audio_encoders/clap_a.py`; the CASTELLA and
Clotho-Moment scripts as summarised in `../shared/REFERENCE_NOTES.md` section 8):

* Loading: PCM scaled as torchaudio does (int16 / 2**15, int32 / 2**31, uint8
  (x - 128) / 128), first channel only. `load_wav` reads PCM wav with the standard
  library (no soundfile / torchaudio at run time).
* Resampling to 44,100 Hz (`config_2023.yml: sampling_rate`) only when the rate
  differs, with torchaudio's default `Resample` (windowed-sinc, Hann window,
  lowpass_filter_width 6, rolloff 0.99), transcribed in numpy in `resample`.
* Windows (`window_audio`): 1 s (44,100 samples), 1 s hop, via `unfold` in the
  extractors. CASTELLA: truncate to 300 s, T = floor(N / 44100). Clotho-Moment:
  "centre-based cutting", 22,050 zeros on each side, no truncation,
  T = floor(N / 44100) + 1. lighthouse's inference API (`clap_a.py`, used for a user's
  own recordings by `amr_jax.Predictor`): whole seconds, no cap, T = floor(N / 44100).
  The wrapper's own repeat/crop to `duration: 7` is
  never applied to these windows (the extractors call `audio_encoder.base` directly).
* STFT (torchlibrosa `Spectrogram`, built by `HTSAT_Swin_Transformer` from
  `models/config.py`, NOT from the yml): n_fft = win = 1024, hop 320, periodic Hann,
  `center=True` with reflect padding of 512, power 2 -> 138 frames per 1 s window.
* Mel (torchlibrosa `LogmelFilterBank`): librosa's Slaney mel filter bank with
  Slaney area normalisation for **sr = 32,000** (config.py's `sample_rate`; the audio
  itself is at 44.1 kHz, a quirk of the release we reproduce), fmin 50, fmax 14,000
  (config.py; the yml's 8000 is unused), 64 bins; 10 * log10(max(p, 1e-10)),
  ref 1.0, no top_db clipping.
* What follows (bn0, bicubic resize to 1024 frames, fold to 256 x 256) belongs to the
  encoder: `amr_jax.clap.htsat`.

`log_mel` is jit-compatible and batched over windows: `[B, N] -> [B, T, 64]` with static
shapes. Constants (DFT kernels, mel matrix) are numpy arrays built per call from the
config (no module-level caches).
"""

from __future__ import annotations

import dataclasses
import math
import wave
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from amr_jax.errors import UsageError

SAMPLE_RATE = 44_100  # msclap config_2023.yml sampling_rate; the extractors' window rate
LAYOUTS = ("castella", "clotho_moment", "lighthouse")
CASTELLA_MAX_SECONDS = 300


@dataclasses.dataclass(frozen=True)
class FrontendConfig:
    """STFT / log-mel settings that run in MS-CLAP 2023 (msclap models/config.py)."""

    n_fft: int = 1024
    hop: int = 320
    mel_sample_rate: int = 32_000  # the filter bank's assumed rate, not the audio's
    fmin: float = 50.0
    fmax: float = 14_000.0
    n_mels: int = 64
    amin: float = 1e-10

    def num_frames(self, num_samples: int) -> int:
        """Frames of the centred STFT of `num_samples` samples."""
        return num_samples // self.hop + 1


# --------------------------------------------------------------------------------------
# Constants.


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (scipy/librosa `get_window('hann', n, fftbins=True)`), float64."""
    k = np.arange(n)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


def dft_kernels(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed DFT kernels `(real, imag)`, each `[n_fft, n_fft // 2 + 1]` float64.

    real[n, k] = w[n] cos(2 pi n k / N), imag[n, k] = -w[n] sin(2 pi n k / N), the layout
    of torchlibrosa's `conv_real` / `conv_imag` weights (transposed, channel dim dropped).
    """
    n = np.arange(n_fft)[:, None]
    k = np.arange(n_fft // 2 + 1)[None, :]
    # Reduce n*k mod N in integers first so the angle keeps full precision.
    angle = 2.0 * np.pi * ((n * k) % n_fft) / n_fft
    w = hann_window(n_fft)[:, None]
    return w * np.cos(angle), -w * np.sin(angle)


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    linear = f / f_sp
    log = min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log, linear)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz, min_log_mel = 200.0 / 3, 1000.0, 15.0
    logstep = np.log(6.4) / 27.0
    linear = f_sp * m
    log = min_log_hz * np.exp(logstep * (m - min_log_mel))
    return np.where(m >= min_log_mel, log, linear)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters `[n_fft // 2 + 1, n_mels]` float64
    (the transpose of librosa `filters.mel(htk=False, norm='slaney')`)."""
    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    mel_pts = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    hz_pts = _mel_to_hz_slaney(mel_pts)
    spacing = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / spacing[:-1, None]
    falling = ramps[2:] / spacing[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]  # equal area per filter
    return weights.T


# --------------------------------------------------------------------------------------
# Log-mel (JAX).


def _frame_indices(num_samples: int, cfg: FrontendConfig) -> np.ndarray:
    """`[T, n_fft]` indices into the reflect-padded signal."""
    starts = np.arange(cfg.num_frames(num_samples)) * cfg.hop
    return starts[:, None] + np.arange(cfg.n_fft)[None, :]


def power_spectrogram(waveforms: jax.Array, cfg: FrontendConfig = FrontendConfig()) -> jax.Array:
    """Centred, reflect-padded, Hann-windowed power STFT.

    Args:
      waveforms: `[B, N]` float, N > n_fft // 2 (reflect padding needs it).

    Returns:
      `[B, T, n_fft // 2 + 1]` float32, T = N // hop + 1.
    """
    num_samples = waveforms.shape[-1]
    if num_samples <= cfg.n_fft // 2:
        raise UsageError(f"a window needs more than {cfg.n_fft // 2} samples, got {num_samples}")
    pad = cfg.n_fft // 2
    x = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
    frames = x[:, _frame_indices(num_samples, cfg)]  # [B, T, n_fft]
    real_k, imag_k = dft_kernels(cfg.n_fft)
    hi = jax.lax.Precision.HIGHEST
    real = jnp.matmul(frames, jnp.asarray(real_k, jnp.float32), precision=hi)
    imag = jnp.matmul(frames, jnp.asarray(imag_k, jnp.float32), precision=hi)
    return real * real + imag * imag


def log_mel(waveforms: jax.Array, cfg: FrontendConfig = FrontendConfig()) -> jax.Array:
    """MS-CLAP 2023 log-mel spectrogram (dB, before bn0).

    Args:
      waveforms: `[B, N]` float32 at 44.1 kHz (e.g. `[B, 44100]` one-second windows).

    Returns:
      `[B, T, n_mels]` float32, T = N // 320 + 1 (138 for 1 s).
    """
    power = power_spectrogram(waveforms, cfg)
    mel_w = mel_filterbank(cfg.mel_sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    mel = jnp.matmul(power, jnp.asarray(mel_w, jnp.float32), precision=jax.lax.Precision.HIGHEST)
    # ref = 1.0, so the reference's "- 10 log10(max(amin, ref))" term is zero.
    return 10.0 * jnp.log10(jnp.maximum(mel, cfg.amin))


# --------------------------------------------------------------------------------------
# Host side: reading, resampling, windowing (data-dependent lengths, numpy).


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a PCM wav file: `([N] float32 first channel, sample rate)`.

    Raises:
      FileNotFoundError; UsageError naming the file for non-PCM or empty files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        with wave.open(str(path), "rb") as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            raw = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as e:
        raise UsageError(f"{path}: not a PCM wav file ({e}); convert it to 16-bit PCM wav") from e
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # sign from the top byte
        data = ints.astype(np.float32) / 2.0**31
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / 2.0**31
    else:
        raise UsageError(f"{path}: unsupported sample width {width} bytes")
    data = data.reshape(-1, channels)[:, 0]
    if data.size == 0:
        raise UsageError(f"{path}: no audio samples")
    return np.ascontiguousarray(data), rate


def resample(x: np.ndarray, orig_sr: int, new_sr: int = SAMPLE_RATE) -> np.ndarray:
    """torchaudio's default `Resample` (sinc_interp_hann, width 6, rolloff 0.99) in numpy.

    Args:
      x: `[N]` float signal.

    Returns:
      `[ceil(N * new_sr / orig_sr)]` float32; `x` unchanged when the rates are equal.
    """
    if orig_sr == new_sr:
        return np.asarray(x, np.float32)
    if orig_sr <= 0 or new_sr <= 0:
        raise UsageError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    zeros, rolloff = 6, 0.99
    base = min(orig, new) * rolloff
    width = math.ceil(zeros * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None, :] / orig
    t = (-np.arange(new, dtype=np.float64)[:, None] / new + idx) * base
    t = np.clip(t, -zeros, zeros)
    window = np.cos(t * np.pi / zeros / 2) ** 2
    t = t * np.pi
    safe = np.where(t == 0, 1.0, t)
    kernel = np.where(t == 0, 1.0, np.sin(safe) / safe) * window * (base / orig)  # [new, L]
    n = x.shape[-1]
    padded = np.pad(np.asarray(x, np.float64), (width, width + orig))
    num_blocks = (padded.size - kernel.shape[1]) // orig + 1
    blocks = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig][:num_blocks]
    out = (blocks @ kernel.T).reshape(-1)  # block-major: output j*new + i
    return out[: math.ceil(new * n / orig)].astype(np.float32)


def window_audio(x: np.ndarray, layout: str, sr: int = SAMPLE_RATE) -> np.ndarray:
    """1 s windows with 1 s hop as the release's extractors cut them.

    Args:
      x: `[N]` float signal at `sr`.
      layout: "castella" (truncate to 300 s, T = floor(N / sr)), "clotho_moment"
        (sr // 2 zeros each side, T = floor(N / sr) + 1) or "lighthouse" (no cap,
        T = floor(N / sr)).

    Returns:
      `[T, sr]` float32 windows (T may be 0 for CASTELLA clips under 1 s).
    """
    x = np.asarray(x, np.float32)
    if layout == "castella":
        x = x[: CASTELLA_MAX_SECONDS * sr]
    elif layout == "lighthouse":
        pass
    elif layout == "clotho_moment":
        x = np.pad(x, (sr // 2, sr // 2))
    else:
        raise UsageError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    num = (x.size - sr) // sr + 1 if x.size >= sr else 0
    return x[: num * sr].reshape(num, sr)
