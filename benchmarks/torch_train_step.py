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

from torch_reference import torch_layer_loss_terms, torch_saliency


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
        loss = 0.0
        for layer in [out, *out["aux_outputs"]]:
            terms = torch_layer_loss_terms(layer["pred_logits"], layer["pred_spans"], self.spans,
                                           eos_coef=0.1)
            loss = loss + 10.0 * terms["span"] + terms["giou"] + 4.0 * terms["label"]
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
