"""The QD-DETR training objective: matching + weighted sum of losses.

Two kinds of terms, both open to extension by adding entries (no branching on
names):
  * layer terms `fn(layer_outputs, targets, matching, frame_mask) -> scalar`,
    evaluated on the final decoder layer and, re-matched, on every auxiliary
    layer (`outputs["aux_outputs"]`);
  * final terms `fn(outputs, targets, frame_mask) -> scalar`, evaluated once
    on the full model outputs (saliency).
The total is `sum_name weights[name] * term`, with the same weight for a
layer term on every layer (the reference weight dict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from amr_jax.detr import boundary, losses, similarity
from amr_jax.detr.inputs import DetrTargets
from amr_jax.detr.matcher import Matching, hungarian_match

LayerTerm = Callable[[Mapping[str, jax.Array], DetrTargets, Matching, jax.Array], jax.Array]
FinalTerm = Callable[[Mapping[str, jax.Array], DetrTargets, jax.Array], jax.Array]


def _safe_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return values.sum() / jnp.maximum(mask.sum(), 1)


def matched_spans(pred_spans: jax.Array, matching: Matching) -> jax.Array:
    """[B, Q, 2] predictions -> [B, W, 2] the prediction matched to each target slot."""
    return jnp.take_along_axis(pred_spans, matching.src_for_target[..., None], axis=1)


# eq=False: hashed by identity, so a criterion can be a static jit argument.
@dataclasses.dataclass(frozen=True, eq=False)
class SetCriterion:
    """Weighted QD-DETR objective.

    Attributes:
      cost_span, cost_giou, cost_class: matching cost weights.
      weights: name -> weight of every term (layer and final terms).
      layer_terms: name -> layer term (see module docstring).
      final_terms: name -> final term.
    """

    cost_span: float
    cost_giou: float
    cost_class: float
    weights: Mapping[str, float]
    layer_terms: Mapping[str, LayerTerm]
    final_terms: Mapping[str, FinalTerm]

    def __post_init__(self):
        names = set(self.layer_terms) | set(self.final_terms)
        if names != set(self.weights):
            raise ValueError(f"loss weights {sorted(self.weights)} do not match the terms "
                             f"{sorted(names)}")

    def match(self, layer_outputs: Mapping[str, jax.Array], targets: DetrTargets) -> Matching:
        return hungarian_match(layer_outputs["pred_logits"], layer_outputs["pred_spans"],
                               targets.spans, targets.span_mask, cost_span=self.cost_span,
                               cost_giou=self.cost_giou, cost_class=self.cost_class)

    def __call__(self, outputs: Mapping, targets: DetrTargets, frame_mask: jax.Array
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Total loss and its unweighted terms.

        Args:
          outputs: model outputs (see `amr_jax.detr.model`): pred_logits [B, Q, 2],
            pred_spans [B, Q, 2], saliency_scores [B, T], saliency_scores_neg
            [B, T], aux_outputs (tuple of dicts with pred_logits / pred_spans).
          targets: `DetrTargets`.
          frame_mask: [B, T] bool valid audio frames.

        Returns:
          (scalar total, dict name -> scalar term); auxiliary layer i's terms are
          named `<name>_<i>`.
        """
        terms = {}
        layers = [("", outputs)] + [(f"_{i}", aux) for i, aux in
                                    enumerate(outputs.get("aux_outputs", ()))]
        total = jnp.zeros((), jnp.float32)
        for suffix, layer in layers:
            matching = self.match(layer, targets)
            for name, fn in self.layer_terms.items():
                value = fn(layer, targets, matching, frame_mask)
                terms[name + suffix] = value
                total = total + self.weights[name] * value
        for name, fn in self.final_terms.items():
            value = fn(outputs, targets, frame_mask)
            terms[name] = value
            total = total + self.weights[name] * value
        return total, terms


def span_term(layer, targets: DetrTargets, matching: Matching, frame_mask) -> jax.Array:
    del frame_mask
    pred = matched_spans(layer["pred_spans"], matching)
    return _safe_mean(losses.span_l1(pred, targets.spans, matching.target_mask),
                      matching.target_mask)


def giou_term(layer, targets: DetrTargets, matching: Matching, frame_mask) -> jax.Array:
    del frame_mask
    pred = matched_spans(layer["pred_spans"], matching)
    return _safe_mean(losses.span_giou(pred, targets.spans, matching.target_mask),
                      matching.target_mask)


def make_label_term(*, eos_coef: float) -> LayerTerm:
    def label_term(layer, targets, matching: Matching, frame_mask) -> jax.Array:
        del targets, frame_mask
        return losses.label_ce(layer["pred_logits"], matching.query_matched,
                               eos_coef=eos_coef).mean()
    return label_term


def make_saliency_term(*, margin: float, tau: float, num_ranks: int) -> FinalTerm:
    def saliency_term(outputs, targets: DetrTargets, frame_mask) -> jax.Array:
        scores, scores_neg = outputs["saliency_scores"], outputs["saliency_scores_neg"]
        hinge = losses.saliency_hinge(scores, targets.saliency_pos, targets.saliency_neg,
                                      margin=margin)
        rank = losses.saliency_rank_contrastive(scores, scores_neg, targets.saliency_labels,
                                                frame_mask, tau=tau, num_ranks=num_ranks)
        neg = losses.saliency_negative_pair(scores_neg, frame_mask)
        return (hinge + rank + neg).mean()
    return saliency_term


def quality_term(layer, targets: DetrTargets, matching: Matching, frame_mask) -> jax.Array:
    """Mean |q - IoU| over matched pairs (needs `pred_quality` from the model's quality head)."""
    del frame_mask
    if "pred_quality" not in layer:
        raise KeyError("the quality loss needs `pred_quality` in the model outputs: set "
                       "config.model.quality_head = True")
    pred = matched_spans(layer["pred_spans"], matching)
    quality = jnp.take_along_axis(layer["pred_quality"], matching.src_for_target, axis=1)
    return _safe_mean(losses.quality_l1(quality, pred, targets.spans, matching.target_mask),
                      matching.target_mask)


def make_boundary_term(*, candidate_iou: tuple[float, float], negative_iou: tuple[float, float],
                       margin: float, factors: tuple[float, ...], eps: float) -> FinalTerm:
    """Boundary hard negatives on the final decoder layer (`amr_jax.detr.boundary`)."""
    def boundary_term(outputs, targets: DetrTargets, frame_mask) -> jax.Array:
        del frame_mask
        loss, qualifies = boundary.boundary_candidate_losses(
            outputs["pred_spans"], targets.spans, targets.span_mask,
            candidate_iou=candidate_iou, negative_iou=negative_iou, margin=margin,
            factors=factors)
        prob_fg = jax.nn.softmax(outputs["pred_logits"], axis=-1)[..., 0]
        return boundary.score_weighted_mean(loss, qualifies, prob_fg, eps=eps)
    return boundary_term


def similarity_term(outputs, targets: DetrTargets, frame_mask) -> jax.Array:
    """UVCOM's multi-aspect contrastive similarity loss (`amr_jax.detr.similarity`)."""
    if "sim_global" not in outputs:
        raise KeyError("the similarity loss needs `sim_global` / `sim_clip` in the model "
                       "outputs: set config.model.backbone = 'uvcom'")
    return similarity.similarity_loss(outputs["sim_global"], outputs["sim_clip"],
                                      targets.spans[:, 0], frame_mask)


def build_criterion(config: ml_collections.ConfigDict) -> SetCriterion:
    """The QD-DETR objective from the `loss` sub-config.

    The reference terms (span, giou, label on every decoder layer; saliency)
    are always present. The seed-003 terms are added when their weight is
    positive (a zero weight leaves the reference objective untouched):
    `quality` (layer term, every layer) and `boundary` (final layer only); UVCOM's
    `sim` (final term, needs the UVCOM backbone) likewise.
    """
    weights = {"span": config.span_weight, "giou": config.giou_weight,
               "label": config.label_weight, "saliency": config.saliency_weight}
    layer_terms = {"span": span_term, "giou": giou_term,
                   "label": make_label_term(eos_coef=config.eos_coef)}
    final_terms = {"saliency": make_saliency_term(
        margin=config.saliency_margin, tau=config.saliency_tau,
        num_ranks=config.saliency_num_ranks)}
    if config.quality_weight > 0:
        weights["quality"] = config.quality_weight
        layer_terms["quality"] = quality_term
    if config.sim_weight > 0:
        weights["sim"] = config.sim_weight
        final_terms["sim"] = similarity_term
    if config.boundary_weight > 0:
        weights["boundary"] = config.boundary_weight
        final_terms["boundary"] = make_boundary_term(
            candidate_iou=(config.boundary_candidate_iou_min, config.boundary_candidate_iou_max),
            negative_iou=(config.boundary_negative_iou_min, config.boundary_negative_iou_max),
            margin=config.boundary_margin,
            factors=boundary.boundary_factors(config.boundary_num_factors,
                                              config.boundary_factor_step),
            eps=config.boundary_eps)
    return SetCriterion(cost_span=config.cost_span, cost_giou=config.cost_giou,
                        cost_class=config.cost_class, weights=weights, layer_terms=layer_terms,
                        final_terms=final_terms)
