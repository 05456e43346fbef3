"""Atomic file output: write to a temporary file in the same folder, then rename.

A crash or Ctrl-C while writing never leaves a truncated predictions file or
feature file behind; readers see either the old file or the complete new one.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from absl import logging


def current_umask() -> int:
    """The process umask, read without changing it (Linux), else by a set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # the only portable read; restored at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Writes `data` to `path` atomically; creates parent folders."""
    return atomic_write_chunks(path, (data,))


def atomic_write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Writes UTF-8 text lines atomically as they are produced (never all in memory at once)."""
    return atomic_write_chunks(path, (line.encode("utf-8") for line in lines))


def atomic_write_chunks(path: str | os.PathLike, chunks: Iterable[bytes]) -> Path:
    """Writes the byte chunks to `path` atomically; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; an output should get the mode `open()` would give it.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            for data in chunks:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes UTF-8 `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Saves arrays as an uncompressed `.npz` atomically (the DCASE feature format)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def quiet_checkpointing():
    """orbax logs every save and restore at INFO; keep progress logs readable."""
    level = logging.get_verbosity()
    logging.set_verbosity(min(level, logging.WARNING))  # absl: lower verbosity = quieter
    try:
        yield
    finally:
        logging.set_verbosity(level)
