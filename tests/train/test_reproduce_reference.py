"""`predict_detr --reproduce_reference`: the reference mask and batching vs per-row masking."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx

import detr_fixtures as fx
from amr_jax.data.loader import load_split
from amr_jax.detr import convert
from amr_jax.detr import model as qd
from amr_jax.detr.inputs import make_detr_batch
from amr_jax.detr.postprocess import postprocess
from amr_jax.train.predict import predict_split
from experiments.configs import qd_detr

torch = pytest.importorskip("torch")


def _model_config():
    c = qd.default_model_config()
    c.hidden_dim, c.dim_feedforward, c.num_queries, c.max_q_l = 16, 24, 4, 6
    c.t2v_layers, c.enc_layers, c.nheads = 1, 1, 4
    return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref_batching")
    # 120 queries: one full reference batch of 100 and a partial one of 20.
    fx.write_tiny_split(root, num_recordings=30, queries_per_recording=4, frames=(12, 24), seed=1)
    split = load_split(root / "annotations.jsonl", root / "clap", root / "clap_text",
                       num_workers=1, progress=False)
    cfg = _model_config()
    source = qd.QDDETR(cfg, rngs=nnx.Rngs(5))
    state_dict = convert.export_state_dict(source, cfg, "dcase")
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state_dict.items()}},
               root / "best.ckpt")
    config = qd_detr.get_config()
    config.unlock()
    config.model = cfg
    config.data.max_frames = 32
    config.train.eval_batch_size = 16
    workdir = root / "workdir"
    convert.convert_checkpoint(root / "best.ckpt", workdir, layout="dcase", config=config)
    return split, workdir, state_dict


@functools.partial(jax.jit, static_argnums=(0,), compiler_options={
    "xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False})
def _forward(graphdef, state, inputs, duration):
    out = nnx.merge(graphdef, state)(inputs, deterministic=True)
    return postprocess(out["pred_logits"], out["pred_spans"], duration, max_ts_val=300.0,
                       clip_length=1.0, top_k=10)


def _run(model, split, records, max_tokens):
    inputs, _, batch = make_detr_batch(split, records, max_frames=32, max_tokens=max_tokens,
                                       max_windows=5, rng=None, layout="dcase")
    w, v = _forward(*nnx.split(model), inputs, batch.duration)
    return np.asarray(w), np.asarray(v)


def test_reference_batching_and_mask(setup):
    split, workdir, state_dict = setup
    exact, exact_valid = predict_split(workdir, split, reproduce_reference=True)
    plain, plain_valid = predict_split(workdir, split)
    assert exact.shape == plain.shape == (120, 10, 3)

    cfg = _model_config()
    cfg.t2v_reference_mask = True
    reference = qd.QDDETR(cfg, rngs=nnx.Rngs(0))
    convert.load_state_dict_into(reference, state_dict, cfg, "dcase")
    longest = max(t.shape[0] for t in split.text.values())
    # The reference: batches of 100 in file order, the last one partial (20 rows).
    chunks = [_run(reference, split, split.records[s:s + 100], longest) for s in (0, 100)]
    np.testing.assert_allclose(exact, np.concatenate([c[0] for c in chunks]), atol=1e-4)
    np.testing.assert_array_equal(exact_valid, np.concatenate([c[1] for c in chunks]))
    # Padding the last batch to 100 rows (or any other make-up) changes some predictions.
    padded = _run(reference, split, split.records[100:] + split.records[:80], longest)[0][:20]
    assert np.abs(padded - exact[100:]).max() > 1e-3

    # The default is per-row: a query alone (where the reference mask has nothing to mix)
    # gives the same prediction as inside the padded batches of 16.
    for i in (0, 119):
        alone = _run(reference, split, split.records[i:i + 1], longest)[0][0]
        np.testing.assert_allclose(plain[i], alone, atol=1e-4)
    differing = int(np.sum(np.any(np.abs(exact - plain) > 1e-4, axis=(1, 2))))
    print(f"SYNTHETIC split, 120 queries: {differing} differ between reference and per-row masking")
    assert differing > 0
