"""The thread-safe .npz reader: equal to numpy.load, strict on bad files, and crash-free under threads."""

import gc
import io
import json
import pickle
import time
import zipfile

import numpy as np
import pytest

from amr_jax.data.errors import FeatureError
from amr_jax.data.loader import load_split
from amr_jax.data.npz import NpzArchive, parse_npy_header


def _npz_with_member(path, name, array, version):
    """An archive whose member is written with an explicit .npy format version."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.npy", buffer.getvalue())


@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<f2", "<i4", "|u1", "|b1"])
@pytest.mark.parametrize("shape", [(3, 768), (0, 768), (), (2, 3, 4), (5,)])
def test_reads_what_numpy_writes(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 50).astype(dtype)
    for saver, name in ((np.savez, "plain.npz"), (np.savez_compressed, "zipped.npz")):
        saver(tmp_path / name, features=x, other=np.arange(3))
        with NpzArchive(tmp_path / name) as npz, np.load(tmp_path / name) as ref:
            assert sorted(npz.files) == sorted(ref.files)
            got = npz["features"]
            assert got.dtype == ref["features"].dtype and got.shape == ref["features"].shape
            np.testing.assert_array_equal(got, ref["features"])
            assert got.flags.writeable


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_header_versions_and_fortran_order(tmp_path, version):
    x = np.asfortranarray(np.arange(24, dtype=np.float32).reshape(4, 6))
    _npz_with_member(tmp_path / "f.npz", "features", x, version)
    with NpzArchive(tmp_path / "f.npz") as npz:
        np.testing.assert_array_equal(npz["features"], x)


def test_header_parser_matches_numpy_header_reader():
    for shape, fortran in (((300, 768), False), ((4, 6), True), ((), False), ((2, 0, 3), False)):
        x = np.zeros(shape, np.float32, order="F" if fortran else "C")
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, x, version=(1, 0))
        buffer.seek(0)
        np.lib.format.read_magic(buffer)
        reference = np.lib.format.read_array_header_1_0(buffer)  # (shape, fortran, dtype)
        buffer.seek(8)
        (length,) = np.frombuffer(buffer.read(2), "<u2")
        header = buffer.read(int(length)).decode("latin1")
        dtype, fortran_order, parsed_shape = parse_npy_header(header, source="t")
        assert (parsed_shape, fortran_order, dtype) == reference


def test_object_arrays_are_refused_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (pytest.fail, ("pickled code was executed",))

    x = np.empty(1, dtype=object)
    x[0] = Boom()
    np.savez(tmp_path / "obj.npz", features=x)
    with NpzArchive(tmp_path / "obj.npz") as npz, pytest.raises(FeatureError, match="pickle"):
        npz["features"]
    with zipfile.ZipFile(tmp_path / "raw_pickle.npz", "w") as z:
        z.writestr("features.npy", pickle.dumps(Boom()))
    with NpzArchive(tmp_path / "raw_pickle.npz") as npz, pytest.raises(FeatureError, match="magic"):
        npz["features"]


def test_bad_files_name_file_and_key(tmp_path):
    np.savez(tmp_path / "ok.npz", features=np.ones((4, 768), np.float32))
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureError, match="truncated.npz: not a readable .npz"):
        NpzArchive(tmp_path / "truncated.npz")
    with NpzArchive(tmp_path / "ok.npz") as npz, pytest.raises(FeatureError, match=r"ok.npz: missing key 'x'"):
        npz["x"]
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ones((4, 768), np.float32))
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        z.writestr("features.npy", buffer.getvalue()[:-100])
    with NpzArchive(tmp_path / "short.npz") as npz, pytest.raises(FeatureError, match=r"short.npz:features: truncated"):
        npz["features"]
    structured = np.zeros(3, dtype=[("a", "<f4"), ("b", "<i4")])
    np.savez(tmp_path / "structured.npz", features=structured)
    with NpzArchive(tmp_path / "structured.npz") as npz, pytest.raises(FeatureError, match="structured"):
        npz["features"]
    with pytest.raises(FeatureError, match="not found"):
        NpzArchive(tmp_path / "absent.npz")


@pytest.fixture()
def thread_switches_during_gc():
    """A gc callback that yields the GIL, as callbacks installed by runtimes such as JAX do.

    It makes a thread switch inside CPython's AST constructor likely, which is what
    crashes `numpy.load` under a thread pool (`SystemError: AST constructor recursion
    depth mismatch`); without it the crash is rare enough to slip through tests.
    """
    def yield_gil(phase, info):
        time.sleep(0)

    threshold = gc.get_threshold()
    gc.callbacks.append(yield_gil)
    gc.set_threshold(50)
    yield
    gc.callbacks.remove(yield_gil)
    gc.set_threshold(*threshold)


@pytest.fixture(scope="module")
def many_small_files(tmp_path_factory):
    """A split of 2,000 queries (2,000 text files) over 100 recordings, small shapes."""
    root = tmp_path_factory.mktemp("many")
    audio_dir, text_dir = root / "clap", root / "clap_text"
    audio_dir.mkdir(), text_dir.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for v in range(100):
        np.savez(audio_dir / f"v{v}.npz", features=rng.standard_normal((12, 768)).astype(np.float32))
        for k in range(20):
            qid = f"v{v}_{k}"
            np.savez(text_dir / f"qid{qid}.npz",
                     last_hidden_state=rng.standard_normal((4, 768)).astype(np.float32))
            lines.append({"qid": qid, "query": "q", "duration": 12, "vid": f"v{v}",
                          "relevant_windows": [[1, 4]]})
    ann = root / "ann.jsonl"
    ann.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return ann, audio_dir, text_dir


def test_parallel_loading_never_crashes(many_small_files, thread_switches_during_gc):
    ann, audio_dir, text_dir = many_small_files
    reference = load_split(ann, audio_dir, text_dir, num_workers=1, progress=False)
    for _ in range(6):  # 6 x 2,100 files with 8 threads; numpy.load fails on every round here
        split = load_split(ann, audio_dir, text_dir, num_workers=8, progress=False)
        assert split.text.keys() == reference.text.keys()
        for key in ("v0_0", "v57_13", "v99_19"):
            np.testing.assert_array_equal(split.text[key], reference.text[key])
        np.testing.assert_array_equal(split.audio["v42"], reference.audio["v42"])


def _stored_member_data_offset(path, name: str) -> int:
    """Byte offset of member `name`'s data (after its local header) in a stored archive."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    raw = path.read_bytes()
    name_length, extra_length = np.frombuffer(raw[info.header_offset + 26:
                                                  info.header_offset + 30], "<u2")
    return info.header_offset + 30 + int(name_length) + int(extra_length)


@pytest.mark.parametrize("order", ["C", "F"])
def test_stored_members_are_read_directly_and_crc_checked(tmp_path, order):
    # np.savez stores members uncompressed: the direct readinto path reads them.
    x = np.asarray(np.random.default_rng(0).standard_normal((7, 5)), np.float32, order=order)
    path = tmp_path / "a.npz"
    np.savez(path, features=x, other=np.arange(3))
    with NpzArchive(path) as npz:
        got = npz["features"]
        np.testing.assert_array_equal(got, x)
        assert got.flags.writeable and got.dtype == np.float32
        np.testing.assert_array_equal(npz["other"], np.arange(3))
    # One flipped bit in the array data (not the header) is caught by the CRC.
    raw = bytearray(path.read_bytes())
    raw[_stored_member_data_offset(path, "features.npy") + 128 + 9] ^= 0x04
    path.write_bytes(bytes(raw))
    with NpzArchive(path) as npz, pytest.raises(FeatureError, match=r"a\.npz:features.*CRC"):
        npz["features"]
    with NpzArchive(path) as npz:  # the other member is intact
        np.testing.assert_array_equal(npz["other"], np.arange(3))


def test_stored_member_with_trailing_bytes_reads_like_numpy(tmp_path):
    # A member holding bytes past the array (numpy ignores them) still passes its CRC check.
    x = np.arange(6, dtype=np.float32)
    member = io.BytesIO()
    np.save(member, x)
    path = tmp_path / "t.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("features.npy", member.getvalue() + b"extra")
    with NpzArchive(path) as npz:
        np.testing.assert_array_equal(npz["features"], x)
    np.testing.assert_array_equal(np.load(path)["features"], x)


def test_loading_threads_auto_is_capped_by_the_cores(monkeypatch):
    from amr_jax.data import loader

    monkeypatch.setattr(loader.os, "cpu_count", lambda: 2)
    assert loader.loading_threads(0) == 2
    assert loader.loading_threads(5) == 5  # an explicit count is kept (network file systems)
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 96)
    assert loader.loading_threads(0) == 8
