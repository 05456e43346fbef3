"""Whole-split scoring on several processes: shards, bit-identical rows, one writer.

A tiny SYNTHETIC split (7 recordings, 16 queries; shards of 4 and 3 recordings with different
lengths, query counts, slots and text lengths). In one process: a shard padded to the whole
split's shapes localizes its queries bit for bit. Two local CPU processes (gloo collectives) run the binaries
(`experiments.localize --all_systems`, `experiments.predict_detr` on a random-weights QD-DETR
workdir): the predictions files are byte-identical to a one-process run, and only process 0
writes (process 1 is given its own output path, which must stay absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import multihost_lib as mh
from amr_jax import distributed
from amr_jax.data.loader import load_split
from amr_jax.data.records import read_annotations
from amr_jax.errors import UsageError
from amr_jax.eval.shards import RecordingShard
from amr_jax.localize import pipeline
from experiments.configs import localize as localize_configs

LOCALIZE = ["-m", "experiments.localize"]
PREDICT = ["-m", "experiments.predict_detr"]


# Recording i has DURATIONS[i] seconds and QUERIES[i] queries: shard 1 of 2 (recordings 1, 3,
# 5) is shorter, has fewer queries and fewer per recording than shard 0, so a process padding
# to its own shapes (frames, slots, localizer batch, text tokens) would differ.
DURATIONS = (240, 60, 180, 75, 150, 90, 120)
QUERIES = (3, 1, 4, 2, 2, 1, 3)
PHRASES = ("a dog barks", "a car horn blares loudly in the busy street", "water runs",
           "a man speaks", "birds sing in the tall trees at dawn", "a door slams", "rain falls",
           "a phone rings twice", "people applaud", "an engine idles", "a baby cries",
           "wind blows", "a bell rings", "footsteps on gravel", "a cat meows",
           "thunder rumbles far away")


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    from amr_jax.clap import convert
    from amr_jax.data.synthetic import generate_split

    root = tmp_path_factory.mktemp("mh_split")
    lines, phrases = [], iter(PHRASES)
    for i, (duration, count) in enumerate(zip(DURATIONS, QUERIES)):
        for j in range(count):
            start = 10 + 15 * j
            lines.append({"qid": f"r{i}_{j}", "query": next(phrases), "duration": duration,
                          "vid": f"rec{i}", "relevant_windows": [[start, start + 8 + j]]})
    ann = root / "source.jsonl"
    ann.write_text("".join(json.dumps(line) + "\n" for line in lines))
    generate_split("castella", root / "split", seed=5, annotations=ann, progress=False)
    convert.convert_and_save(root / "split" / "msclap_synthetic.npz",
                             root / "split" / "clap_converted")
    return root / "split"


def _data(d) -> list[str]:
    return [f"--annotations={d / 'annotations.jsonl'}", f"--audio_feats={d / 'clap'}",
            f"--text_feats={d / 'clap_text'}"]


def _load(d, select=None):
    return load_split(d / "annotations.jsonl", d / "clap", d / "clap_text", num_workers=1,
                      progress=False, select=select)


def test_recording_shards_partition_the_split_in_file_order(split_dir):
    records = read_annotations(split_dir / "annotations.jsonl")
    vids = list(dict.fromkeys(r.vid for r in records))
    shards = [RecordingShard(p, 2) for p in (0, 1)]
    kept = [s(records) for s in shards]
    for p, (shard, mine) in enumerate(zip(shards, kept)):
        assert {r.vid for r in mine} == set(vids[p::2])  # recordings p, p + 2, ...
        assert [records[i] for i in shard.positions(p)] == mine  # file order
    assert sorted(np.concatenate([shards[0].positions(p) for p in (0, 1)]).tolist()) == list(
        range(len(records)))
    assert len({len(k) for k in kept}) == 2  # uneven shards: the gather must handle them
    with pytest.raises(UsageError, match="--num_processes=8"):
        RecordingShard(0, 8)(records)
    # One process: the whole split, no collective.
    assert distributed.all_rows((np.ones((3, 2)),))[0][0].shape == (3, 2)


@pytest.mark.parametrize("system", ["backbone_cosine", "gmm_contrast", "jointproj_dp"])
def test_a_shard_padded_to_the_split_shapes_localizes_bit_for_bit(split_dir, system):
    config = localize_configs.get_config(f"{system},runlocal")
    paths = {"clap_dir": split_dir / "clap_converted", "neutral_feats": split_dir / "neutral_text"}
    whole = _load(split_dir)
    arrays = pipeline.split_arrays(whole, max_frames=config.max_frames,
                                   frame_bucket=config.frame_bucket)
    want = pipeline.localize_split(config, arrays, pipeline.embed_split(config, arrays, **paths))
    shards = {p: RecordingShard(p, 2) for p in (0, 1)}
    parts = {p: _load(split_dir, select=shard) for p, shard in shards.items()}
    # `shard_arrays` pads a shard to the largest shapes over the processes: the whole split's.
    assert tuple(np.max([pipeline.split_shapes(s) for s in parts.values()], axis=0)) == \
        pipeline.split_shapes(whole)
    for p, part in parts.items():
        # What `shard_arrays` / `run_localization` give a process of a 2-process run.
        own = pipeline.split_arrays(part, max_frames=config.max_frames,
                                    frame_bucket=config.frame_bucket,
                                    longest=arrays.audio_mask.shape[1],
                                    slots=arrays.slot_query.shape[1])
        got = pipeline.localize_split(config, own, pipeline.embed_split(config, own, **paths),
                                      split_queries=len(whole.records))
        rows = shards[p].positions(p)
        np.testing.assert_array_equal(got.windows, want.windows[rows])
        np.testing.assert_array_equal(got.valid, want.valid[rows])


def test_localize_all_systems_on_two_processes_writes_the_one_process_files(split_dir, tmp_path):
    args = [*LOCALIZE, "--all_systems",
            "--config=experiments/configs/localize.py:backbone_cosine,runlocal", *_data(split_dir),
            f"--clap={split_dir / 'clap_converted'}",
            f"--neutral_feats={split_dir / 'neutral_text'}"]
    one = mh.launch([*args, f"--output={tmp_path / 'one'}"])
    two = mh.launch_processes(lambda pid: [*args, f"--output={tmp_path / f'two_p{pid}'}"])
    (one_out, _), = mh.wait([one])
    (out0, _), (out1, _) = mh.wait(two)

    assert not (tmp_path / "two_p1").exists()  # process 1 wrote nothing
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted([f"{s}.jsonl" for s in localize_configs.SYSTEMS] + ["timings.json"])
    assert sorted(p.name for p in (tmp_path / "two_p0").iterdir()) == names
    for system in localize_configs.SYSTEMS:
        want = (tmp_path / "one" / f"{system}.jsonl").read_bytes()
        assert (tmp_path / "two_p0" / f"{system}.jsonl").read_bytes() == want, system
    # Process 0 prints the table and metrics of the whole split; process 1 prints nothing.
    assert json.loads(out0.strip().splitlines()[-1]) == json.loads(
        one_out.strip().splitlines()[-1])
    assert _printed(out1) == []


def _printed(stdout: str) -> list[str]:
    """What the program printed on stdout (gloo announces its connections there too)."""
    return [line for line in stdout.splitlines() if not line.startswith("[Gloo]")]


def _random_detr_workdir(workdir: Path) -> Path:
    """A predict-ready QD-DETR workdir with random weights (the :runlocal model)."""
    import jax

    from amr_jax.train import trainer
    from amr_jax.train.checkpointing import RunCheckpoints
    from experiments.configs import qd_detr

    config = qd_detr.get_config("runlocal")
    with config.unlocked():
        config.train.eval_batch_size = 4  # several batches, the last one padded
    workdir.mkdir(parents=True)
    trainer.save_config(config, workdir)
    _, state = trainer.build_programs(config, steps_per_epoch=1,
                                      model_factory=trainer.build_qd_detr,
                                      mesh=trainer.data_mesh(jax.local_devices()[:1]))
    ckpt = RunCheckpoints(workdir, max_to_keep=1)
    ckpt.save_best(state, {"step": 0, "epoch": None, "metric": None, "value": None, "brief": {}})
    ckpt.close()
    return workdir


def test_predict_detr_on_two_processes_writes_the_one_process_file(split_dir, tmp_path):
    workdir = _random_detr_workdir(tmp_path / "detr")
    args = [*PREDICT, f"--workdir={workdir}", *_data(split_dir)]
    one = mh.launch([*args, f"--output={tmp_path / 'one.jsonl'}"])
    two = mh.launch_processes(lambda pid: [*args, f"--output={tmp_path / f'two_p{pid}.jsonl'}"])
    (one_out, _), = mh.wait([one])
    (out0, _), (out1, _) = mh.wait(two)

    assert not (tmp_path / "two_p1.jsonl").exists()  # process 1 wrote nothing
    want = (tmp_path / "one.jsonl").read_bytes()
    assert len(want.splitlines()) == len(read_annotations(split_dir / "annotations.jsonl"))
    assert (tmp_path / "two_p0.jsonl").read_bytes() == want
    assert out0.strip().splitlines()[-1] == one_out.strip().splitlines()[-1]  # same metrics
    assert _printed(out1) == []


def test_one_host_options_are_refused_on_two_processes_naming_the_flag(split_dir, tmp_path):
    localize = [*LOCALIZE, "--config=experiments/configs/localize.py:backbone_cosine,runlocal",
                "--config.stream_recordings=2", *_data(split_dir),
                f"--output={tmp_path / 'l.jsonl'}"]
    predict = [*PREDICT, f"--workdir={tmp_path / 'none'}", "--reproduce_reference",
               *_data(split_dir), f"--output={tmp_path / 'p.jsonl'}"]
    for args, flag in ((localize, "--config.stream_recordings"),
                       (predict, "--reproduce_reference")):
        for _, err in mh.wait(mh.launch_processes(lambda pid, a=args: a), expect_rc=1):
            assert flag in err and "Traceback" not in err, err[-2000:]
    assert not list(tmp_path.iterdir())
