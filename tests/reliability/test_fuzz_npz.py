"""Fuzzed feature files: the right [T, 768] float32 array or a FeatureError naming the file.

Cases: wrong keys, dtypes (int, bool, complex, str, void, datetime, object), ranks, widths,
0/1/2+ frames, NaN/inf, text masks of odd shapes and dtypes, truncated or bit-flipped archives,
lying .npy headers (huge or malformed shapes, unknown dtypes), pickles inside. The expected
outcome of an intact file comes from an oracle restating WORKSPACE 'Data layout'; a pickled
payload that runs would create a marker file, which must never appear.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from amr_jax.data.errors import FeatureError
from amr_jax.data.features import load_audio_features, load_text_features

FUZZ = settings(max_examples=1200, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
DTYPES = ["<f4", ">f8", "<f2", "<i4", "|b1", "<c8", "<U3", "|V4", "<M8[s]", "|O"]


class Payload:
    """Unpickling this calls open(marker, 'w'): the marker file proves code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _array(draw, marker):
    # Half the arrays are valid; the others change one property (or several, rarely).
    change = draw(st.sampled_from(["none"] * 5 + ["dtype", "rank", "frames", "width", "nan", "all"]))
    pick = lambda name, good, bad: draw(st.sampled_from(bad)) if change in (name, "all") else good
    dtype = pick("dtype", draw(st.sampled_from(["<f4", ">f8", "<f2"])), DTYPES)
    rank = pick("rank", 2, [0, 1, 3])
    frames = pick("frames", draw(st.sampled_from([2, 3, 5])), [0, 1, 2])
    width = pick("width", 768, [767, 1, 0, 769])
    shape = {0: (), 1: (width,), 2: (frames, width),
             3: (draw(st.sampled_from([1, 1, 2])), frames, width)}[rank]
    if dtype == "|O":
        x = np.empty(shape, dtype=object)
        x.ravel()[:] = [Payload(marker)] * x.size if x.size else []
        return x
    x = (np.random.default_rng(draw(st.integers(0, 3))).standard_normal(shape) * 3)
    if dtype in ("<U3", "|V4", "<M8[s]"):
        return np.zeros(shape, dtype=dtype)
    x = x.astype(dtype)
    if x.size and np.issubdtype(x.dtype, np.floating) and change in ("nan", "all"):
        x.ravel()[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


def _npy_with_header(header: str, data: bytes) -> bytes:
    text = header.encode("utf-8", errors="surrogatepass")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text + data


@st.composite
def npz_cases(draw, marker):
    """(file bytes, kind, intact arrays or None when the bytes were tampered with)."""
    kind = draw(st.sampled_from(["audio", "text"]))
    main_key = "features" if kind == "audio" else "last_hidden_state"
    key = draw(st.sampled_from([main_key] * 10 + ["feature", "x", "arr_0"]))
    arrays = {key: _array(draw, marker)}
    if kind == "text" and draw(st.booleans()):
        rows = arrays[key].shape[-2] if arrays[key].ndim >= 2 else 1
        size = draw(st.sampled_from([rows, rows, rows + 1, max(rows - 1, 0)]))
        mask_dtype = draw(st.sampled_from(["|b1", "<i8", "<f4", "<U1"]))
        arrays[draw(st.sampled_from(["attention_mask", "mask", "text_mask"]))] = (
            np.asarray(draw(st.lists(st.integers(0, 1), min_size=size, max_size=size)))
            .astype(mask_dtype).reshape(draw(st.sampled_from([(size,), (1, size)]))))
    buffer = io.BytesIO()
    draw(st.sampled_from([np.savez, np.savez_compressed]))(buffer, **arrays)
    data = buffer.getvalue()
    tamper = draw(st.sampled_from(["none"] * 12 + ["truncate", "flip", "header", "pickle_member",
                                                  "pickle_file", "empty", "bytes"]))
    event(f"{kind} {tamper}")
    if tamper == "none":
        return data, kind, arrays
    if tamper == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif tamper == "flip":
        data = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        data = bytes(data)
    elif tamper in ("header", "pickle_member"):
        if tamper == "header":
            descr = draw(st.sampled_from(["'<f4'", "'|O'", "'<f4,<f4'", "'x9'", "[('a', '<f4')]",
                                          "'<U2'", "'>f8'", "''"]) | st.text(max_size=6).map(repr))
            shape = draw(st.sampled_from(["(3, 768)", "(999999999999, 768)", "(2**40, 768)",
                                          "(-1, 768)", "(²,)", "(1e3, 768)", "()", "(3, 768"])
                         | st.text(max_size=8))
            member = _npy_with_header(
                f"{{'descr': {descr}, 'fortran_order': {draw(st.sampled_from(['False', 'True', 'x']))},"
                f" 'shape': {shape}, }}", b"\x00" * draw(st.sampled_from([0, 12, 768 * 4 * 3])))
        else:
            member = pickle.dumps(Payload(marker))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            z.writestr(f"{main_key}.npy", member)
        data = out.getvalue()
    elif tamper == "pickle_file":
        data = pickle.dumps({main_key: Payload(marker)})
    elif tamper == "empty":
        data = b""
    else:
        data = draw(st.binary(max_size=200))
    return data, kind, None


def expected(kind: str, arrays: dict):
    """The oracle: the array the reader must return, or None when it must refuse the file."""
    key = "features" if kind == "audio" else "last_hidden_state"
    if key not in arrays:
        return None
    x = arrays[key]
    if x.dtype.hasobject:
        return None
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    mask_key = next((k for k in ("attention_mask", "mask", "text_mask") if k in arrays), None)
    if kind == "text" and mask_key is not None:
        mask = arrays[mask_key].reshape(-1)
        if mask.dtype.kind not in "biuf" or x.ndim != 2 or len(mask) != x.shape[0]:
            return None
        x = x[mask.astype(bool)]
    if x.ndim != 2 or x.shape[1] != 768 or x.dtype.kind != "f" or not np.isfinite(x).all():
        return None
    if x.shape[0] < (2 if kind == "audio" else 1):
        return None
    return x.astype(np.float32)


@FUZZ
@given(st.data())
def test_fuzzed_feature_files(tmp_path, data):
    marker = tmp_path / "pickle_ran"
    raw, kind, arrays = data.draw(npz_cases(marker))
    path = tmp_path / "x.npz"
    path.write_bytes(raw)
    load = load_audio_features if kind == "audio" else load_text_features
    want = expected(kind, arrays) if arrays is not None else "any"
    try:
        got = load(path)
    except FeatureError as e:
        assert str(e).startswith(str(path)), str(e)
        assert want is None or want == "any", f"refused a valid file: {e}"
        event("refused")
    else:
        assert want is not None, "accepted a file the rules refuse"
        assert got.dtype == np.float32 and got.ndim == 2 and got.shape[1] == 768
        assert np.isfinite(got).all() and got.shape[0] >= (2 if kind == "audio" else 1)
        if not isinstance(want, str):
            np.testing.assert_array_equal(got, want)
        event("accepted")
    assert not marker.exists(), "a pickle inside the file was executed"


def test_pickled_object_array_never_runs(tmp_path):
    marker = tmp_path / "ran"
    x = np.empty((3, 768), dtype=object)
    x[:] = Payload(marker)
    np.savez(tmp_path / "o.npz", features=x)
    try:
        load_audio_features(tmp_path / "o.npz")
    except FeatureError as e:
        assert "pickle" in str(e) and str(tmp_path / "o.npz") in str(e)
    else:
        raise AssertionError("object array accepted")
    assert not marker.exists()
    # The payload is live: numpy with pickles allowed would run it.
    np.load(tmp_path / "o.npz", allow_pickle=True)["features"]
    assert marker.exists()


def test_lying_header_does_not_allocate(tmp_path):
    out = tmp_path / "huge.npz"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("features.npy", _npy_with_header(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999, 768), }", b""))
    try:
        load_audio_features(out)
    except FeatureError as e:
        assert str(e).startswith(f"{out}:features") and "bytes" in str(e), str(e)
    else:
        raise AssertionError("accepted")
