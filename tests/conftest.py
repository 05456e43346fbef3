"""Shared fixtures: the real annotation files and one small synthetic split per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Many tests (and the binaries they start as subprocesses, which inherit the environment)
# compile the same programs; XLA's persistent cache lets the second compilation load the
# first one's executable. Keyed by the program and the compiler flags, so it never changes
# a result. A user's own setting wins.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(REPO / ".pytest_cache" / "jax_compilation_cache"))
SHARED_DATA = Path(os.environ.get("AMR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder with the real CASTELLA / Clotho-Moment annotations and reference predictions."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real annotation data not found at {SHARED_DATA} (set AMR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_castella(tmp_path_factory, shared_data) -> Path:
    """A small SYNTHETIC split with real CASTELLA test structure (first 12 recordings)."""
    from amr_jax.data.synthetic import generate_split
    out = tmp_path_factory.mktemp("synthetic_castella")
    generate_split("castella", out, seed=0,
                   annotations=shared_data / "castella" / "castella_test_release.jsonl",
                   num_recordings=12, progress=False)
    return out


# Property tests draw the same examples on every run, so CI is reproducible.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("amr_jax", derandomize=True, deadline=None)
_hypothesis_settings.load_profile("amr_jax")
