"""A plain PyTorch transcription of lighthouse's UVCOM forward pass for audio (test oracle).

Written from lighthouse (`lighthouse/common/uvcom.py`, `CIM.py`) for the audio
configuration: the "video" input is the two endpoint features (`v_feat_dim` 2)
and the CLAP frames come in as `src_aud` (`a_feat_dim` 768); each has its own
input projection and the two are summed. Post-norm layers, PReLU, sine frame
positions, zero text positions, `return_intermediate_dec`, `cross_fusion=False`,
`use_similarity=True`, one `enc_layers` for the t2v, v2t and GKA stacks.

Independent of the Flax model in `amr_jax/detr/uvcom.py`: it keeps the
reference's data flow (one sequence `[global token, audio, text]` through the
cross-attention stacks, sliced by the audio length), its unmasked sums (EM,
random walk, slot attention, text mean), its `torch.linalg.solve` in the random
walk, its mask-then-convolve local convolutions and uses torch's own
`nn.MultiheadAttention`. Only the cross-attention masks differ from the
reference: they are tiled per row (`repeat_interleave`) instead of the
reference's batch-mixing `repeat(nhead, 1, 1)`, as the Flax model does.

Module and parameter names are the reference's (`state_dict()` has its keys).
`epoch` / `negative_choose_epoch` as in the reference: with `epoch >=
neg_choose_epoch` the negative text is the one with the lowest similarity score.
Forward only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torch_qd_detr import (
    MLP,
    DecoderLayer,
    EncoderLayer,
    TextPositions,
    _FeedForwardLayer,
    anchor_sine,
    frame_positions,
    input_projection,
    inverse_sigmoid,
)


def l2_normalize(x):
    """The reference's `calculate_l1_norm` (an L2 normalization)."""
    return x / (torch.norm(x, p=2, dim=-1, keepdim=True) + 1e-9)


def em_rbf(mu, x, iters):
    """`EM_RBF`: mu [B, K, d], x [B, L, d] -> [B, K, d] (unmasked, as the reference)."""
    norm_x = l2_normalize(x)
    for _ in range(iters):
        norm_mu = l2_normalize(mu)
        z = F.softmax(-0.5 * ((norm_mu[:, :, None, :] - norm_x[:, None, :, :]) ** 2).sum(-1)
                      / 1.2 ** 2, dim=1)
        z = z / (z.sum(dim=-1, keepdim=True) + 1e-9)
        mu = torch.einsum("nkt,ntd->nkd", z, x)
    return mu


def bmrw(x, y, w):
    """`BMRW`: x [B, T, d] frames, y [B, K, d] bases -> [B, T, d]."""
    x_norm, y_norm = l2_normalize(x), l2_normalize(y)
    eye = torch.eye(x.size(1), dtype=x.dtype)
    z = F.softmax(torch.einsum("nkd,ntd->nkt", y_norm, x_norm) * 5.0, 1)
    zn = z / (z.sum(dim=-1, keepdim=True) + 1e-9)
    affinity = torch.einsum("nkt,nkd->ntd", z, zn)
    inv = torch.linalg.solve(eye, eye - (w ** 2) * affinity)
    s = w * torch.einsum("nkt,nkd->ntd", z, y) + x
    return (1 - w) * torch.einsum("ntk,nkd->ntd", inv, s)


class CrossLayer(_FeedForwardLayer):
    """T2V (`to_text=False`: audio attends to text) or V2T (text attends to audio) layer."""

    def __init__(self, d, nhead, dim_ff, dropout, to_text: bool):
        super().__init__(d, nhead, dim_ff, dropout)
        self.to_text = to_text

    def forward(self, src, pos, pad, audio_len):
        """src/pos [B, 1 + T + L, d]; pad [B, 1 + T + L] True on padding."""
        audio, text = slice(1, audio_len + 1), slice(audio_len + 1, None)
        q_part, k_part = (text, audio) if self.to_text else (audio, text)
        with_pos = src + pos
        blocked = (pad[:, q_part, None] & pad[:, None, k_part]).repeat_interleave(self.nhead, 0)
        attn = self.self_attn(with_pos[:, q_part], with_pos[:, k_part], src[:, k_part],
                              key_padding_mask=pad[:, k_part], attn_mask=blocked,
                              need_weights=False)[0]
        x = src[:, q_part] + self.dropout1(attn)
        y = self.norm2(x + self.dropout2(self.ffn(self.norm1(x))))
        if self.to_text:
            return torch.cat([src[:, :audio_len + 1], y], dim=1)
        return torch.cat([src[:, :1], y, src[:, text]], dim=1)


class SlotAttention(nn.Module):
    def __init__(self, num_iterations, num_slots, d_model, epsilon=1e-8):
        super().__init__()
        self.num_iterations, self.d_model, self.epsilon = num_iterations, d_model, epsilon
        self.norm_inputs = nn.LayerNorm(d_model)
        self.norm_slots = nn.LayerNorm(d_model)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.norm_out = nn.LayerNorm(d_model)
        self.project_q = nn.Linear(d_model, d_model)
        self.project_k = nn.Linear(d_model, d_model)
        self.project_v = nn.Linear(d_model, d_model)
        self.mlp = MLP(d_model, 1024, d_model, 3)

    def forward(self, inputs, pad, slots):
        """inputs [B, T, d], pad [B, T] True on padding, slots [B, Q, d]."""
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        for _ in range(self.num_iterations):
            prev = slots
            q = self.project_q(self.norm_slots(slots))
            dots = torch.einsum("bid,bjd->bij", q, k) * self.d_model ** -0.5
            dots = dots.masked_fill(pad.unsqueeze(1), -torch.finfo(dots.dtype).max)
            attn = dots.softmax(dim=1)
            attn = attn / (attn.sum(dim=-1, keepdim=True) + self.epsilon)
            slots = prev + torch.einsum("bjd,bij->bid", v, attn)
            slots = slots + self.mlp(self.norm_mlp(slots))
        return self.norm_out(slots)


class Decoder(nn.Module):
    """The CIM decoder: slots + span_embed as queries, every layer's anchor refined."""

    def __init__(self, d, nhead, dim_ff, dropout, num_layers, num_slots):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, nhead, dim_ff, dropout)
                                    for _ in range(num_layers))
        for layer in list(self.layers)[1:]:
            layer.ca_qpos_proj = None
        self.norm = nn.LayerNorm(d)
        self.span_embed = nn.Embedding(num_slots, d)
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(d, d, d, 2)
        self.bbox_embed = MLP(d, d, 2, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        self.ref_anchor_head = MLP(d, d, 1, 2)

    def forward(self, tgt, memory, memory_pad, pos, anchor_logits):
        bsz = memory.shape[0]
        out = tgt + self.span_embed.weight[None]
        anchor = anchor_logits.sigmoid()[None].expand(bsz, -1, -1)
        hs, refs = [], []
        for i, layer in enumerate(self.layers):
            sine = anchor_sine(anchor)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(out)
            sine = sine * (self.ref_anchor_head(out).sigmoid()[..., 0] / anchor[..., 1])[..., None]
            out = layer(out, memory, memory_pad, pos, query_pos, sine)
            refined = (self.bbox_embed(out) + inverse_sigmoid(anchor)).sigmoid()
            refs.append(refined)
            anchor = refined.detach()
            hs.append(self.norm(out))
        return torch.stack(hs), torch.stack(refs)


class CIM(nn.Module):
    def __init__(self, d, nhead, dim_ff, dropout, enc_layers, dec_layers, num_queries,
                 n_txt_mu, n_visual_mu, em_iter):
        super().__init__()
        self.t2v_encoder = nn.Module()
        self.t2v_encoder.layers = nn.ModuleList(CrossLayer(d, nhead, dim_ff, dropout, False)
                                                for _ in range(enc_layers))
        self.processer_for_tgt = SlotAttention(5, num_queries, d)
        self.v2t_encoder = nn.Module()
        self.v2t_encoder.layers = nn.ModuleList(CrossLayer(d, nhead, dim_ff, dropout, True)
                                                for _ in range(enc_layers))
        self.GKA_Module = nn.Module()  # noqa: N815 (reference name)
        self.GKA_Module.layers = nn.ModuleList(EncoderLayer(d, nhead, dim_ff, dropout)
                                               for _ in range(enc_layers))
        self.decoder = Decoder(d, nhead, dim_ff, dropout, dec_layers, num_queries)
        self.feature_proj = nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d))
        self.conv_local = nn.Sequential(nn.Conv1d(d, d, 1), nn.Conv1d(d, d, 3, padding=1),
                                        nn.Conv1d(d, d, 1))
        self.txt_mu = nn.Parameter(torch.randn(n_txt_mu, d))
        self.vid_mu = nn.Parameter(torch.randn(n_visual_mu, d))
        self.sim_vid = MLP(d, 1024, d, 3)
        self.sim_txt = MLP(d, 1024, d, 3)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.d_model, self.em_iter = d, em_iter

    def forward(self, src, pad, anchor_logits, pos, audio_len, epoch, negative_choose_epoch):
        """src/pos [B, 1 + T + L, d]; pad [B, 1 + T + L] True on padding."""
        bs = src.shape[0]
        src_for_vid = src
        for layer in self.t2v_encoder.layers:
            src_for_vid = layer(src_for_vid, pos, pad, audio_len)
        src_for_txt = src
        for layer in self.v2t_encoder.layers:
            src_for_txt = layer(src_for_txt, pos, pad, audio_len)
        src_txt = src_for_txt[:, audio_len + 1:]
        txt_seq = self.feature_proj(src_txt).mean(1)

        reallo_src = src_for_vid[:, 1:audio_len + 1]
        txt_agg = em_rbf(self.txt_mu.repeat(bs, 1, 1), src_txt, self.em_iter)
        vis_agg = em_rbf(self.vid_mu.repeat(bs, 1, 1), reallo_src, self.em_iter)
        vid_pad = pad[:, 1:audio_len + 1]
        win = reallo_src.transpose(1, 2)
        win = win + self.conv_local(win * ~vid_pad[:, None, :])
        win = win.transpose(1, 2)
        sim_g = (F.normalize(vis_agg, p=2, dim=-1)
                 @ F.normalize(txt_agg, p=2, dim=-1).transpose(1, 2)).mean(-1)
        top = torch.sort(sim_g, descending=True)[1][:, :1]
        global_vid = vis_agg[torch.arange(bs)[:, None], top].mean(1)  # [B, d]
        frames = reallo_src + bmrw(win, txt_agg, 0.5)
        src = torch.cat([global_vid[:, None], frames], dim=1)
        pad, pos = pad[:, :audio_len + 1], pos[:, :audio_len + 1]
        memory = src
        for layer in self.GKA_Module.layers:
            memory = layer(memory, pos, pad)
        memory_global, memory_local = memory[:, 0], memory[:, 1:]
        slots = self.processer_for_tgt(memory_local, pad[:, 1:],
                                       txt_seq[:, None].expand(-1, anchor_logits.shape[0], -1))
        hs, refs = self.decoder(slots, memory_local, pad[:, 1:], pos[:, 1:], anchor_logits)

        video = F.normalize(self.sim_vid(memory_global), p=2, dim=-1)
        txt = F.normalize(self.sim_txt(txt_seq), p=2, dim=-1)
        clip = F.normalize(self.sim_vid(src[:, 1:audio_len + 1]), p=2, dim=-1)
        sim = {"CTA_Sim": (txt[:, None] @ clip.transpose(1, 2)).squeeze(1),
               "VLA_Sim": video @ txt.T}
        if epoch is not None and epoch >= negative_choose_epoch:
            chose = torch.softmax(sim["VLA_Sim"], dim=-1)
            per_clip = torch.softmax((clip @ txt.T).mean(dim=1), dim=-1)
            sim["negative_idx"] = torch.sort((chose + per_clip) / 2, descending=False)[1][:, 0]
        return hs, refs, memory_local, memory_global, sim


class TorchUVCOM(nn.Module):
    """The reference UVCOM (audio configuration) in plain PyTorch; see the module docstring."""

    def __init__(self, *, audio_dim=768, tef_dim=2, text_dim=768, d=256, nhead=8, dim_ff=1024,
                 enc_layers=2, dec_layers=2, num_queries=10, max_q_l=32, dropout=0.1,
                 input_dropout=0.5, n_input_proj=2, n_txt_mu=5, n_visual_mu=30, em_iter=5,
                 neg_choose_epoch=80):
        super().__init__()
        self.CIM = CIM(d, nhead, dim_ff, dropout, enc_layers, dec_layers, num_queries,
                       n_txt_mu, n_visual_mu, em_iter)
        self.txt_position_embed = TextPositions(max_q_l, d, input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(num_queries, 2)
        self.input_txt_proj = input_projection(text_dim, d, n_input_proj, input_dropout)
        # The reference keeps two blocks for the video projection ([:2]).
        self.input_vid_proj = input_projection(tef_dim, d, n_input_proj, input_dropout)[:2]
        self.input_audio_proj = input_projection(audio_dim, d, n_input_proj, input_dropout)
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))
        self.d, self.neg_choose_epoch = d, neg_choose_epoch

    def _cim(self, audio, text, vid_mask, txt_mask, pos, epoch):
        bsz = audio.shape[0]
        src = torch.cat([self.global_rep_token.expand(bsz, 1, -1), audio, text], dim=1)
        pos = torch.cat([self.global_rep_pos.expand(bsz, 1, -1), pos], dim=1)
        valid = torch.cat([vid_mask.new_ones(bsz, 1), vid_mask, txt_mask], dim=1).bool()
        return self.CIM(src, ~valid, self.query_embed.weight, pos, audio.shape[1], epoch,
                        self.neg_choose_epoch)

    def _saliency(self, memory, memory_global):
        token = self.saliency_proj2(memory_global)[:, None]
        return (self.saliency_proj1(memory) * token).sum(-1) / math.sqrt(self.d)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, epoch=None, src_aud=None):
        """text [B, L, Dt], text mask [B, L], tef [B, T, 2], audio mask [B, T], CLAP [B, T, Da]."""
        audio = self.input_vid_proj(src_vid) + self.input_audio_proj(src_aud)
        text = self.input_txt_proj(src_txt)
        pos = torch.cat([frame_positions(src_vid_mask, self.d), torch.zeros_like(text)], dim=1)
        hs, refs, memory, memory_global, sim = self._cim(audio, text, src_vid_mask,
                                                         src_txt_mask, pos, epoch)
        logits = self.class_embed(hs)
        spans = (self.span_embed(hs) + inverse_sigmoid(refs)).sigmoid()
        if epoch is not None and epoch >= self.neg_choose_epoch:
            idx = sim["negative_idx"]
        else:
            idx = torch.roll(torch.arange(audio.shape[0]), -1)
        _, _, memory_neg, memory_global_neg, _ = self._cim(audio, text[idx], src_vid_mask,
                                                           src_txt_mask[idx], pos, epoch)
        return {
            "pred_logits": logits[-1],
            "pred_spans": spans[-1],
            "saliency_scores": self._saliency(memory, memory_global),
            "saliency_scores_neg": self._saliency(memory_neg, memory_global_neg),
            "sim_global": sim["VLA_Sim"],
            "sim_clip": sim["CTA_Sim"],
            "negative_index": idx,
            "aux_outputs": [{"pred_logits": a, "pred_spans": b}
                            for a, b in zip(logits[:-1], spans[:-1])],
        }
