"""A plain PyTorch transcription of the reference QD-DETR forward pass (test oracle).

Written from lighthouse @ d095eaa (`lighthouse/common/qd_detr.py`,
`qd_detr_transformer.py`, `attention.py`, `position_encoding.py`) and the DCASE
baseline's `src/qd_detr.py`, for the configuration the reference trains
(post-norm layers, PReLU, sine positions, `return_intermediate_dec`, DAB decoder
with 2-d anchors, `query_scale_type="cond_elewise"`, `modulate_t_attn=True`,
`keep_query_pos=False`, one shared `bbox_embed`). It is independent of the Flax
model in `amr_jax/detr/`: it keeps the reference's data flow (one sequence
`[global token, audio, text]` through the text-to-audio layers, sliced by the
audio length; sequence positions shared by the negative pass) and uses torch's
own `nn.MultiheadAttention` where the reference does.

Module and parameter names are the reference's, so `load_state_dict(strict=True)`
accepts a reference state dict and `state_dict()` produces one; the audio input
projection is called `input_vid_proj` (lighthouse) or `input_aud_proj` (DCASE
baseline). Quirks kept on purpose:

* text-to-audio layer: the feed-forward residual adds to the tensor *before*
  `norm1` (`x = a + attn; y = norm2(x + ffn(norm1(x)))`);
* its attention mask blocks (padded frame, padded token) pairs and is tiled with
  `repeat(nhead, 1, 1)`, so batch row b / head h reads the mask of row
  (b * nhead + h) % B (`t2v_batch_mixing_mask=False` tiles it per row instead,
  which is what the reference computes for a batch of one);
* the anchor sine embedding has a fixed 128 features per coordinate, so the
  model width must be 256;
* the negative pass rolls the projected text (and its mask) by one row and keeps
  the positive pass's positions;
* the decoder's last-layer anchor refinement is computed but unused; each
  prediction is relative to the anchor the layer started from (not detached).

Only the forward pass in `eval()` and `train()` mode; no criterion.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# `gen_sineembed_for_position` in the reference hard-codes 128 frequencies.
ANCHOR_SINE_FEATS = 128


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to >= eps."""
    x = x.clamp(0.0, 1.0)
    return torch.log(x.clamp(min=eps) / (1.0 - x).clamp(min=eps))


def interleaved_sine(x: torch.Tensor, num_feats: int, temperature: float = 10000.0):
    """x [...] -> [..., num_feats]: column 2k is sin(x / t_k), column 2k+1 cos(x / t_k),
    t_k = temperature ** (2k / num_feats)."""
    idx = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / num_feats)
    angles = x[..., None] / dim_t
    return torch.where(idx.long() % 2 == 0, angles.sin(), angles.cos())


def frame_positions(valid: torch.Tensor, dim: int) -> torch.Tensor:
    """`PositionEmbeddingSine(dim, normalize=True)`: valid [B, T] (1 = frame) -> [B, T, dim].

    Position of frame t is cumsum(valid)[t] / (cumsum(valid)[-1] + 1e-6) * 2 pi.
    """
    x = valid.float().cumsum(1)
    x = x / (x[:, -1:] + 1e-6) * (2 * math.pi)
    return interleaved_sine(x, dim)


def anchor_sine(anchors: torch.Tensor) -> torch.Tensor:
    """`gen_sineembed_for_position`: (center, width) [B, Q, 2] -> [B, Q, 256], center first."""
    scaled = anchors * (2 * math.pi)
    return torch.cat([interleaved_sine(scaled[..., 0], ANCHOR_SINE_FEATS),
                      interleaved_sine(scaled[..., 1], ANCHOR_SINE_FEATS)], dim=-1)


class MLP(nn.Module):
    """Linear layers (`layers.i`) with ReLU between them."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, num_layers: int):
        super().__init__()
        widths = [n_in] + [n_hidden] * (num_layers - 1) + [n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i + 1 < len(self.layers):
                x = F.relu(x)
        return x


class LinearLayer(nn.Module):
    """Input projection block: LayerNorm -> Dropout -> Linear (-> ReLU)."""

    def __init__(self, n_in: int, n_out: int, dropout: float, relu: bool):
        super().__init__()
        self.LayerNorm = nn.LayerNorm(n_in)  # noqa: N815 (reference parameter name)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(n_in, n_out))
        self.relu = relu

    def forward(self, x):
        x = self.net(self.LayerNorm(x))
        return F.relu(x) if self.relu else x


def input_projection(n_in: int, d: int, num_layers: int, dropout: float) -> nn.Sequential:
    # The reference lists three blocks with ReLU flags all True but index
    # num_layers - 1, then keeps the first num_layers.
    relu = [i != num_layers - 1 for i in range(3)]
    blocks = [LinearLayer(n_in, d, dropout, relu[0]), LinearLayer(d, d, dropout, relu[1]),
              LinearLayer(d, d, dropout, relu[2])]
    return nn.Sequential(*blocks[:num_layers])


class TextPositions(nn.Module):
    """`TrainablePositionalEncoding`: LayerNorm(x + table[:L]) -> Dropout."""

    def __init__(self, max_len: int, d: int, dropout: float):
        super().__init__()
        self.position_embeddings = nn.Embedding(max_len, d)
        self.LayerNorm = nn.LayerNorm(d)  # noqa: N815
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        ids = torch.arange(x.shape[1], device=x.device)
        return self.dropout(self.LayerNorm(x + self.position_embeddings(ids)[None]))


class _FeedForwardLayer(nn.Module):
    """Parameters shared by the two encoder layer kinds (reference names)."""

    def __init__(self, d: int, nhead: int, dim_ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d, dim_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_ff, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = nn.PReLU()
        self.nhead = nhead

    def ffn(self, x):
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(_FeedForwardLayer):
    """Post-norm self-attention layer over the whole sequence."""

    def forward(self, src, pos, pad):
        """src/pos [B, N, d]; pad [B, N] True on padding."""
        qk = src + pos
        attn = self.self_attn(qk, qk, src, key_padding_mask=pad, need_weights=False)[0]
        x = self.norm1(src + self.dropout1(attn))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class TextToAudioLayer(_FeedForwardLayer):
    """Audio frames attend to text tokens; global token and text pass through."""

    def forward(self, src, pos, pad, audio_len, batch_mixing_mask):
        """src/pos [B, 1 + T + L, d] = [global, audio, text]; pad [B, 1 + T + L]."""
        audio = slice(1, audio_len + 1)
        text = slice(audio_len + 1, None)
        with_pos = src + pos
        blocked = pad[:, audio, None] & pad[:, None, text]  # [B, T, L]
        if batch_mixing_mask:
            blocked = blocked.repeat(self.nhead, 1, 1)  # the reference: entry h*B + b
        else:
            blocked = blocked.repeat_interleave(self.nhead, dim=0)  # entry b*H + h
        attn = self.self_attn(with_pos[:, audio], with_pos[:, text], src[:, text],
                              key_padding_mask=pad[:, text], attn_mask=blocked,
                              need_weights=False)[0]
        x = src[:, audio] + self.dropout1(attn)
        y = self.norm2(x + self.dropout2(self.ffn(self.norm1(x))))
        return torch.cat([src[:, :1], y, src[:, text]], dim=1)


class BareAttention(nn.Module):
    """The reference's `MultiheadAttention` without input projections (decoder).

    Query/key width sets the head size and scaling; values are `v_dim` wide.
    """

    def __init__(self, qk_dim: int, nhead: int, dropout: float, v_dim: int):
        super().__init__()
        self.out_proj = nn.Linear(v_dim, v_dim)
        self.nhead = nhead
        self.dropout = dropout

    def forward(self, q, k, v, pad=None):
        """q [B, Lq, E], k [B, Lk, E], v [B, Lk, V]; pad [B, Lk] True on padding."""
        (b, lq, e), lk, h = q.shape, k.shape[1], self.nhead
        q = q.reshape(b, lq, h, e // h).transpose(1, 2) * (e // h) ** -0.5
        k = k.reshape(b, lk, h, e // h).transpose(1, 2)
        v = v.reshape(b, lk, h, v.shape[-1] // h).transpose(1, 2)
        logits = q @ k.transpose(-1, -2)  # [B, H, Lq, Lk]
        if pad is not None:
            logits = logits.masked_fill(pad[:, None, None, :], float("-inf"))
        weights = F.dropout(logits.softmax(-1), self.dropout, self.training)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(b, lq, -1))


def _per_head_concat(a, b, nhead):
    """[B, N, d] x2 -> [B, N, 2d], head i = (a_i, b_i)."""
    bsz, n, d = a.shape
    return torch.cat([a.reshape(bsz, n, nhead, d // nhead),
                      b.reshape(bsz, n, nhead, d // nhead)], dim=-1).reshape(bsz, n, 2 * d)


class DecoderLayer(nn.Module):
    """Conditional-DETR decoder layer with separate content / position projections."""

    def __init__(self, d: int, nhead: int, dim_ff: int, dropout: float):
        super().__init__()
        for name in ("sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj",
                     "sa_v_proj"):
            setattr(self, name, nn.Linear(d, d))
        self.self_attn = BareAttention(d, nhead, dropout, v_dim=d)
        self.norm1 = nn.LayerNorm(d)
        self.dropout1 = nn.Dropout(dropout)
        for name in ("ca_qcontent_proj", "ca_qpos_proj", "ca_kcontent_proj", "ca_kpos_proj",
                     "ca_v_proj", "ca_qpos_sine_proj"):
            setattr(self, name, nn.Linear(d, d))
        self.cross_attn = BareAttention(2 * d, nhead, dropout, v_dim=d)
        self.linear1 = nn.Linear(d, dim_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_ff, d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = nn.PReLU()
        self.nhead = nhead

    def forward(self, tgt, memory, memory_pad, pos, query_pos, query_sine_embed):
        """tgt/query_pos/query_sine_embed [B, Q, d]; memory/pos [B, T, d]; memory_pad [B, T]."""
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, self.sa_v_proj(tgt))))

        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        k_pos = self.ca_kpos_proj(pos)
        if self.ca_qpos_proj is not None:  # the first layer only (keep_query_pos=False)
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q = _per_head_concat(q, self.ca_qpos_sine_proj(query_sine_embed), self.nhead)
        k = _per_head_concat(k, k_pos, self.nhead)
        attn = self.cross_attn(q, k, self.ca_v_proj(memory), memory_pad)
        tgt = self.norm2(tgt + self.dropout2(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class Decoder(nn.Module):
    """DAB-style decoder: anchors (center, width) refined layer by layer."""

    def __init__(self, d: int, nhead: int, dim_ff: int, dropout: float, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, nhead, dim_ff, dropout)
                                    for _ in range(num_layers))
        for layer in list(self.layers)[1:]:
            layer.ca_qpos_proj = None  # removes the submodule (and its state-dict keys)
        self.norm = nn.LayerNorm(d)
        self.query_scale = MLP(d, d, d, 2)
        self.ref_point_head = MLP(d, d, d, 2)
        self.bbox_embed = MLP(d, d, 2, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        self.ref_anchor_head = MLP(d, d, 1, 2)

    def forward(self, memory, memory_pad, pos, anchor_logits):
        """memory/pos [B, T, d]; anchor_logits [Q, 2] -> hs [N, B, Q, d], anchors [N, B, Q, 2]."""
        bsz = memory.shape[0]
        anchor = anchor_logits.sigmoid()[None].expand(bsz, -1, -1)
        out = memory.new_zeros(bsz, anchor_logits.shape[0], memory.shape[-1])
        hs, anchors = [], [anchor]
        for i, layer in enumerate(self.layers):
            sine = anchor_sine(anchor)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(out)
            sine = sine * (self.ref_anchor_head(out).sigmoid() / anchor[..., 1:2])
            out = layer(out, memory, memory_pad, pos, query_pos, sine)
            refined = (self.bbox_embed(out) + inverse_sigmoid(anchor)).sigmoid()
            if i + 1 < len(self.layers):
                anchors.append(refined)
            anchor = refined.detach()
            hs.append(self.norm(out))
        return torch.stack(hs), torch.stack(anchors)


class Transformer(nn.Module):
    def __init__(self, d: int, nhead: int, dim_ff: int, dropout: float, t2v_layers: int,
                 enc_layers: int, dec_layers: int):
        super().__init__()
        self.t2v_encoder = nn.Module()
        self.t2v_encoder.layers = nn.ModuleList(TextToAudioLayer(d, nhead, dim_ff, dropout)
                                                for _ in range(t2v_layers))
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(d, nhead, dim_ff, dropout)
                                            for _ in range(enc_layers))
        self.decoder = Decoder(d, nhead, dim_ff, dropout, dec_layers)
        # The reference re-draws every >1-d transformer parameter (this also
        # overwrites bbox_embed's zero last weight; its bias stays zero).
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # Its stacks are deep copies of one layer: equal vectors at init.
        for stack in (self.t2v_encoder.layers, self.encoder.layers, self.decoder.layers):
            first = dict(stack[0].named_parameters())
            with torch.no_grad():
                for layer in list(stack)[1:]:
                    for name, p in layer.named_parameters():
                        if p.dim() == 1:
                            p.copy_(first[name])
        self.d_model = d

    def forward(self, src, pad, pos, anchor_logits, audio_len, batch_mixing_mask):
        """src/pos [B, 1 + T + L, d]; pad [B, 1 + T + L] True on padding.

        Returns hs, anchors (decoder), memory [B, T, d], memory_global [B, d].
        """
        for layer in self.t2v_encoder.layers:
            src = layer(src, pos, pad, audio_len, batch_mixing_mask)
        keep = audio_len + 1  # the text tokens are dropped after the text-to-audio layers
        src, pad, pos = src[:, :keep], pad[:, :keep], pos[:, :keep]
        for layer in self.encoder.layers:
            src = layer(src, pos, pad)
        memory_global, memory = src[:, 0], src[:, 1:]
        hs, anchors = self.decoder(memory, pad[:, 1:], pos[:, 1:], anchor_logits)
        return hs, anchors, memory, memory_global


class TorchQDDETR(nn.Module):
    """The reference QD-DETR (audio configuration) in plain PyTorch.

    Args:
      audio_proj: "input_vid_proj" (lighthouse) or "input_aud_proj" (DCASE baseline).
      t2v_batch_mixing_mask: the reference's `repeat(nhead, 1, 1)` text-to-audio mask
        (True, as the reference) or the per-row mask (False).
    """

    def __init__(self, *, audio_dim=770, text_dim=768, d=256, nhead=8, dim_ff=1024,
                 t2v_layers=2, enc_layers=2, dec_layers=2, num_queries=10, max_q_l=32,
                 dropout=0.1, input_dropout=0.5, n_input_proj=2, use_txt_pos=False,
                 audio_proj="input_vid_proj", t2v_batch_mixing_mask=True):
        super().__init__()
        if d != 2 * ANCHOR_SINE_FEATS:
            raise ValueError(f"the reference's anchor sine embedding needs d=256, got {d}")
        self.transformer = Transformer(d, nhead, dim_ff, dropout, t2v_layers, enc_layers,
                                       dec_layers)
        self.txt_position_embed = TextPositions(max_q_l, d, input_dropout)
        self.span_embed = MLP(d, d, 2, 3)
        self.class_embed = nn.Linear(d, 2)
        self.query_embed = nn.Embedding(num_queries, 2)
        self.input_txt_proj = input_projection(text_dim, d, n_input_proj, input_dropout)
        self.audio_proj = audio_proj
        self.add_module(audio_proj, input_projection(audio_dim, d, n_input_proj, input_dropout))
        self.saliency_proj1 = nn.Linear(d, d)
        self.saliency_proj2 = nn.Linear(d, d)
        self.global_rep_token = nn.Parameter(torch.randn(d))
        self.global_rep_pos = nn.Parameter(torch.randn(d))
        self.d = d
        self.use_txt_pos = use_txt_pos
        self.t2v_batch_mixing_mask = t2v_batch_mixing_mask

    def _encode(self, audio, text, valid, pos):
        """One transformer pass over [global, audio, text]; valid [B, T + L] (1 = valid)."""
        bsz = audio.shape[0]
        src = torch.cat([self.global_rep_token.expand(bsz, 1, -1), audio, text], dim=1)
        pos = torch.cat([self.global_rep_pos.expand(bsz, 1, -1), pos], dim=1)
        valid = torch.cat([valid.new_ones(bsz, 1), valid], dim=1).bool()
        return self.transformer(src, ~valid, pos, self.query_embed.weight, audio.shape[1],
                                self.t2v_batch_mixing_mask)

    def _saliency(self, memory, memory_global):
        token = self.saliency_proj2(memory_global)[:, None]
        return (self.saliency_proj1(memory) * token).sum(-1) / math.sqrt(self.d)

    def forward(self, src_txt, src_txt_mask, src_vid, src_vid_mask, src_aud=None):
        """Reference signature: text [B, L, Dt], text mask [B, L], audio rows [B, T, Da]
        (lighthouse passes tef as `src_vid` and the CLAP frames as `src_aud`, which are
        concatenated `[tef, clap]`; the DCASE baseline passes `[clap, tef]` as one
        tensor), audio mask [B, T]. Masks are 1 on valid entries.
        """
        if src_aud is not None:
            src_vid = torch.cat([src_vid, src_aud], dim=2)
        audio = getattr(self, self.audio_proj)(src_vid)
        text = self.input_txt_proj(src_txt)
        audio_pos = frame_positions(src_vid_mask, self.d)
        text_pos = self.txt_position_embed(text) if self.use_txt_pos else torch.zeros_like(text)
        pos = torch.cat([audio_pos, text_pos], dim=1)

        valid = torch.cat([src_vid_mask, src_txt_mask], dim=1)
        hs, anchors, memory, memory_global = self._encode(audio, text, valid, pos)
        logits = self.class_embed(hs)
        spans = (self.span_embed(hs) + inverse_sigmoid(anchors)).sigmoid()

        # Negative pairs: row i's audio with row i+1's (projected) text; same positions.
        text_neg = torch.roll(text, -1, dims=0)
        valid_neg = torch.cat([src_vid_mask, torch.roll(src_txt_mask, -1, dims=0)], dim=1)
        _, _, memory_neg, memory_global_neg = self._encode(audio, text_neg, valid_neg, pos)
        return {
            "pred_logits": logits[-1],
            "pred_spans": spans[-1],
            "saliency_scores": self._saliency(memory, memory_global),
            "saliency_scores_neg": self._saliency(memory_neg, memory_global_neg),
            "aux_outputs": [{"pred_logits": a, "pred_spans": b}
                            for a, b in zip(logits[:-1], spans[:-1])],
        }
