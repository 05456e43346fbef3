"""The QD-DETR training step in plain PyTorch: the reference side of `bench_train_detr.py`.

Used only by the benchmarks. The model is the test oracle `tests/detr/torch_qd_detr.py`
(a transcription of the reference forward pass, parity-tested against the Flax model); this
module adds what the reference's training loop does around it, for the default recipe:

  forward in train mode with the negative-pair pass, per-layer (final + auxiliary) Hungarian
  matching on the host with scipy's `linear_sum_assignment` over the cost
  10 * L1 - 1 * gIoU - 4 * p(foreground), then span L1 (weight 10), 1 - gIoU (1) and
  two-class cross entropy with eos weight 0.1 (4) on every decoder layer, plus the saliency
  losses (hinge margin 0.2 + rank contrastive tau 0.5 over 12 ranks + negative pair, weight 1);
  backward, gradient clipping at norm 0.1, AdamW (lr 1e-4, weight decay 1e-4).

That is the computation of `amr_jax.train.trainer`'s train step with the default config, so
the two rows of the benchmark time the same work.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from torch_reference import torch_giou_diag, torch_giou_pairwise, torch_saliency, torch_xx


def _layer_loss(logits, spans, targets, *, eos_coef):
    """Matched span/gIoU/label loss of one decoder layer; targets: list of [K_b, 2] (cxw)."""
    with torch.no_grad():
        prob = logits.softmax(-1)
        costs = []
        for b, tgt in enumerate(targets):
            cost = (10.0 * torch.cdist(spans[b], tgt, p=1)
                    - torch_giou_pairwise(torch_xx(spans[b]), torch_xx(tgt))
                    - 4.0 * prob[b][:, [0] * len(tgt)])
            costs.append(cost.cpu().numpy())
    rows, cols, batch_idx = [], [], []
    for b, cost in enumerate(costs):
        r, c = linear_sum_assignment(cost)
        rows.append(torch.as_tensor(r))
        cols.append(torch.as_tensor(c))
        batch_idx.append(torch.full((len(r),), b))
    rows, batch_idx = torch.cat(rows).to(spans.device), torch.cat(batch_idx).to(spans.device)
    src = spans[batch_idx, rows]
    tgt = torch.cat([t[c.to(t.device)] for t, c in zip(targets, cols)])
    span = F.l1_loss(src, tgt, reduction="none").mean()
    giou = (1 - torch_giou_diag(torch_xx(src), torch_xx(tgt))).mean()
    fg = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)
    fg[batch_idx, rows] = 0
    weight = torch.tensor([1.0, eos_coef], device=logits.device)
    label = F.cross_entropy(logits.transpose(1, 2), fg, weight, reduction="none").mean()
    return 10.0 * span + giou + 4.0 * label


class TorchTrainStep:
    """One reference-style optimizer step on a fixed batch (numpy arrays of the benchmark).

    Args:
      inputs: DetrInputs (audio [B, T, 770], audio_mask [B, T], text [B, L, 768], text_mask).
      targets: DetrTargets (spans [B, W, 2] cxw, span_mask [B, W], saliency_pos/neg [B, 2],
        saliency_labels [B, T]).
      device: "cpu" or "cuda".
    """

    def __init__(self, model: torch.nn.Module, inputs, targets, device: str = "cpu"):
        self.model = model.to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=1e-4)
        as_t = lambda x, dtype=torch.float32: torch.as_tensor(np.asarray(x), dtype=dtype,
                                                               device=device)
        self.text, self.text_mask = as_t(inputs.text), as_t(inputs.text_mask)
        self.audio, self.audio_mask = as_t(inputs.audio), as_t(inputs.audio_mask)
        span_mask = np.asarray(targets.span_mask)
        self.spans = [as_t(np.asarray(targets.spans)[b][span_mask[b]])
                      for b in range(len(span_mask))]
        self.labels = as_t(targets.saliency_labels)
        self.pos = as_t(targets.saliency_pos, torch.long)
        self.neg = as_t(targets.saliency_neg, torch.long)
        self.device = device

    def __call__(self) -> float:
        out = self.model(self.text, self.text_mask, self.audio, self.audio_mask)
        loss = sum(_layer_loss(layer["pred_logits"], layer["pred_spans"], self.spans,
                               eos_coef=0.1)
                   for layer in [out, *out["aux_outputs"]])
        loss = loss + sum(torch_saliency(out["saliency_scores"], out["saliency_scores_neg"],
                                         self.labels, self.audio_mask, self.pos, self.neg,
                                         tau=0.5, num_ranks=12, margin=0.2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 0.1)
        self.optimizer.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return float(loss.detach())
