"""Multi-host training: shard order, a process's own shard, and two CPU processes.

Two local processes (gloo collectives, one CPU device each, one shared workdir) train the
tiny model; a single process holding both data shards over two forced host devices (the
same partitioning, hence the same reductions) is their oracle: parameters bit-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import detr_fixtures as fx
import multihost_lib as mh
import test_trainer as tt
from amr_jax import distributed
from amr_jax.data.loader import load_split
from amr_jax.detr.inputs import make_detr_batch
from amr_jax.errors import UsageError
from amr_jax.train import pipeline

HERE = Path(__file__).parent
REPO = HERE.parent.parent
WORKER = HERE / "multihost_worker.py"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    fx.write_tiny_split(root, num_recordings=4, queries_per_recording=3, frames=(20, 30), seed=0)
    return root


def _split(root, select=None):
    return load_split(root / "annotations.jsonl", root / "clap", root / "clap_text",
                      num_workers=1, progress=False, select=select)


def _resolved_data(root):
    config = tt.tiny_config(root)
    return config.data  # max_tokens fixed (8): no resolution needed


def _assert_trees_equal(a, b):
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_one_shard_is_the_single_host_stream(data_root):
    split, data, seed = _split(data_root), _resolved_data(data_root), 7
    queries = pipeline.trainable_queries(split, data)
    (shard,) = pipeline.shard_queries(queries, 1)
    np.testing.assert_array_equal(shard, queries)
    assert pipeline.sharded_steps_per_epoch([len(queries)], 4) == len(queries) // 4
    for epoch, index in ((0, 0), (1, 2)):
        # The documented single-host order, written out: permutation by [seed, epoch],
        # batch rng [seed, epoch, index].
        order = queries[np.random.default_rng([seed, epoch]).permutation(len(queries))]
        rows = order[index * 4:(index + 1) * 4]
        inputs, targets, _ = make_detr_batch(
            split, [split.records[i] for i in rows], max_frames=data.max_frames,
            max_tokens=data.max_tokens, max_windows=data.max_windows,
            rng=np.random.default_rng([seed, epoch, index]), clip_length=data.clip_length,
            layout=data.layout, saliency_label_mode=data.saliency_labels)
        for given in (queries, {0: shard}):
            got = pipeline.train_batch(split, given, data, batch_size=4, seed=seed, epoch=epoch,
                                       index=index, num_shards=1)
            _assert_trees_equal(got, (inputs, targets))
            assert pipeline.batch_qids(split, given, batch_size=4, seed=seed, epoch=epoch,
                                       index=index) == [split.records[i].qid for i in rows]


def test_two_shards_cover_each_query_at_most_once_per_epoch(data_root):
    split, seed, batch = _split(data_root), 3, 4
    queries = pipeline.trainable_queries(split, _resolved_data(data_root))
    shards = dict(enumerate(pipeline.shard_queries(queries, 2)))
    assert all((q % 2 == s).all() for s, q in shards.items())
    steps = pipeline.sharded_steps_per_epoch([len(q) for q in shards.values()], batch)
    assert steps == min(len(q) for q in shards.values()) // 2
    for epoch in (0, 1):
        seen = []
        for index in range(steps):
            local = [pipeline.local_rows(shards[s], num_shards=2, shard=s, batch_size=batch,
                                         seed=seed, epoch=epoch, index=index) for s in (0, 1)]
            assert all(len(rows) == batch // 2 for rows in local)
            assert not set(local[0]) & set(local[1])
            assert (local[0] % 2 == 0).all() and (local[1] % 2 == 1).all()
            seen += [*local[0], *local[1]]
            # batch_qids follows the global batch's row order: shard 0's rows, then shard 1's.
            assert pipeline.batch_qids(split, shards, batch_size=batch, seed=seed, epoch=epoch,
                                       index=index, num_shards=2) == [
                split.records[i].qid for i in [*local[0], *local[1]]]
        assert len(seen) == len(set(seen)) == steps * batch
    # Epochs are shuffled differently.
    first = [pipeline.local_rows(shards[0], num_shards=2, shard=0, batch_size=batch, seed=seed,
                                 epoch=e, index=0).tolist() for e in (0, 1, 2)]
    assert len({tuple(x) for x in first}) > 1


def test_a_process_loading_only_its_shard_builds_its_rows_of_the_global_batch(data_root):
    full, data, seed = _split(data_root), _resolved_data(data_root), 5
    shards = dict(enumerate(pipeline.shard_queries(pipeline.trainable_queries(full, data), 2)))
    for process in (0, 1):
        own = _split(data_root, select=lambda records: records[process::2])
        # Only the shard's queries (and their texts) were loaded.
        assert [r.qid for r in own.records] == [r.qid for r in full.records[process::2]]
        assert set(own.text) == {r.key for r in own.records}
        local_queries = pipeline.trainable_queries(own, data)
        for epoch, index in ((0, 0), (1, 1)):
            whole = pipeline.train_batch(full, shards, data, batch_size=4, seed=seed,
                                         epoch=epoch, index=index, num_shards=2)
            mine = pipeline.train_batch(own, {process: local_queries}, data, batch_size=4,
                                        seed=seed, epoch=epoch, index=index, num_shards=2)
            import jax

            _assert_trees_equal(mine, jax.tree.map(lambda x: x[2 * process:2 * process + 2],
                                                   whole))


def test_selecting_after_loading_equals_selecting_before(data_root):
    from amr_jax.data.loader import select_records

    def odd(records):
        return records[1::2]

    before, after = _split(data_root, select=odd), select_records(_split(data_root), odd)
    assert [r.qid for r in after.records] == [r.qid for r in before.records]
    assert after.vids == before.vids
    assert after.audio.keys() == before.audio.keys() and after.text.keys() == before.text.keys()
    _assert_trees_equal((after.audio, after.text), (before.audio, before.text))


def test_shard_and_launch_errors_name_the_field():
    with pytest.raises(ValueError, match="train.data_shards"):
        pipeline.local_batch_size(6, 4)
    with pytest.raises(ValueError, match="smallest of the 2 training shards"):
        pipeline.sharded_steps_per_epoch([5, 1], 4)
    with pytest.raises(UsageError, match="coordinator_address"):
        distributed.initialize("", num_processes=2, process_id=0)
    with pytest.raises(UsageError, match="process_id"):
        distributed.initialize("localhost:1", num_processes=2, process_id=2)
    distributed.initialize()  # one process: a no-op
    assert distributed.is_primary() and distributed.process_count() == 1


def _worker_args(root, workdir, out, *args):
    return [WORKER, f"--root={root}", f"--workdir={workdir}", f"--out={out}", *args]


def _worker(root, workdir, out, *args, host_devices=1):
    return mh.launch(_worker_args(root, workdir, out, *args), host_devices=host_devices)


def _wait(procs):
    mh.wait(procs)


def _two_processes(root, workdir, tmp_path, *args):
    return mh.launch_processes(
        lambda pid: _worker_args(root, workdir, tmp_path / f"p{pid}.npz", *args))


def _epochs(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    # Rates are timings; everything else is computed.
    return [{k: v for k, v in json.loads(x).items() if k not in ("steps_per_s", "eta_s")}
            for x in lines]


def test_two_processes_preempted_and_resumed_equal_the_sharded_oracle(data_root, tmp_path):
    oracle_dir, multi_dir = tmp_path / "oracle", tmp_path / "multi"
    oracle = _worker(data_root, oracle_dir, tmp_path / "oracle.npz", "--data_shards=2",
                     host_devices=2)
    # Preempted mid epoch 2 (3 steps per epoch: 2 shards of 6 queries, 2 rows each) ...
    _wait(_two_processes(data_root, multi_dir, tmp_path, "--stop_after_steps=4"))
    assert _epochs(multi_dir)[0]["epoch"] == 1
    # ... and resumed by two new processes from the collective orbax checkpoint.
    _wait(_two_processes(data_root, multi_dir, tmp_path))
    _wait([oracle])

    want = np.load(tmp_path / "oracle.npz")
    for pid in (0, 1):
        got = np.load(tmp_path / f"p{pid}.npz")
        assert sorted(got.files) == sorted(want.files)
        for key in want.files:  # same partitioning and reductions: bit-identical
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"process {pid} {key}")
    # Written once, by the primary process: one record per epoch, equal to the oracle's.
    assert [e["epoch"] for e in _epochs(multi_dir)] == [1, 2]
    assert _epochs(multi_dir) == _epochs(oracle_dir)
    assert (json.loads((multi_dir / "best.json").read_text())
            == json.loads((oracle_dir / "best.json").read_text()))
    assert [p.name for p in (multi_dir / "checkpoints").iterdir()] == ["6"]
    assert json.loads((multi_dir / "config.json").read_text())["train"]["data_shards"] == 0


def test_train_detr_rejects_an_incomplete_launch_in_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train_detr",
         "--config=experiments/configs/qd_detr.py:runlocal", f"--workdir={tmp_path / 'w'}",
         "--num_processes=2", "--process_id=1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO)))
    assert proc.returncode == 1, proc.stderr[-2000:]  # cli.EXIT_USAGE
    assert "coordinator_address" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()  # nothing trained, nothing written
