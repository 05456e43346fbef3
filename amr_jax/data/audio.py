"""WAV input/output and rational-ratio resampling in numpy (no scipy/soundfile in core).

- `read_wav`: RIFF/WAVE with integer PCM (8, 16, 24, 32 bit), IEEE float (32, 64 bit) or
  WAVE_FORMAT_EXTENSIBLE wrapping either; a part of the file (start, duration) is read by
  seeking, so a segment of an hours-long background recording costs only its own bytes.
  Channels are averaged to mono (as librosa's default load, which the Clotho-Moment
  generator uses).
- `wav_bytes`: mono 16-bit PCM or 32-bit float WAV file contents (write them with
  `io_utils.atomic_write_bytes`).
- `resample`: band-limited interpolation by a Kaiser-windowed sinc, evaluated polyphase:
  for a ratio L/M (reduced), output n sits at input position n*M/L, and its value is
  `sum_j h[r + j L] x[q - j]` with `n M = q L + r`; the low-pass cutoff is the lower of
  the two Nyquist rates times `rolloff`. The filter is centred, so there is no delay.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np

from amr_jax.data.errors import FeatureError

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class AudioError(FeatureError):
    """An audio file that cannot be read or used (names the file and what is wrong)."""

    hint = "pass mono or multichannel WAV files (PCM 8/16/24/32 bit or float 32/64 bit)"


def _chunks(f, path: Path):
    """Yields (chunk id, data offset, size) of a RIFF/WAVE file."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a RIFF/WAVE file")
    offset = 12
    while True:
        f.seek(offset)
        header = f.read(8)
        if len(header) < 8:
            return
        cid, size = header[:4], struct.unpack("<I", header[4:])[0]
        yield cid, offset + 8, size
        offset += 8 + size + (size & 1)  # chunks are word aligned


def wav_info(path: str | os.PathLike) -> tuple[int, int, int, int, int]:
    """(sample rate, channels, format tag, bits per sample, number of frames) of a WAV file."""
    path = Path(path)
    with path.open("rb") as f:
        fmt = data = None
        for cid, start, size in _chunks(f, path):
            if cid == b"fmt ":
                f.seek(start)
                fmt = f.read(size)
            elif cid == b"data":
                data = (start, size)
                break
    if fmt is None or len(fmt) < 16 or data is None:
        raise AudioError(f"{path}: WAV file without a 'fmt ' or 'data' chunk")
    tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == _EXTENSIBLE and len(fmt) >= 26:
        tag = struct.unpack("<H", fmt[24:26])[0]  # the sub-format GUID starts with the tag
    if tag not in (_PCM, _FLOAT) or (tag == _PCM and bits not in (8, 16, 24, 32)) or (
            tag == _FLOAT and bits not in (32, 64)) or channels < 1 or rate < 1:
        raise AudioError(f"{path}: unsupported WAV encoding (format {tag}, {bits} bit, "
                         f"{channels} channels, {rate} Hz)")
    if block != channels * bits // 8:
        raise AudioError(f"{path}: inconsistent WAV block size {block}")
    return rate, channels, tag, bits, data[1] // block


def _data_offset(path: Path) -> int:
    with path.open("rb") as f:
        for cid, start, _ in _chunks(f, path):
            if cid == b"data":
                return start
    raise AudioError(f"{path}: WAV file without a 'data' chunk")


def read_wav(path: str | os.PathLike, *, start_s: float = 0.0,
             duration_s: float | None = None) -> tuple[np.ndarray, int]:
    """Reads [start_s, start_s + duration_s) of a WAV file as mono float64 in [-1, 1].

    Returns:
      (samples [N], sample rate). Fewer samples than asked when the file ends first.

    Raises:
      FileNotFoundError: no such file.
      AudioError: not a WAV file, unsupported encoding, or start past the end.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    rate, channels, tag, bits, frames = wav_info(path)
    first = int(round(start_s * rate))
    if first < 0 or first >= frames:
        raise AudioError(f"{path}: start {start_s:g} s is outside the file "
                         f"({frames / rate:g} s)")
    count = frames - first if duration_s is None else min(frames - first,
                                                          int(round(duration_s * rate)))
    width = bits // 8
    with path.open("rb") as f:
        f.seek(_data_offset(path) + first * channels * width)
        raw = f.read(count * channels * width)
    count = len(raw) // (channels * width)
    raw = raw[:count * channels * width]
    if tag == _FLOAT:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float64)
    elif bits == 8:
        x = (np.frombuffer(raw, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif bits == 24:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    else:
        x = np.frombuffer(raw, "<i2" if bits == 16 else "<i4").astype(np.float64) / float(
            1 << (bits - 1))
    x = x.reshape(count, channels).mean(axis=1)
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{path}: non-finite samples")
    return x, rate


def wav_bytes(samples: np.ndarray, rate: int, *, encoding: str = "pcm16") -> bytes:
    """Mono WAV file contents; `encoding` "pcm16" (clipped to [-1, 1]) or "float32"."""
    x = np.asarray(samples, np.float64).reshape(-1)
    if encoding == "pcm16":
        data = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        tag, bits = _PCM, 16
    elif encoding == "float32":
        data = x.astype("<f4").tobytes()
        tag, bits = _FLOAT, 32
    else:
        raise ValueError(f"unknown WAV encoding {encoding!r}; expected 'pcm16' or 'float32'")
    block = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack(
        "<I", len(data)) + data + (b"\0" if len(data) & 1 else b"")
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _kaiser_sinc(up: int, down: int, zeros: int, rolloff: float,
                 beta: float) -> tuple[np.ndarray, int]:
    """Low-pass filter h[m], m in [-H, H], at the upsampled rate, with gain `up`."""
    cutoff = rolloff * min(1.0, up / down) / (2 * up)  # cycles per upsampled sample
    half = int(math.ceil(zeros / (2 * cutoff)))      # `zeros` zero crossings on each side
    m = np.arange(-half, half + 1, dtype=np.float64)
    h = 2 * cutoff * np.sinc(2 * cutoff * m) * np.kaiser(2 * half + 1, beta)
    return up * h, half


def resample(x: np.ndarray, rate_in: int, rate_out: int, *, zeros: int = 24,
             rolloff: float = 0.945, beta: float = 8.6) -> np.ndarray:
    """Resamples a 1-d signal from `rate_in` to `rate_out` Hz.

    Args:
      x: [N] samples.
      zeros: zero crossings of the windowed sinc on each side (at the lower rate).
      rolloff: cutoff as a fraction of the lower Nyquist rate.
      beta: Kaiser window shape (8.6: about 80 dB stop-band).

    Returns:
      [ceil(N * rate_out / rate_in)] float64 samples; output n is at time n / rate_out.
    """
    x = np.asarray(x, np.float64).reshape(-1)
    if rate_in == rate_out:
        return x.copy()
    g = math.gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    h, half = _kaiser_sinc(up, down, zeros, rolloff, beta)
    n_out = -(-len(x) * up // down)
    pad = half // up + 2
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad + 2)])
    y = np.zeros(n_out)
    for n0 in range(min(up, n_out)):
        q0, r0 = divmod(n0 * down, up)
        count = len(range(n0, n_out, up))
        # Taps h[r0 + j up] for j in [j_lo, j_hi] (|r0 + j up| <= half); output t of this
        # phase reads x[q0 + t down - j]. A strided view [count, taps] holds those samples
        # (columns from j_hi down to j_lo), so the phase is one matrix-vector product.
        j_lo, j_hi = -((half + r0) // up), (half - r0) // up
        taps = h[r0 + np.arange(j_hi, j_lo - 1, -1) * up + half]
        first = q0 - j_hi + pad
        # as_strided does not check bounds: the padding above keeps the view inside xp.
        assert first >= 0 and first + (count - 1) * down + len(taps) <= len(xp)
        view = np.lib.stride_tricks.as_strided(
            xp[first:], shape=(count, len(taps)), strides=(down * xp.strides[0], xp.strides[0]),
            writeable=False)
        y[n0::up] = view @ taps
    return y
