"""Frame timing per dataset: the convention check, the config presets, and the synthetic world."""

import numpy as np
import pytest

from amr_jax.data import timing
from amr_jax.data.records import parse_record
from amr_jax.data.synthetic import SyntheticWorld
from amr_jax.eval import diagnostics
from experiments.configs import localize as localize_configs


def _records(durations):
    return [parse_record({"qid": i, "query": "a dog barks", "duration": d, "vid": f"v{i}",
                          "relevant_windows": [[1, 2]]}, where="test")
            for i, d in enumerate(durations)]


def test_convention_of_one_recording():
    assert timing.frame_convention(60, 60.0) == "whole"
    assert timing.frame_convention(61, 60) == "centre"
    assert timing.frame_convention(183, 183.7) == "whole"
    assert timing.frame_convention(300, 312.0) is None  # CASTELLA's 300-frame cap: no evidence
    assert timing.frame_convention(58, 60) is None


def test_check_warns_on_the_other_convention_and_names_vids():
    records = _records([60, 60, 60, 45.5])
    centre = {"v0": 61, "v1": 61, "v2": 61, "v3": 45}
    whole = {"v0": 60, "v1": 60, "v2": 61, "v3": 45}
    message = timing.check_frame_convention(records, centre, frame_offset_s=0.0)
    assert "3 of 4 recordings" in message and "v0, v1, v2" in message
    assert "T = duration + 1" in message and "frame_offset_s=-0.5" in message
    assert timing.check_frame_convention(records, centre, frame_offset_s=-0.5) is None
    message = timing.check_frame_convention(records, whole, frame_offset_s=-0.5)
    assert "3 of 4 recordings" in message and "v0, v1, v3" in message and "CASTELLA" in message
    assert timing.check_frame_convention(records, whole, frame_offset_s=0.0) is None
    # A minority of the other shape (half or fewer) is not warned about.
    assert timing.check_frame_convention(records, {"v0": 61, "v1": 61, "v2": 60, "v3": 45},
                                         frame_offset_s=0.0) is None
    assert timing.check_frame_convention(records, centre, frame_offset_s=-0.25) is None


def test_config_presets_and_all_system_configs():
    assert localize_configs.get_config("gmm_contrast").frame_offset_s == 0.0
    assert localize_configs.get_config("gmm_contrast,castella").frame_offset_s == 0.0
    clotho = localize_configs.get_config("jointproj_s1,clotho,runlocal")
    assert clotho.frame_offset_s == -0.5 and clotho.gmm.n_init == 2
    assert localize_configs.get_config("gmm_simple,clotho_moment").frame_offset_s == -0.5
    with pytest.raises(ValueError, match="two datasets"):
        localize_configs.get_config("gmm_simple,clotho,castella")
    with pytest.raises(ValueError, match="unknown config options"):
        localize_configs.get_config("gmm_simple,audiocaps")
    base = localize_configs.get_config("jointproj_s2,clotho,runlocal")
    configs = localize_configs.all_system_configs(base)
    assert [c.system for c in configs] == list(localize_configs.SYSTEMS)
    assert all(c.frame_offset_s == -0.5 and c.gmm.n_init == 2 for c in configs)
    by_system = {c.system: c for c in configs}
    assert by_system["jointproj_s1"].fwhm.smooth_k == 5  # each system keeps its own FWHM block
    assert by_system["jointproj_s2"].fwhm.smooth_k == 7
    assert by_system["gmm_contrast"].relevance == "contrast"
    assert all(c.frame_offset_s == 0.0 for c in localize_configs.all_system_configs())


def test_frame_labels_follow_the_offset():
    windows = np.array([[[10.2, 12.0]]], np.float32)
    valid = np.ones((1, 1), bool)
    castella = diagnostics.frame_labels(windows, valid, 20, frame_offset_s=0.0)
    clotho = diagnostics.frame_labels(windows, valid, 20, frame_offset_s=-0.5)
    assert np.flatnonzero(castella[0]).tolist() == [10, 11]   # centres 10.5, 11.5
    assert np.flatnonzero(clotho[0]).tolist() == [11, 12]     # centres 11, 12


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(0)


@pytest.mark.parametrize("offset, frames", [(0.0, [10, 11]), (-0.5, [10, 11, 12])])
def test_synthetic_events_cover_the_frames_of_their_convention(world, offset, frames):
    """An event [10.2, 12.0] s reaches frames [10, 11) and [11, 12) whole-second, and
    [9.5, 10.5), [10.5, 11.5), [11.5, 12.5) centre-cut (overlaps 0.3, 1, 0.5)."""
    vector = world.phrase_vector("a dog barks")
    with_event = world.audio_features(20, [(vector, np.array([[10.2, 12.0]]))],
                                      np.random.default_rng(1), frame_offset_s=offset)
    # Same draws, empty windows: the difference is exactly the event's contribution.
    without = world.audio_features(20, [(vector, np.zeros((0, 2)))], np.random.default_rng(1),
                                   frame_offset_s=offset)
    strength = (with_event.astype(np.float64) - without) @ vector
    assert np.flatnonzero(np.abs(strength) > 1e-3).tolist() == frames
    if offset:
        u = strength[[10, 11, 12]]
        assert u[0] < u[1] and u[2] < u[1]  # partial overlaps are weaker (0.3 and 0.5 of 1)

