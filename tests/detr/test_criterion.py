"""The full QD-DETR objective vs a torch + scipy re-implementation of the reference criterion."""

import jax
import ml_collections
import numpy as np
import pytest
import torch

from amr_jax.detr.criterion import build_criterion
from amr_jax.detr.inputs import DetrTargets
from torch_reference import torch_layer_losses, torch_saliency

B, Q, W, T = 4, 10, 5, 16


def _loss_config():
    c = ml_collections.ConfigDict()
    c.cost_span, c.cost_giou, c.cost_class = 10.0, 1.0, 4.0
    c.span_weight, c.giou_weight, c.label_weight, c.saliency_weight = 10.0, 1.0, 4.0, 1.0
    c.eos_coef, c.saliency_margin, c.saliency_tau, c.saliency_num_ranks = 0.1, 0.2, 0.5, 12
    c.quality_weight, c.boundary_weight = 0.0, 0.0  # seed-003 terms off: the reference objective
    c.sim_weight = 0.0  # UVCOM similarity loss off
    return c


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)

    def layer():
        spans = np.stack([rng.uniform(0.1, 0.9, (B, Q)), rng.uniform(0.02, 0.6, (B, Q))], -1)
        return {"pred_logits": rng.normal(size=(B, Q, 2)).astype(np.float32),
                "pred_spans": spans.astype(np.float32)}

    outputs = dict(layer(), aux_outputs=(layer(),),
                   saliency_scores=rng.normal(size=(B, T)).astype(np.float32),
                   saliency_scores_neg=rng.normal(size=(B, T)).astype(np.float32))
    num = np.array([2, 5, 1, 3])
    span_mask = np.arange(W)[None] < num[:, None]
    spans = np.stack([rng.uniform(0.1, 0.9, (B, W)), rng.uniform(0.02, 0.3, (B, W))], -1)
    spans = np.where(span_mask[..., None], spans, 0.0).astype(np.float32)
    ctx = np.array([16, 10, 12, 8])
    frame_mask = np.arange(T)[None] < ctx[:, None]
    labels = np.zeros((B, T), np.float32)
    pos, neg = np.zeros((B, 2), np.int32), np.zeros((B, 2), np.int32)
    for b in range(B):
        labels[b, 2:5] = 1
        pos[b] = [2, 4]
        neg[b] = [0, ctx[b] - 1]
    targets = DetrTargets(spans=spans, span_mask=span_mask, saliency_pos=pos, saliency_neg=neg,
                          saliency_labels=labels)
    return outputs, targets, frame_mask


def test_total_and_terms_match_reference(problem):
    outputs, targets, frame_mask = problem
    criterion = build_criterion(_loss_config())
    total, terms = jax.jit(criterion)(outputs, targets, frame_mask)

    tgt_list = [torch.tensor(targets.spans[b][targets.span_mask[b]]) for b in range(B)]
    ref = {}
    for suffix, layer in [("", outputs), ("_0", outputs["aux_outputs"][0])]:
        r = torch_layer_losses(torch.tensor(layer["pred_logits"]),
                               torch.tensor(layer["pred_spans"]), tgt_list, eos_coef=0.1)
        ref.update({k + suffix: v for k, v in r.items()})
    hinge, rank, negp = torch_saliency(
        torch.tensor(outputs["saliency_scores"]), torch.tensor(outputs["saliency_scores_neg"]),
        torch.tensor(targets.saliency_labels), torch.tensor(frame_mask),
        torch.tensor(targets.saliency_pos).long(), torch.tensor(targets.saliency_neg).long(),
        tau=0.5, num_ranks=12, margin=0.2)
    ref["saliency"] = float(hinge + rank + negp)
    assert set(terms) == set(ref)
    for k, v in ref.items():
        assert float(terms[k]) == pytest.approx(v, rel=1e-4), k
    expected_total = sum(w * (ref[k] + ref.get(k + "_0", 0.0)) for k, w in
                         [("span", 10.0), ("giou", 1.0), ("label", 4.0)]) + ref["saliency"]
    assert float(total) == pytest.approx(expected_total, rel=1e-4)


def test_gradient_is_finite_and_ignores_padding(problem):
    outputs, targets, frame_mask = problem
    criterion = build_criterion(_loss_config())
    grads = jax.grad(lambda o: criterion(o, targets, frame_mask)[0])(outputs)
    for g in jax.tree.leaves(grads):
        assert np.isfinite(np.asarray(g)).all()
    assert (np.asarray(grads["saliency_scores"])[~frame_mask] == 0).all()


def test_weights_must_cover_every_term():
    c = _loss_config()
    crit = build_criterion(c)
    with pytest.raises(ValueError, match="do not match"):
        type(crit)(cost_span=10.0, cost_giou=1.0, cost_class=4.0, weights={"span": 1.0},
                   layer_terms=crit.layer_terms, final_terms=crit.final_terms)
