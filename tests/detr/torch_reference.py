"""Plain torch re-implementations of the QD-DETR (lighthouse SetCriterion) losses."""

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def torch_xx(s):
    return torch.stack([s[..., 0] - s[..., 1] / 2, s[..., 0] + s[..., 1] / 2], -1)


def torch_giou_diag(a, b):
    inter = (torch.min(a[:, 1], b[:, 1]) - torch.max(a[:, 0], b[:, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0]) + (b[:, 1] - b[:, 0]) - inter
    hull = torch.max(a[:, 1], b[:, 1]) - torch.min(a[:, 0], b[:, 0])
    return inter / union - (hull - union) / hull


def torch_giou_pairwise(a, b):
    inter = (torch.min(a[:, None, 1], b[None, :, 1])
             - torch.max(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
    hull = torch.max(a[:, None, 1], b[None, :, 1]) - torch.min(a[:, None, 0], b[None, :, 0])
    return inter / union - (hull - union) / hull


def torch_saliency(scores, scores_neg, labels, mask, pos, neg, *, tau, num_ranks, margin):
    """The reference saliency loss: (hinge, rank contrastive, negative pair)."""
    mask = mask.float()
    loss_neg_pair = (-torch.log(1.0 - torch.sigmoid(scores_neg)) * mask).sum(dim=1).mean()
    s = torch.cat([scores, scores_neg], dim=1)
    lab = torch.cat([labels, torch.zeros_like(labels)], dim=1)
    m2 = mask.repeat([1, 2])
    s = m2 * s + (1.0 - m2) * -1e3
    rank = 0.0
    for r in range(1, num_ranks):
        pos_mask = lab >= r
        if pos_mask.sum() == 0:
            continue
        has = pos_mask.sum(1) > 0
        cur = s / tau
        logits = cur - cur.max(dim=1, keepdim=True)[0]
        log_prob = logits - torch.log(torch.exp(logits).sum(1, keepdim=True) + 1e-6)
        mlp = (pos_mask * log_prob * m2).sum(1) / (pos_mask.sum(1) + 1e-6)
        rank = rank + (-mlp * has).mean()
    rank = rank / num_ranks
    idx = torch.arange(len(scores))
    ps = torch.stack([scores[idx, pos[:, c]] for c in range(pos.shape[1])], 1)
    ns = torch.stack([scores[idx, neg[:, c]] for c in range(pos.shape[1])], 1)
    hinge = torch.clamp(margin + ns - ps, min=0).sum() / (len(ps) * pos.shape[1]) * 2
    return hinge, rank, loss_neg_pair


def torch_layer_loss_terms(logits, spans, targets, *, eos_coef, cost=(10.0, 1.0, 4.0)):
    """Per-sample scipy matching, then span L1 / 1-gIoU / weighted CE as the reference.

    Differentiable in `logits` and `spans` (the matching itself is not, as in the reference);
    works on any device (the cost matrices go to the host for scipy).

    Args:
      logits: [B, Q, 2] tensor; spans: [B, Q, 2] tensor (cxw);
      targets: list of [K_b, 2] tensors (cxw).
    Returns:
      dict span, giou, label (scalar tensors).
    """
    src_all, tgt_all = [], []
    fg = torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)
    with torch.no_grad():
        prob = logits.softmax(-1)
    for b, t in enumerate(targets):
        with torch.no_grad():
            c = (cost[0] * torch.cdist(spans[b], t, p=1) - cost[1] * torch_giou_pairwise(
                torch_xx(spans[b]), torch_xx(t)) - cost[2] * prob[b][:, [0] * len(t)])
        rows, cols = linear_sum_assignment(c.cpu().numpy())
        src_all.append(spans[b][rows])
        tgt_all.append(t[cols])
        fg[b, rows] = 0
    src, tgt = torch.cat(src_all), torch.cat(tgt_all)
    span = F.l1_loss(src, tgt, reduction="none").mean()
    giou = (1 - torch_giou_diag(torch_xx(src), torch_xx(tgt))).mean()
    weight = torch.tensor([1.0, eos_coef], device=logits.device)
    label = F.cross_entropy(logits.transpose(1, 2), fg, weight, reduction="none").mean()
    return {"span": span, "giou": giou, "label": label}


def torch_layer_losses(logits, spans, targets, *, eos_coef, cost=(10.0, 1.0, 4.0)):
    """`torch_layer_loss_terms` as python floats."""
    terms = torch_layer_loss_terms(logits, spans, targets, eos_coef=eos_coef, cost=cost)
    return {k: float(v) for k, v in terms.items()}
