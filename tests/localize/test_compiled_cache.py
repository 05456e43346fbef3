"""Compiled kernels belong to the caller: localization runs share them only through a cache
they pass (`amr_jax.compiled.CompiledCache`). On a small SYNTHETIC split with real CASTELLA
structure."""

from __future__ import annotations

import numpy as np
import pytest

from amr_jax.compiled import CompiledCache
from amr_jax.localize import pipeline
from experiments.configs import localize as localize_configs


def test_cache_is_least_recently_used_and_builds_once():
    cache, built = CompiledCache(max_entries=2), []

    def build(name):
        built.append(name)
        return name.upper()

    assert cache.get_or_build("a", lambda: build("a")) == ("A", True)
    assert cache.get_or_build("a", lambda: build("a")) == ("A", False)
    cache.get_or_build("b", lambda: build("b"))
    cache.get_or_build("a", lambda: build("a"))     # a is now the most recent
    cache.get_or_build("c", lambda: build("c"))     # drops b, the least recent
    assert "a" in cache and "c" in cache and "b" not in cache and len(cache) == 2
    assert built == ["a", "b", "c"]
    with pytest.raises(ValueError, match="max_entries"):
        CompiledCache(max_entries=-1)


@pytest.fixture(scope="module")
def embedded_split(synthetic_castella, tmp_path_factory):
    from amr_jax.clap import convert

    clap_dir = tmp_path_factory.mktemp("clap_converted")
    convert.convert_and_save(synthetic_castella / "msclap_synthetic.npz", clap_dir)
    config = localize_configs.get_config("jointproj_s1")
    split = pipeline.load_split(synthetic_castella / "annotations.jsonl",
                                synthetic_castella / "clap", synthetic_castella / "clap_text")
    arrays = pipeline.split_arrays(split, max_frames=config.max_frames,
                                   frame_bucket=config.frame_bucket)
    return arrays, pipeline.embed_split(config, arrays, clap_dir=clap_dir, neutral_feats=None)


def _s1(**fwhm):
    config = localize_configs.get_config("jointproj_s1")
    with config.unlocked():
        for key, value in fwhm.items():
            config.fwhm[key] = value
    return config


def test_two_configs_in_one_process_share_no_compiled_state(embedded_split):
    arrays, embedded = embedded_split
    first = pipeline.localize_split(_s1(), arrays, embedded)
    second = pipeline.localize_split(_s1(smooth_k=9), arrays, embedded)
    # Without a shared cache the second run compiled its own kernels ...
    assert first.compile_s > 0 and second.compile_s > 0
    # ... and gives what it gives alone (the first config's program would not).
    alone = pipeline.localize_split(_s1(smooth_k=9), arrays, embedded, cache=CompiledCache())
    np.testing.assert_array_equal(second.windows, alone.windows)
    assert not np.array_equal(first.windows, second.windows)


def test_a_shared_cache_compiles_each_kernel_once_and_keys_every_setting(embedded_split):
    arrays, embedded = embedded_split
    cache = CompiledCache()
    base = pipeline.localize_split(_s1(), arrays, embedded, cache=cache)
    again = pipeline.localize_split(_s1(), arrays, embedded, cache=cache)
    assert base.compile_s > 0 and again.compile_s == 0.0 and len(cache) == 2
    np.testing.assert_array_equal(base.windows, again.windows)
    # Another FWHM setting reuses the relevance kernel, compiles its own localizer, and
    # gives the result it gives alone.
    other = pipeline.localize_split(_s1(smooth_k=9), arrays, embedded, cache=cache)
    assert len(cache) == 3 and other.compile_s > 0
    alone = pipeline.localize_split(_s1(smooth_k=9), arrays, embedded)
    np.testing.assert_array_equal(other.windows, alone.windows)
