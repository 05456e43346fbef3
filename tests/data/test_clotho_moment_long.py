"""Clotho-Moment-Long recipes: realized statistics vs the recipe, layout, determinism, errors."""

import json

import numpy as np
import pytest

from amr_jax.data import clotho_moment_long as cml
from amr_jax.data.records import read_annotations
from amr_jax.data.synthetic import draw_clotho_moment_long_annotations


def _pool(seed=0, n_fg=400, n_bg=100, bg_s=3000.0):
    """Clotho-like clips (mostly 15-30 s, some short) and long background recordings."""
    rng = np.random.default_rng(seed)
    fgs = [cml.Foreground(f"fg{i}", float(rng.uniform(15, 30) if rng.random() > 0.1
                                          else rng.uniform(2, 15)),
                          tuple(f"caption {i} v{j}" for j in range(5)), f"fg{i}.wav")
           for i in range(n_fg)]
    bgs = [cml.Background(f"walk{i}", bg_s, f"walk{i}.wav") for i in range(n_bg)]
    return fgs, bgs


@pytest.fixture(scope="module")
def generated():
    fgs, bgs = _pool()
    recipes, summary = cml.generate_recipes(fgs, bgs, seed=0, num_clips=960)
    return fgs, recipes, summary


def test_statistics_follow_the_recipe(generated):
    _, recipes, summary = generated
    stats = cml.recipe_statistics(recipes)
    assert stats["queries"] >= 2000 and stats["clips"] == 960
    # Recurrence: share of events with k >= 2 is 0.35, k uniform over {2, 3, 4}.
    assert abs(stats["recurrence_share"] - 0.35) <= 0.05
    counts = stats["windows_per_query"]["counts"]
    assert set(counts) == {"1", "2", "3", "4"}
    for k in "234":
        assert abs(counts[k] / stats["queries"] - 0.35 / 3) <= 0.04
    # Gaps: all silences (N + 1 per clip) average the recipe's 45 s; the gaps before single
    # events are the unconditioned Exp(45) draws: mean 45 and P(gap > 45) = e^-1.
    assert abs(stats["gap_s"]["mean"] - 45.0) <= 4.5
    assert abs(stats["gap_before_single_s"]["mean"] - 45.0) <= 4.5
    single = []
    for r in recipes:
        spans = sorted((o["start"], o["start"] + e["duration"], len(e["occurrences"]))
                       for e in r["events"] for o in e["occurrences"])
        end = 0.0
        for st, en, k in spans:
            if k == 1:
                single.append(st - end)
            end = en
    assert abs(np.mean(np.asarray(single) > 45.0) - np.exp(-1)) <= 0.04
    assert summary["redrawn_gap_sets"] > 0 and summary["unplaced_events_at_end"] <= 1
    text = cml.format_statistics(stats)
    assert "recurring share" in text and "gaps s" in text


def test_windows_inside_context_and_never_overlapping(generated):
    fgs, recipes, _ = generated
    by_id = {f.id: f for f in fgs}
    qids = set()
    for r in recipes:
        assert r["duration"] == 300 and -25 <= r["background"]["dB"] <= -15
        assert r["vid"] == f"{r['background']['id']}_{r['background']['start']:.1f}_" \
                           f"{r['background']['start'] + 300:.1f}"
        spans, fg_ids = [], set()
        for e in r["events"]:
            assert e["qid"] not in qids
            qids.add(e["qid"])
            assert e["fg_id"] not in fg_ids  # one clip is never two different events
            fg_ids.add(e["fg_id"])
            assert e["caption"] in by_id[e["fg_id"]].captions
            assert e["duration"] == by_id[e["fg_id"]].duration
            assert 1 <= len(e["occurrences"]) <= 4
            for o in e["occurrences"]:
                assert -5 <= o["dB"] <= 5
                spans.append((o["start"], o["start"] + e["duration"]))
        spans.sort()
        assert spans[0][0] >= 0 and spans[-1][1] <= 300 + 1e-9
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start > end  # occurrences of all events, the same event's too, are disjoint


def test_annotations_release_layout(generated, tmp_path):
    _, recipes, _ = generated
    rec_path, ann_path = cml.write_release(tmp_path, recipes[:40])
    records = read_annotations(ann_path)
    events = [e for r in recipes[:40] for e in r["events"]]
    assert len(records) == len(events)
    for record, event in zip(records, events):
        assert record.qid == event["qid"] and record.query == event["caption"]
        assert record.duration == 300
        w = record.raw_windows
        assert len(w) == len(event["occurrences"]) == len(record.extra["fg_dB"])
        assert np.all(np.diff(w[:, 0]) > 0) and w.min() >= 0 and w.max() <= 300
        np.testing.assert_allclose(w[:, 1] - w[:, 0], event["duration"], atol=0.11)
        assert np.all(np.round(w, 1) == w)
        for st, en in w:  # windows of one query never overlap
            assert ((w[:, 0] < en) & (w[:, 1] > st)).sum() == 1
    line = json.loads(ann_path.read_text().splitlines()[0])
    assert set(line) == {"qid", "query", "duration", "vid", "relevant_windows", "fg_dB"}
    assert cml.read_recipes(rec_path) == json.loads("[" + ",".join(
        rec_path.read_text().splitlines()) + "]")


def test_deterministic_per_seed():
    fgs, bgs = _pool(n_bg=3)
    a, _ = cml.generate_recipes(fgs, bgs, seed=5, num_clips=20)
    b, _ = cml.generate_recipes(fgs, bgs, seed=5, num_clips=20)
    c, _ = cml.generate_recipes(fgs, bgs, seed=6, num_clips=20)
    assert json.dumps(a) == json.dumps(b) and json.dumps(a) != json.dumps(c)
    everything, _ = cml.generate_recipes(fgs, bgs, seed=5)
    assert len(everything) == 3 * 10  # 3000 s recordings, 300 s segments, 300 s hop
    assert [r["vid"] for r in everything[:2]] == ["walk0_0.0_300.0", "walk0_300.0_600.0"]
    qids = [e["qid"] for r in a for e in r["events"]]
    assert qids == [f"{n:05d}" for n in range(len(qids))]


def test_synthetic_preset_follows_the_recipe():
    lines = draw_clotho_moment_long_annotations(np.random.default_rng(0), 900)
    assert len(lines) >= 1800
    windows = [np.asarray(line["relevant_windows"]) for line in lines]
    assert abs(np.mean([len(w) > 1 for w in windows]) - 0.35) <= 0.05
    by_vid = {}
    for line, w in zip(lines, windows):
        by_vid.setdefault(line["vid"], []).extend(w.tolist())
    silences = []
    for spans in by_vid.values():
        spans.sort()
        edges = [0.0] + [x for s in spans for x in s] + [300.0]
        silences += [edges[i + 1] - edges[i] for i in range(0, len(edges), 2)]
    assert min(silences) >= 0  # no overlap, everything inside [0, 300]
    assert abs(np.mean(silences) - 45.0) <= 4.5
    assert all(line["duration"] == 300 for line in lines)


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


@pytest.mark.parametrize("line, message", [
    ("{not json", "malformed JSON"),
    ({"duration": 20, "captions": ["a"]}, "missing field 'id'"),
    ({"id": "x", "duration": "20", "captions": ["a"]}, "field 'duration' has the wrong type"),
    ({"id": "x", "duration": -1, "captions": ["a"]}, "id=x: field 'duration' must be a positive"),
    ({"id": "x", "duration": 20, "captions": []}, "'captions' must be a non-empty list"),
    ({"id": "x", "duration": 20, "captions": ["a", ""]}, "'captions' must be a non-empty list"),
    ({"id": "x", "duration": 400, "captions": ["a"]}, "exceeds the 300 s context"),
    ({"id": "x", "duration": 20, "captions": ["a"], "path": 3}, "'path' must be a non-empty"),
    ({"id": "x", "duration": 20, "captions": ["a"], "offset": -1}, "'offset' must be a number"),
    ([1, 2], "expected a JSON object"),
])
def test_foreground_list_errors(tmp_path, line, message):
    path = _write(tmp_path / "fg.jsonl", [{"id": "ok", "duration": 10, "captions": ["c"]}, line])
    with pytest.raises(cml.InputListError, match=message) as info:
        cml.read_foreground_list(path, max_duration_s=300)
    assert f"{path}:2" in str(info.value)


def test_other_input_errors(tmp_path):
    fg_line = {"id": "a", "duration": 10, "captions": ["c"]}
    dup = _write(tmp_path / "dup.jsonl", [fg_line, fg_line])
    with pytest.raises(cml.InputListError,
                       match=r"dup.jsonl:2: duplicate id 'a' \(first at .*:1\)"):
        cml.read_foreground_list(dup, max_duration_s=300)
    with pytest.raises(cml.InputListError, match="no background recordings"):
        cml.read_background_list(_write(tmp_path / "empty.jsonl", []))
    with pytest.raises(cml.InputListError, match="background list file not found"):
        cml.read_background_list(tmp_path / "missing.jsonl")
    bgs = cml.read_background_list(_write(tmp_path / "bg.jsonl", [{"id": "w", "duration": 200}]))
    assert bgs[0].path == "w.wav"
    fgs = cml.read_foreground_list(_write(tmp_path / "fg.jsonl", [fg_line]), max_duration_s=300)
    with pytest.raises(cml.InputListError, match="no background recording is 300 s long"):
        cml.generate_recipes(fgs, bgs)
    long_bg = [cml.Background("w", 650.0, "w.wav")]
    with pytest.raises(cml.InputListError, match="num_clips=3 but the background list gives 2"):
        cml.generate_recipes(fgs, long_bg, num_clips=3)
    too_long = [cml.Foreground("b", 80.0, ("c",), "b.wav")]
    with pytest.raises(cml.InputListError, match="cannot occur 4 times"):
        cml.generate_recipes(too_long, long_bg)
    bad_recipe = _write(tmp_path / "recipes.jsonl", [{"vid": "v", "duration": 300,
                                                      "background": {"path": "w.wav"}}])
    with pytest.raises(cml.InputListError, match="vid=v background: missing field 'start'"):
        cml.read_recipes(bad_recipe)
