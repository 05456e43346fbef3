"""Thread-safe `.npz` reading with a header parser of our own.

`numpy.load` parses every `.npy` header with `ast.literal_eval`, and CPython
3.11's AST constructor is not safe to run from several threads at once: parallel
loaders die at random with `SystemError: AST constructor recursion depth
mismatch`. This reader parses the small, fixed header grammar that numpy writes
itself (a dict with `descr`, `fortran_order` and `shape`) with regular
expressions, so any number of threads may read archives concurrently.

It only accepts plain numeric dtypes: object arrays (which would need pickle)
and structured dtypes raise `FeatureError`, so loading never executes pickled
code. Every error names the file and, where it applies, the key.

Uncompressed members (what `numpy.savez` writes, and the released features) are read straight
from the file into the array's buffer with one `readinto` and checked against the member's
CRC-32: no intermediate bytes objects, and the copy runs without the GIL, so loader threads
overlap. Compressed or encrypted members go through `zipfile`.
"""

from __future__ import annotations

import lzma
import math
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from amr_jax.data.errors import FeatureError

NPY_MAGIC = b"\x93NUMPY"
# Header-length field size by format major version (1: uint16, 2 and 3: uint32).
_HEADER_LENGTH_FORMAT = {1: "<H", 2: "<I", 3: "<I"}
_DESCR_RE = re.compile(r"""['"]descr['"]\s*:\s*['"]([^'"]+)['"]""")
_FORTRAN_RE = re.compile(r"""['"]fortran_order['"]\s*:\s*(True|False)""")
_SHAPE_RE = re.compile(r"""['"]shape['"]\s*:\s*\(([^()]*)\)""")
_KEY_RE = re.compile(r"""['"](\w+)['"]\s*:""")
_EXPECTED_KEYS = {"descr", "fortran_order", "shape"}
# Local file header: signature, then name and extra-field lengths at bytes 26-29.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
_LOCAL_SIGNATURE = b"PK\x03\x04"


def parse_npy_header(header: str, *, source: str) -> tuple[np.dtype, bool, tuple[int, ...]]:
    """Parses a `.npy` header dict literal without `ast`.

    Args:
      header: the header text, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
      source: `file:key` used in error messages.

    Returns:
      (dtype, fortran_order, shape).

    Raises:
      FeatureError: malformed header, structured or object dtype.
    """
    text = header.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise FeatureError(f"{source}: malformed .npy header {text[:80]!r}")
    keys = set(_KEY_RE.findall(text))
    if keys != _EXPECTED_KEYS:
        raise FeatureError(f"{source}: .npy header has keys {sorted(keys)}, expected "
                           f"{sorted(_EXPECTED_KEYS)}")
    descr, fortran, shape = _DESCR_RE.search(text), _FORTRAN_RE.search(text), _SHAPE_RE.search(text)
    if descr is None:
        raise FeatureError(f"{source}: unsupported dtype in .npy header (structured arrays are "
                           "not feature matrices)")
    if fortran is None or shape is None:
        raise FeatureError(f"{source}: malformed .npy header {text[:80]!r}")
    try:
        dtype = np.dtype(descr.group(1))
    except (TypeError, ValueError, SyntaxError):  # numpy's dtype-string parser raises all three
        raise FeatureError(f"{source}: unknown dtype {descr.group(1)!r}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise FeatureError(f"{source}: dtype {dtype} needs pickle; refusing to load it")
    dims = [d.strip() for d in shape.group(1).split(",") if d.strip()]
    if not all(d.isascii() and d.isdigit() for d in dims):  # int() also takes '٣'; '²' crashes it
        raise FeatureError(f"{source}: malformed shape ({shape.group(1)}) in .npy header")
    return dtype, fortran.group(1) == "True", tuple(int(d) for d in dims)


def _read_exact(stream, size: int, *, source: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FeatureError(f"{source}: truncated .npy data ({len(data)} of {size} bytes)")
    return data


def read_npy_stream(stream, *, source: str, size: int | None = None) -> np.ndarray:
    """Reads one `.npy` array from a binary stream (a zip member or a file).

    Args:
      stream: binary stream positioned at the magic bytes.
      source: `file:key` used in error messages.
      size: the stream's total length when known (a zip member's uncompressed
        size): a header that claims more data than that is refused before any
        allocation, so a corrupt shape cannot ask for petabytes.
    """
    dtype, fortran_order, shape, header_bytes = read_npy_header(stream, source=source)
    claimed = math.prod(shape) * dtype.itemsize
    available = None if size is None else size - header_bytes
    if available is not None and claimed > available:
        raise FeatureError(f"{source}: truncated .npy data (header shape {shape} needs {claimed} "
                           f"bytes, the member holds {max(available, 0)})")
    try:
        array = np.empty(shape[::-1] if fortran_order else shape, dtype=dtype)
    except (MemoryError, ValueError) as e:
        raise FeatureError(f"{source}: .npy header shape {shape} cannot be allocated ({e})") from None
    if array.nbytes:
        # readinto fills the array's own buffer: one copy, and the result is writable.
        view = memoryview(array).cast("B")
        filled = 0
        while filled < array.nbytes:
            n = stream.readinto(view[filled:])
            if not n:
                raise FeatureError(
                    f"{source}: truncated .npy data ({filled} of {array.nbytes} bytes)")
            filled += n
    return array.T if fortran_order else array


def read_npy_header(stream, *, source: str) -> tuple[np.dtype, bool, tuple[int, ...], int]:
    """Reads the magic bytes and header of a `.npy` stream: (dtype, fortran, shape, bytes read)."""
    magic = _read_exact(stream, len(NPY_MAGIC) + 2, source=source)
    if magic[:len(NPY_MAGIC)] != NPY_MAGIC:
        raise FeatureError(f"{source}: not a .npy array (bad magic bytes)")
    major = magic[len(NPY_MAGIC)]
    if major not in _HEADER_LENGTH_FORMAT:
        raise FeatureError(f"{source}: unsupported .npy format version {major}")
    length_format = _HEADER_LENGTH_FORMAT[major]
    (header_length,) = struct.unpack(
        length_format, _read_exact(stream, struct.calcsize(length_format), source=source))
    encoding = "utf-8" if major == 3 else "latin1"
    header = _read_exact(stream, header_length, source=source).decode(encoding, errors="replace")
    dtype, fortran_order, shape = parse_npy_header(header, source=source)
    return dtype, fortran_order, shape, len(magic) + struct.calcsize(length_format) + header_length


class NpzArchive:
    """A read-only `.npz` archive, safe to use from many threads (one archive per thread).

    Mirrors the part of `numpy.lib.npyio.NpzFile` the readers use: `files` and
    `archive[key]`. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureError(f"{self.path}: feature file not found")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as e:
            # NotImplementedError: a corrupt "version needed" field names an unknown zip version.
            raise FeatureError(f"{self.path}: not a readable .npz file ({e})") from None
        names = [n for n in self._zip.namelist() if n.endswith(".npy")]
        self._members = {n[:-len(".npy")]: n for n in names}
        self.files = list(self._members)

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._members:
            raise FeatureError(f"{self.path}: missing key '{key}' (keys: {self.files})")
        source = f"{self.path}:{key}"
        try:
            info = self._zip.getinfo(self._members[key])
            if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                return self._read_stored(info, source)
            with self._zip.open(info) as member:
                return read_npy_stream(member, source=source, size=info.file_size)
        except FeatureError:
            raise
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error, lzma.LZMAError,
                NotImplementedError, RuntimeError) as e:
            # RuntimeError: an encrypted member; LZMAError/OSError: bad lzma/bz2 streams.
            raise FeatureError(f"{source}: corrupt archive member ({e})") from None

    def _read_stored(self, info: zipfile.ZipInfo, source: str) -> np.ndarray:
        """An uncompressed member read with one `readinto` into the array, CRC-32 checked."""
        with open(self.path, "rb", buffering=0) as raw:
            raw.seek(info.header_offset)
            local = raw.read(_LOCAL_HEADER.size)
            if len(local) != _LOCAL_HEADER.size:
                raise FeatureError(f"{source}: corrupt archive member (truncated local header)")
            signature, name_length, extra_length = _LOCAL_HEADER.unpack(local)
            if signature != _LOCAL_SIGNATURE:
                raise FeatureError(f"{source}: corrupt archive member (bad local header)")
            start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
            raw.seek(start)
            array = read_npy_stream(_Bounded(raw, info.file_size), source=source,
                                    size=info.file_size)
            end = raw.tell()
            trailing = raw.read(start + info.file_size - end)  # bytes numpy ignores, if any
            raw.seek(start)
            crc = zlib.crc32(raw.read(end - start - array.nbytes))  # the .npy header
        data = array.T if array.ndim > 1 and not array.flags.c_contiguous else array
        if data.size:
            crc = zlib.crc32(np.ascontiguousarray(data).reshape(-1).view(np.uint8), crc)
        if zlib.crc32(trailing, crc) != info.CRC:
            raise FeatureError(f"{source}: corrupt archive member (bad CRC-32)")
        return array

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of member `key` from its header alone (no data is read)."""
        if key not in self._members:
            raise FeatureError(f"{self.path}: missing key '{key}' (keys: {self.files})")
        source = f"{self.path}:{key}"
        try:
            with self._zip.open(self._members[key]) as member:
                return read_npy_header(member, source=source)[2]
        except FeatureError:
            raise
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error, lzma.LZMAError,
                NotImplementedError, RuntimeError) as e:
            raise FeatureError(f"{source}: corrupt archive member ({e})") from None

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bounded:
    """A raw file read no further than `size` bytes past its current position."""

    def __init__(self, raw, size: int):
        self._raw, self._left = raw, size

    def read(self, n: int) -> bytes:
        data = self._raw.read(min(n, self._left))
        self._left -= len(data)
        return data

    def readinto(self, view) -> int:
        n = self._raw.readinto(view[: self._left])
        self._left -= n or 0
        return n or 0
