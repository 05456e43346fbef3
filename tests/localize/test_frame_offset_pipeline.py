"""The frame offset through the whole pipeline, on a small SYNTHETIC split with real
Clotho-Moment structure (centre-cut features, T = duration + 1)."""

import numpy as np
import pytest

from amr_jax.localize import pipeline, reference
from experiments.configs import localize as localize_configs


@pytest.fixture(scope="module")
def clotho_dir(tmp_path_factory, shared_data):
    from amr_jax.clap import convert
    from amr_jax.data.synthetic import generate_split

    out = tmp_path_factory.mktemp("synthetic_clotho")
    generate_split("clotho_moment", out, seed=0,
                   annotations=shared_data / "clotho_moment" / "clotho_moment_test_release.jsonl",
                   num_recordings=6, progress=False)
    convert.convert_and_save(out / "msclap_synthetic.npz", out / "clap_converted")
    return out


def test_offset_reaches_the_windows_and_the_compiled_kernels(clotho_dir, tmp_path):
    d = clotho_dir
    paths = {"annotations": d / "annotations.jsonl", "audio_feats": d / "clap",
             "text_feats": d / "clap_text", "clap_dir": d / "clap_converted"}
    split = pipeline.load_split(*[paths[k] for k in ("annotations", "audio_feats", "text_feats")],
                                progress=False)
    warning = pipeline.check_timing(split, 0.0)
    assert warning and split.vids[0] in warning and "clotho" in warning
    assert pipeline.check_timing(split, -0.5) is None

    # Both offsets in one process: the second must not reuse the first one's executable.
    runs = {}
    for arg in ("jointproj_s1,runlocal", "jointproj_s1,clotho,runlocal"):
        config = localize_configs.get_config(arg)
        runs[config.frame_offset_s] = pipeline.run_localization(
            config, output=tmp_path / f"{arg}.jsonl", split=split, print_report=False, **paths)
    for offset, out in runs.items():
        res = out["result"]
        assert res.frame_offset_s == offset
        for i, r in enumerate(split.records):
            ref, _ = reference.fwhm_reference(res.curves[i, : res.mask[i].sum()], r.duration,
                                              num_windows=10, frame_offset_s=offset,
                                              **localize_configs.get_config("jointproj_s1").fwhm)
            np.testing.assert_allclose(res.windows[i][res.valid[i]], np.asarray(ref), atol=1e-4,
                                       err_msg=f"offset {offset}, qid {r.qid}")
    assert not np.array_equal(runs[0.0]["result"].windows, runs[-0.5]["result"].windows)
