"""Configs, the experiments.localize / experiments.diagnose entry points, and diagnostics,
on a small SYNTHETIC split with real CASTELLA structure."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from amr_jax.eval import diagnostics, metrics
from amr_jax.localize import pipeline, reference
from experiments.configs import localize as localize_configs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def split_dir(synthetic_castella, tmp_path_factory):
    from amr_jax.clap import convert

    convert.convert_and_save(synthetic_castella / "msclap_synthetic.npz",
                             synthetic_castella / "clap_converted")
    return synthetic_castella


def _paths(d):
    return {"annotations": d / "annotations.jsonl", "audio_feats": d / "clap",
            "text_feats": d / "clap_text", "clap_dir": d / "clap_converted",
            "neutral_feats": d / "neutral_text"}


def test_every_system_config_loads_locked():
    for system in localize_configs.SYSTEMS:
        for arg in (system, f"{system},runlocal"):
            config = localize_configs.get_config(arg)
            assert config.system == system and config.is_locked
            with pytest.raises(AttributeError):
                config.no_such_field = 1
    assert localize_configs.get_config("jointproj_s2").fwhm.smooth_k == 7
    assert localize_configs.get_config("jointproj_s3").fwhm.rel_height == 0.45
    with pytest.raises(ValueError, match="unknown system"):
        localize_configs.get_config("jointproj_s9")


def test_binary_writes_predictions_timings_plots_and_json(split_dir, tmp_path):
    p = _paths(split_dir)
    first_qid = json.loads(p["annotations"].read_text().splitlines()[0])["qid"]
    out = tmp_path / "pred.jsonl"
    cmd = [sys.executable, "-m", "experiments.localize",
           "--config=experiments/configs/localize.py:jointproj_s1,runlocal",
           f"--annotations={p['annotations']}", f"--audio_feats={p['audio_feats']}",
           f"--text_feats={p['text_feats']}", f"--clap={p['clap_dir']}", f"--output={out}",
           f"--timings={tmp_path / 't.json'}", f"--plot_qids={first_qid}",
           f"--plot_dir={tmp_path / 'plots'}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert list(last) == ["R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    records = p["annotations"].read_text().splitlines()
    assert len(lines) == len(records)
    for line in lines:
        w = np.asarray(line["pred_relevant_windows"])
        assert 1 <= len(w) <= 10 and np.all(w[:, 1] - w[:, 0] >= 1 - 1e-6)
        assert np.all(np.diff(w[:, 2]) <= 1e-6)  # best first
    timings = json.loads((tmp_path / "t.json").read_text())
    assert set(timings) == {"load_s", "embed_s", "localize_s", "compile_s", "total_s"}
    assert (tmp_path / "plots" / f"{first_qid}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("system", ["jointproj_s1", "gmm_contrast"])
def test_kernels_and_scipy_reference_give_the_same_metrics(split_dir, tmp_path, system):
    config = localize_configs.get_config(system)
    out = pipeline.run_localization(config, output=tmp_path / "p.jsonl", print_report=False,
                                    **_paths(split_dir))
    res = out["result"]
    records = [r for r in pipeline.load_split(*[_paths(split_dir)[k] for k in (
        "annotations", "audio_feats", "text_feats")], progress=False).records]
    ref = []
    for i, r in enumerate(records):
        curve = res.curves[i, : res.mask[i].sum()]
        if config.localizer == "fwhm":
            ref.append(reference.fwhm_reference(curve, r.duration, num_windows=10,
                                                frame_offset_s=config.frame_offset_s,
                                                **config.fwhm.to_dict())[0])
        else:
            ref.append(reference.gmm_reference(curve, r.duration, num_windows=10,
                                               frame_offset_s=config.frame_offset_s,
                                               **config.gmm.to_dict())[0])
    ref_w, ref_v = reference.to_arrays(ref, 10)
    ours = metrics.brief(out["metrics"])
    theirs = metrics.brief(metrics.compute_metrics(records, windows=ref_w, valid=ref_v))
    for key in ("R1@0.7", "mAP"):
        assert abs(ours[key] - theirs[key]) <= 1.0, (ours, theirs)


def test_blind_split_writes_predictions_without_metrics(split_dir, tmp_path):
    blind = tmp_path / "blind.jsonl"
    lines = [json.loads(x) for x in _paths(split_dir)["annotations"].read_text().splitlines()]
    blind.write_text("".join(json.dumps({k: v for k, v in line.items()
                                         if k != "relevant_windows"}) + "\n" for line in lines))
    paths = dict(_paths(split_dir), annotations=blind)
    out = pipeline.run_localization(localize_configs.get_config("jointproj_s1"),
                                    output=tmp_path / "p.jsonl", **paths)
    assert out["metrics"] is None
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == len(lines)


def test_diagnostics_on_the_synthetic_split(split_dir, tmp_path):
    config = localize_configs.get_config("gmm_contrast")  # compiled by the metrics test
    result = diagnostics.run_diagnostics(config, output=tmp_path / "d.json", **_paths(split_dir))
    assert json.loads((tmp_path / "d.json").read_text())["gmm_system"] == "gmm_contrast"
    # The synthetic features hide the query in the backbone space and reveal it after the heads.
    assert result["joint"]["rank_auc"] > result["backbone"]["rank_auc"] + 0.1
    assert sum(row["n"] for row in result["iou_by_delta"]) == len(
        _paths(split_dir)["annotations"].read_text().splitlines())
    assert all(0.0 <= result[s]["win_rate"] <= 1.0 for s in ("backbone", "joint"))


def test_rank_auc_matches_sklearn_and_partners_differ():
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=(7, 40)), 1).astype(np.float32)  # ties
    labels = rng.random((7, 40)) < 0.3
    lengths = np.array([40, 33, 10, 25, 40, 2, 18])
    mask = np.arange(40)[None] < lengths[:, None]
    labels[5] = False  # no positive frame -> NaN
    auc = diagnostics.rank_auc(scores, labels, mask, chunk=4)
    for i in range(7):
        y, s = labels[i, : lengths[i]], scores[i, : lengths[i]]
        if y.all() or not y.any():
            assert np.isnan(auc[i])
        else:
            assert abs(auc[i] - roc_auc_score(y, s)) < 1e-6
    partners = diagnostics.mismatched_partners(50, seed=0)
    assert np.all(partners != np.arange(50)) and partners.min() >= 0 and partners.max() < 50
    own = np.array([[0.0, 2.0], [1.0, 1.0]], np.float32)
    other = np.array([[1.0, 1.0], [0.0, 1.0]], np.float32)
    assert diagnostics.win_rate(own, other, np.ones((2, 2), bool))["win_rate"] == 0.75


def test_all_systems_binary_prints_one_table_and_matches_single_runs(split_dir, tmp_path):
    p = _paths(split_dir)
    cmd = [sys.executable, "-m", "experiments.localize", "--all_systems",
           f"--annotations={p['annotations']}", f"--audio_feats={p['audio_feats']}",
           f"--text_feats={p['text_feats']}", f"--clap={p['clap_dir']}",
           f"--neutral_feats={p['neutral_feats']}", f"--output={tmp_path / 'all'}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert list(last) == list(localize_configs.SYSTEMS)
    for system in localize_configs.SYSTEMS:
        assert f"\n{system} " in run.stdout
        assert (tmp_path / "all" / f"{system}.jsonl").is_file()
    # Sharing one projection across systems must not change any system's result.
    single = pipeline.run_localization(localize_configs.get_config("jointproj_s1"),
                                       output=tmp_path / "s1.jsonl", print_report=False, **p)
    assert metrics.brief(single["metrics"]) == last["jointproj_s1"]


def _tiny_detr_workdir(tmp_path):
    """A predict-ready QD-DETR workdir (small random model imported like a reference file)."""
    torch = pytest.importorskip("torch")
    from flax import nnx

    from amr_jax.detr import convert
    from amr_jax.detr import model as qd
    from experiments.configs import qd_detr

    cfg = qd.default_model_config()
    cfg.hidden_dim, cfg.dim_feedforward, cfg.num_queries, cfg.max_q_l = 16, 24, 4, 6
    cfg.t2v_layers, cfg.enc_layers, cfg.nheads = 1, 1, 4
    state = convert.export_state_dict(qd.QDDETR(cfg, rngs=nnx.Rngs(2)), cfg, "dcase")
    torch.save({"model": {k: torch.tensor(v) for k, v in state.items()}}, tmp_path / "m.ckpt")
    config = qd_detr.get_config()
    config.unlock()
    config.model = cfg
    convert.convert_checkpoint(tmp_path / "m.ckpt", tmp_path / "detr", layout="dcase",
                               config=config)
    return tmp_path / "detr"


def test_diagnose_binary(split_dir, tmp_path):
    p = _paths(split_dir)
    detr = _tiny_detr_workdir(tmp_path)
    cmd = [sys.executable, "-m", "experiments.diagnose",
           f"--annotations={p['annotations']}", f"--audio_feats={p['audio_feats']}",
           f"--text_feats={p['text_feats']}", f"--clap={p['clap_dir']}",
           f"--neutral_feats={p['neutral_feats']}", f"--output={tmp_path / 'd.json'}",
           f"--detr_workdir={detr}"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads((tmp_path / "d.json").read_text())
    assert "rank-AUC" in run.stdout and "Delta" in run.stdout and "DETR IoU" in run.stdout
    assert saved["joint"]["rank_auc"] > saved["backbone"]["rank_auc"]
    # The DETR column bins the model's own top-1 IoU: its n-weighted mean is the overall mean
    # IoU of the model's first window, computed here from its predictions.
    from amr_jax.data.loader import load_split
    from amr_jax.train.predict import predict_split

    split = load_split(p["annotations"], p["audio_feats"], p["text_feats"], num_workers=1,
                       progress=False)
    windows, valid = predict_split(detr, split)
    own = []
    for r, w in zip(split.records, windows):
        st, en = w[0, 0], w[0, 1]
        gt = np.asarray(r.windows, np.float64)
        inter = np.clip(np.minimum(en, gt[:, 1]) - np.maximum(st, gt[:, 0]), 0, None)
        union = (en - st) + (gt[:, 1] - gt[:, 0]) - inter
        own.append(np.max(np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)))
    rows = [r for r in saved["iou_by_delta"] if r["n"]]
    weighted = sum(r["n"] * r["detr_mean_iou"] for r in rows) / sum(r["n"] for r in rows)
    assert valid[:, 0].all() and np.mean(own) > 0
    assert abs(weighted - np.mean(own)) < 1e-6
