"""amr_jax.Predictor: equals experiments.localize on <= 300 frames, handles long audio, raw text."""

import numpy as np
import pytest
from test_text_routes import routes  # noqa: F401  (the tiny-GPT-2 fixture)

from amr_jax.data.loader import load_split
from amr_jax.eval.predictions import read_predictions
from amr_jax.localize import pipeline
from experiments.configs import localize as localize_configs


@pytest.fixture(scope="module")
def split(routes):  # noqa: F811
    d = routes["data"]
    return load_split(d / "annotations.jsonl", d / "clap", d / "clap_text", progress=False)


def test_equals_localize_on_a_split_recording(routes, split, tmp_path):  # noqa: F811
    from amr_jax import Predictor

    d = routes["data"]
    config = localize_configs.get_config("gmm_contrast,runlocal")
    output = tmp_path / "pred.jsonl"
    pipeline.run_localization(config, annotations=d / "annotations.jsonl", audio_feats=d / "clap",
                              text_feats=d / "clap_text", output=output, clap_dir=routes["clap"],
                              neutral_feats=d / "neutral_text", print_report=False)
    written = {str(p["qid"]): p["pred_relevant_windows"] for p in read_predictions(output)}
    predictor = Predictor(config=config, clap_dir=routes["clap"], neutral_feats=d / "neutral_text")
    vid = split.vids[1]
    records = [r for r in split.records if r.vid == vid]
    results = predictor.predict(d / "clap" / f"{vid}.npz", [split.text[r.key] for r in records],
                                duration=records[0].duration)
    for record, result in zip(records, results):
        got = [[round(v, 4) for v in w] for w in result.windows]
        assert got == written[record.key]
        assert result.curve.shape == (split.audio[vid].shape[0],)


def test_long_recording_gives_windows_beyond_300_s(routes, split):  # noqa: F811
    from amr_jax import Predictor

    d = routes["data"]
    long_audio = np.concatenate([split.audio[v] for v in split.vids])[:900]
    assert len(long_audio) == 900
    predictor = Predictor(config=localize_configs.get_config("gmm_contrast,runlocal"),
                          clap_dir=routes["clap"], neutral_feats=d / "neutral_text")
    queries = [split.text[r.key] for r in split.records[:6]]
    results = predictor.predict(long_audio, queries)
    ends = [w[1] for res in results for w in res.windows]
    assert max(ends) > 300 and max(ends) <= 900 and min(w[0] for res in results for w in res.windows) >= 0
    for res in results:
        assert 1 <= len(res.windows) <= 10 and res.curve.shape == (900,)
        scores = [w[2] for w in res.windows]
        assert scores == sorted(scores, reverse=True)
        for i, a in enumerate(res.windows):  # merged by NMS at IoU 0.7
            for b in res.windows[:i]:
                inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
                union = (a[1] - a[0]) + (b[1] - b[0]) - inter
                assert union == 0 or inter / union <= 0.7 + 1e-6


def test_free_text_query_in_five_lines(routes):  # noqa: F811
    d = routes["data"]
    # The README example, as written there (paths from the fixture).
    from amr_jax import Predictor
    predictor = Predictor(system="gmm_contrast", clap_dir=routes["clap"],
                          tokenizer_dir=routes["tokenizer"])
    result = predictor.predict(next((d / "clap").glob("*.npz")), "a dog barks")
    assert 1 <= len(result.windows) <= 10 and all(len(w) == 3 for w in result.windows)
