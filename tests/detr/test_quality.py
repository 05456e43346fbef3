"""Quality head, its L1 loss to the matched IoU (seed 003 eq. 2) and re-ranking (eq. 3)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from scipy.optimize import linear_sum_assignment

from amr_jax.detr import model as qd
from amr_jax.detr.criterion import build_criterion, quality_term
from amr_jax.detr.inputs import DetrInputs, DetrTargets
from amr_jax.detr.matcher import Matching
from amr_jax.detr.postprocess import postprocess


def _xx(cxw):
    return np.stack([cxw[..., 0] - cxw[..., 1] / 2, cxw[..., 0] + cxw[..., 1] / 2], -1)


def _iou(a, b):
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / ((a[1] - a[0]) + (b[1] - b[0]) - inter)


def numpy_quality_loss(quality, pred_cxw, pairs):
    """Eq. (2): (1/M) sum over matched pairs (query i, target cxw) of |q_i - IoU|."""
    if not pairs:
        return 0.0
    return float(np.mean([abs(quality[i] - _iou(_xx(pred_cxw[i]), _xx(t))) for i, t in pairs]))


def _targets(spans, mask):
    b = spans.shape[0]
    z = np.zeros((b, 2), np.int32)
    return DetrTargets(spans=spans, span_mask=mask, saliency_pos=z, saliency_neg=z,
                       saliency_labels=np.zeros((b, 4), np.float32))


def _hand_made():
    # q0 [0.3, 0.7] vs t0 [0.4, 0.8]: IoU 0.3 / 0.5 = 0.6, |0.9 - 0.6| = 0.3;
    # q1 [0.1, 0.3] vs t1 [0.2, 0.6]: IoU 0.1 / 0.5 = 0.2, |0.1 - 0.2| = 0.1; slot 2 padded.
    pred = np.array([[[0.5, 0.4], [0.2, 0.2], [0.9, 0.1]]], np.float32)
    quality = np.array([[0.9, 0.1, 0.7]], np.float32)
    spans = np.array([[[0.6, 0.4], [0.4, 0.4], [0.1, 5.0]]], np.float32)
    mask = np.array([[True, True, False]])
    matching = Matching(src_for_target=np.array([[0, 1, 2]], np.int32), target_mask=mask,
                        query_matched=np.array([[True, True, False]]))
    return pred, quality, spans, mask, matching


def test_hand_made_case():
    pred, quality, spans, mask, matching = _hand_made()
    layer = {"pred_spans": pred, "pred_quality": quality}
    value = float(quality_term(layer, _targets(spans, mask), matching, None))
    assert value == pytest.approx(0.2, abs=1e-6)
    assert numpy_quality_loss(quality[0], pred[0], [(0, spans[0, 0]), (1, spans[0, 1])]) == \
        pytest.approx(0.2, abs=1e-6)


def test_perfect_prediction_padding_and_gradients():
    pred, quality, spans, mask, matching = _hand_made()
    targets = _targets(spans, mask)
    perfect = {"pred_spans": np.array([[[0.6, 0.4], [0.4, 0.4], [0.3, 0.3]]], np.float32),
               "pred_quality": np.array([[1.0, 1.0, 0.123]], np.float32)}
    assert float(quality_term(perfect, targets, matching, None)) == pytest.approx(0.0, abs=1e-6)
    # Padded target slots and unmatched queries contribute nothing.
    other = _targets(np.array([[[0.6, 0.4], [0.4, 0.4], [0.7, 0.01]]], np.float32), mask)
    layer = {"pred_spans": pred, "pred_quality": quality}
    layer2 = {"pred_spans": pred, "pred_quality": np.array([[0.9, 0.1, 0.0]], np.float32)}
    base = float(quality_term(layer, targets, matching, None))
    assert float(quality_term(layer2, other, matching, None)) == base
    grads = jax.grad(lambda o: quality_term(o, targets, matching, None))(
        {k: jnp.asarray(v) for k, v in layer.items()})
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    # The IoU target is held constant: no gradient reaches the spans; q gets sign / M.
    np.testing.assert_array_equal(np.asarray(grads["pred_spans"]), 0.0)
    np.testing.assert_allclose(np.asarray(grads["pred_quality"]), [[0.5, -0.5, 0.0]])


def _loss_config(quality_weight):
    c = ml_collections.ConfigDict()
    c.cost_span, c.cost_giou, c.cost_class = 10.0, 1.0, 4.0
    c.span_weight, c.giou_weight, c.label_weight, c.saliency_weight = 10.0, 1.0, 4.0, 1.0
    c.eos_coef, c.saliency_margin, c.saliency_tau, c.saliency_num_ranks = 0.1, 0.2, 0.5, 12
    c.quality_weight, c.boundary_weight = quality_weight, 0.0
    c.sim_weight = 0.0
    return c


def test_criterion_adds_quality_on_every_layer_vs_scipy_matching():
    b, q, w, t = 3, 6, 3, 8
    rng = np.random.default_rng(0)

    def layer():
        spans = np.stack([rng.uniform(0.2, 0.8, (b, q)), rng.uniform(0.05, 0.5, (b, q))], -1)
        return {"pred_logits": rng.normal(size=(b, q, 2)).astype(np.float32),
                "pred_spans": spans.astype(np.float32),
                "pred_quality": rng.uniform(0, 1, (b, q)).astype(np.float32)}

    outputs = dict(layer(), aux_outputs=(layer(),),
                   saliency_scores=rng.normal(size=(b, t)).astype(np.float32),
                   saliency_scores_neg=rng.normal(size=(b, t)).astype(np.float32))
    mask = np.arange(w)[None] < np.array([1, 3, 2])[:, None]
    spans = np.stack([rng.uniform(0.2, 0.8, (b, w)), rng.uniform(0.05, 0.4, (b, w))], -1)
    targets = DetrTargets(spans=np.where(mask[..., None], spans, 0).astype(np.float32),
                          span_mask=mask, saliency_pos=np.zeros((b, 2), np.int32),
                          saliency_neg=np.ones((b, 2), np.int32),
                          saliency_labels=np.zeros((b, t), np.float32))
    frame_mask = np.ones((b, t), bool)
    total_q, terms_q = jax.jit(build_criterion(_loss_config(1.0)))(outputs, targets, frame_mask)
    total_0, terms_0 = jax.jit(build_criterion(_loss_config(0.0)))(outputs, targets, frame_mask)
    assert set(terms_q) - set(terms_0) == {"quality", "quality_0"}
    for suffix, lay in [("", outputs), ("_0", outputs["aux_outputs"][0])]:
        pairs = []
        for i in range(b):
            tg = spans[i][mask[i]]
            prob = np.exp(lay["pred_logits"][i]) / np.exp(lay["pred_logits"][i]).sum(-1,
                                                                                    keepdims=True)
            cost = np.zeros((q, len(tg)))
            for a in range(q):
                for c, tt in enumerate(tg):
                    pa, pt = _xx(lay["pred_spans"][i, a]), _xx(tt)
                    hull = max(pa[1], pt[1]) - min(pa[0], pt[0])
                    inter = max(0.0, min(pa[1], pt[1]) - max(pa[0], pt[0]))
                    union = pa[1] - pa[0] + pt[1] - pt[0] - inter
                    giou = inter / union - (hull - union) / hull
                    cost[a, c] = (10 * np.abs(lay["pred_spans"][i, a] - tt).sum() - giou
                                  - 4 * prob[a, 0])
            rows, cols = linear_sum_assignment(cost)
            pairs += [(lay["pred_quality"][i, r], _iou(_xx(lay["pred_spans"][i, r]),
                                                       _xx(tg[c]))) for r, c in zip(rows, cols)]
        expected = np.mean([abs(qq - iou) for qq, iou in pairs])
        assert float(terms_q["quality" + suffix]) == pytest.approx(expected, rel=1e-5)
    assert float(total_q) == pytest.approx(
        float(total_0) + float(terms_q["quality"]) + float(terms_q["quality_0"]), rel=1e-6)


def _tiny_model_config(quality_head):
    c = qd.default_model_config()
    c.hidden_dim, c.dim_feedforward, c.nheads, c.t2v_layers, c.enc_layers = 32, 64, 4, 1, 1
    c.quality_head = quality_head
    return c


def test_quality_head_outputs_and_parameters():
    plain = qd.QDDETR(_tiny_model_config(False), rngs=nnx.Rngs(0))
    with_q = qd.QDDETR(_tiny_model_config(True), rngs=nnx.Rngs(0))
    assert plain.quality_embed is None
    d = 32
    assert qd.count_parameters(with_q) - qd.count_parameters(plain) == (d * d + d) + (d + 1)
    # Built last: every other parameter starts from the same values as the plain model.
    plain_params = dict(nnx.to_flat_state(nnx.state(plain, nnx.Param)))
    for path, value in nnx.to_flat_state(nnx.state(with_q, nnx.Param)):
        if path[0] != "quality_embed":
            np.testing.assert_array_equal(np.asarray(value[...]),
                                          np.asarray(plain_params[path][...]))
    rng = np.random.default_rng(0)
    mask = np.arange(12)[None] < np.array([12, 7])[:, None]
    inputs = DetrInputs(audio=(rng.normal(size=(2, 12, 770)) * mask[..., None]).astype(np.float32),
                        audio_mask=mask, text=rng.normal(size=(2, 5, 768)).astype(np.float32),
                        text_mask=np.ones((2, 5), bool))
    forward = nnx.jit(lambda m, x: m(x, deterministic=True))
    out, ref = forward(with_q, inputs), forward(plain, inputs)
    np.testing.assert_array_equal(np.asarray(out["pred_spans"]), np.asarray(ref["pred_spans"]))
    for layer in (out,) + out["aux_outputs"]:
        qual = np.asarray(layer["pred_quality"])
        assert qual.shape == (2, 10) and ((qual > 0) & (qual < 1)).all()
    assert "pred_quality" not in ref


def test_reranking_only_reorders():
    rng = np.random.default_rng(0)
    b, q = 6, 10
    logits = rng.normal(size=(b, q, 2)).astype(np.float32)
    spans = np.stack([rng.uniform(0.1, 0.9, (b, q)), rng.uniform(0.05, 0.5, (b, q))], -1)
    spans = spans.astype(np.float32)
    duration = rng.uniform(30, 300, b).astype(np.float32)
    quality = rng.uniform(0.01, 1, (b, q)).astype(np.float32)
    kw = dict(max_ts_val=300.0, clip_length=1.0, top_k=10)
    base, _ = postprocess(logits, spans, duration, **kw)
    ranked, _ = postprocess(logits, spans, duration, quality=quality, quality_gamma=1.5, **kw)
    base, ranked = np.asarray(base), np.asarray(ranked)
    p = np.exp(logits[..., 0]) / np.exp(logits).sum(-1)
    for i in range(b):
        # Same set of windows, ordered by p * q^1.5 (numpy), scores = p * q^1.5.
        assert sorted(map(tuple, base[i, :, :2])) == sorted(map(tuple, ranked[i, :, :2]))
        s = p[i] * quality[i] ** 1.5
        order = np.argsort(-s, kind="stable")
        xx = np.round(np.clip(np.round(_xx(spans[i]) * duration[i], 4), 0, 300))
        np.testing.assert_allclose(ranked[i, :, :2], xx[order], atol=1e-4)
        np.testing.assert_allclose(ranked[i, :, 2], np.round(s[order], 4), atol=1e-4)
    assert any((base[i, :, :2] != ranked[i, :, :2]).any() for i in range(b))
    ones, _ = postprocess(logits, spans, duration, quality=np.ones((b, q), np.float32), **kw)
    np.testing.assert_array_equal(np.asarray(ones), base)
