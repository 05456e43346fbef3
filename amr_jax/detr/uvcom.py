"""UVCOM for audio moment retrieval (DESIGN 9.6), in Flax NNX.

UVCOM (lighthouse `lighthouse/common/uvcom.py` and `CIM.py`, configured for
audio: the "video" input is the two temporal endpoint features and the CLAP
frames come in as the separate audio input, each with its own input projection,
summed) replaces QD-DETR's encoder with the Comprehensive Integration Module:

    audio a [B, T, d] = proj_tef(tef) + proj_audio(clap)   text s [B, L, d]
      │ t2v_layers x TextToAudioLayer (audio attends to text)          -> a'
      │ v2t_layers x TextToAudioLayer with roles swapped (text -> audio) -> s'
      │   text embedding  e = masked_mean(feature_proj(s'))              [B, d]
      │ DBIA: EM attention (em_iter) of n_txt_mu text bases over s' and
      │   n_visual_mu audio bases over a' (amr_jax.detr.em_attention)
      │ LRP: local convolutions  w = a' + conv(a')      (1, 3, 1 kernels)
      │ global token := the audio basis most similar to the text bases
      │ a'' = a' + random_walk(w, text bases)
      │ GKA: enc_layers x EncoderLayer over [global token ‖ a'']
      ▼
    memory_global [B, d], memory [B, T, d] ──► saliency (as QD-DETR)
      │ slot attention (5 iterations) of Q slots initialized to e over memory
      │ decoder = QD-DETR's DAB decoder, queries start at slots + learned
      │   span embedding, every layer's anchor refined (also the last)
      ▼
    hs [N_dec, B, Q, d] ──► class_embed, span_embed + inverse_sigmoid(refined anchor)

In training it also returns the similarities of the multi-aspect contrastive
loss (`sim_global` [B, B], `sim_clip` [B, T]; amr_jax.detr.similarity) and the
negative-pair saliency, whose text is the row's successor (as QD-DETR) or, when
`select_negatives` is true (the trainer sets it from `train.neg_choose_epoch`),
the least similar other text of the batch.

Reused from QD-DETR: input projections, the post-norm encoder and cross-
attention layers, the decoder layers, anchor sine embedding, positions, heads.

Deviations from the reference, all so that padded rows give the unpadded result
(without padding every one of them is the reference's computation):
* masked text mean, masked EM / random walk / slot attention (padded frames and
  tokens get zero weight; the reference sums over them);
* the local convolutions zero padded frames before *each* convolution (the
  reference only before the first, so conv biases leak into valid frames);
* the cross-attention masks are per row (the reference tiles them with
  `repeat(nhead, 1, 1)`, which mixes batch rows; see `model.reference_t2v_attn_mask`);
* the negative pass skips slot attention and the decoder, whose outputs the
  reference computes and discards.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from amr_jax.detr import em_attention, layers, similarity
from amr_jax.detr.model import (
    Decoder,
    EncoderLayer,
    TextPositionEncoding,
    TextToAudioLayer,
    check_inputs,
    _tie_initial_vectors,
    inverse_sigmoid,
)
from amr_jax.detr.position import anchor_sine_embedding, masked_sine_positions
from amr_jax.norms import l2_normalize

# Hidden width of the slot-attention and similarity MLPs, fixed in the reference.
AUX_MLP_HIDDEN = 1024
# Iterations of the slot attention that initializes the decoder queries (fixed in the reference).
SLOT_ITERS = 5
SLOT_EPS = 1e-8
# Random-walk weight of the reference's `BMRW(win_src, txt_bases, 0.5)`.
WALK_WEIGHT = 0.5
TEF_DIM = 2
CONV_KERNELS = (1, 3, 1)


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """[B, N, d] mean over the True entries of mask [B, N] -> [B, d]."""
    w = mask.astype(x.dtype)[..., None]
    return (x * w).sum(axis=1) / jnp.maximum(w.sum(axis=1), 1.0)


class SlotAttention(nnx.Module):
    """Slot attention (softmax over slots, then normalized over frames), `SLOT_ITERS` rounds."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.dim = dim
        self.norm_inputs = layers.layer_norm(dim, rngs=rngs)
        self.norm_slots = layers.layer_norm(dim, rngs=rngs)
        self.norm_mlp = layers.layer_norm(dim, rngs=rngs)
        self.norm_out = layers.layer_norm(dim, rngs=rngs)
        self.project_q = layers.linear(dim, dim, xavier=True, rngs=rngs)
        self.project_k = layers.linear(dim, dim, xavier=True, rngs=rngs)
        self.project_v = layers.linear(dim, dim, xavier=True, rngs=rngs)
        self.mlp = layers.MLP(dim, AUX_MLP_HIDDEN, dim, 3, xavier=True, rngs=rngs)

    def __call__(self, inputs: jax.Array, mask: jax.Array, slots: jax.Array) -> jax.Array:
        """inputs [B, T, d], mask [B, T] (True = valid), slots [B, Q, d] -> [B, Q, d]."""
        inputs = self.norm_inputs(inputs)
        k, v = self.project_k(inputs), self.project_v(inputs)
        valid = mask.astype(inputs.dtype)[:, None, :]

        def round_(_, slots):
            q = self.project_q(self.norm_slots(slots))
            dots = jnp.einsum("bqd,btd->bqt", q, k) * self.dim**-0.5
            attn = jax.nn.softmax(dots, axis=1) * valid  # competition among slots
            attn = attn / (attn.sum(axis=-1, keepdims=True) + SLOT_EPS)
            slots = slots + jnp.einsum("bqt,btd->bqd", attn, v)
            return slots + self.mlp(self.norm_mlp(slots))

        # A loop, not unrolled: one copy of the round to compile (forward and backward).
        return self.norm_out(jax.lax.fori_loop(0, SLOT_ITERS, round_, slots))


class LocalConv(nnx.Module):
    """Three 1-d convolutions (kernels 1, 3, 1; zero padding), padded frames zeroed before each."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.convs = nnx.List([
            nnx.Conv(dim, dim, kernel_size=(k,), padding="SAME",
                     kernel_init=layers.xavier_uniform,
                     bias_init=layers.torch_default_bias(dim * k), rngs=rngs)
            for k in CONV_KERNELS])

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x [B, T, d], mask [B, T] -> [B, T, d] (zero-padded past the valid frames)."""
        valid = mask.astype(x.dtype)[..., None]
        for conv in self.convs:
            x = conv(x * valid)
        return x


class UVCOMDecoder(Decoder):
    """QD-DETR's DAB decoder started from given queries plus a learned per-query embedding.

    Differs from `Decoder` as the reference does: the first layer's input is
    `tgt + span_embed` instead of zeros, and every layer's prediction is
    relative to the anchor that layer refined (`sigmoid(bbox_embed(o) +
    inverse_sigmoid(a))`, not detached), the last layer's included.
    """

    def __init__(self, dim, num_heads, dim_feedforward, num_layers, *, num_queries: int,
                 dropout, activation, modulate_t_attn, keep_query_pos, rngs: nnx.Rngs):
        super().__init__(dim, num_heads, dim_feedforward, num_layers, dropout=dropout,
                         activation=activation, modulate_t_attn=modulate_t_attn,
                         keep_query_pos=keep_query_pos, rngs=rngs)
        self.span_embed = nnx.Param(layers.xavier_uniform(rngs.params(), (num_queries, dim)))

    def __call__(self, tgt, memory, memory_mask, memory_pos, anchor_logits, *,
                 deterministic: bool, rngs=None):
        """tgt [B, Q, d]; memory/memory_pos [B, T, d]; memory_mask [B, T]; anchor_logits [Q, 2].

        Returns hs [N_dec, B, Q, d] and refined anchors [N_dec, B, Q, 2].
        """
        batch, num_queries = tgt.shape[:2]
        anchor = jnp.broadcast_to(jax.nn.sigmoid(anchor_logits), (batch, num_queries, 2))
        output = tgt + self.span_embed[...]
        hs, anchors = [], []
        for i, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(anchor, num_feats=self.dim // 2)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(output)
            if self.ref_anchor_head is not None:
                sine = sine * (jax.nn.sigmoid(self.ref_anchor_head(output)) / anchor[..., 1:2])
            output = layer(output, memory, memory_mask, memory_pos, query_pos, sine,
                           deterministic=deterministic, rngs=rngs)
            hs.append(self.norm(output))
            refined = jax.nn.sigmoid(self.bbox_embed(output) + inverse_sigmoid(anchor))
            anchors.append(refined)
            anchor = jax.lax.stop_gradient(refined)
        return jnp.stack(hs), jnp.stack(anchors)


class UVCOM(nnx.Module):
    """UVCOM for audio; see the module docstring. Same call convention as `QDDETR`."""

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        c = config
        d = c.hidden_dim
        if d % c.nheads:
            raise ValueError(f"hidden_dim={d} must be divisible by nheads={c.nheads}")
        if c.audio_dim <= TEF_DIM:
            raise ValueError(f"audio_dim={c.audio_dim} must hold the audio features and the "
                             f"{TEF_DIM} endpoint features")
        self.hidden_dim = d
        self.audio_dim, self.text_dim = c.audio_dim, c.text_dim
        self.tef_first = c.tef_first
        self.use_txt_pos = c.use_txt_pos
        self.em_iter = c.em_iter

        proj = dict(dropout=c.input_dropout, rngs=rngs)
        # The reference keeps two blocks for the "video" (tef) projection whatever n_input_proj.
        self.input_tef_proj = layers.InputProjection(TEF_DIM, d, num_layers=2, **proj)
        self.input_audio_proj = layers.InputProjection(c.audio_dim - TEF_DIM, d,
                                                       num_layers=c.n_input_proj, **proj)
        self.input_text_proj = layers.InputProjection(c.text_dim, d, num_layers=c.n_input_proj,
                                                      **proj)
        self.text_position_embed = TextPositionEncoding(c.max_q_l, d, dropout=c.input_dropout,
                                                        rngs=rngs)
        # The reference's global token only rides through the cross-attention layers
        # (never attended) before the selected audio basis replaces it: it has no
        # effect, but it is a parameter of the reference model.
        self.global_token = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.global_pos = nnx.Param(jax.random.normal(rngs.params(), (d,)))

        layer_kw = dict(dropout=c.dropout, activation=c.activation, rngs=rngs)
        self.t2v_layers = nnx.List([TextToAudioLayer(d, c.nheads, c.dim_feedforward, **layer_kw)
                                    for _ in range(c.t2v_layers)])
        _tie_initial_vectors(self.t2v_layers)
        self.v2t_layers = nnx.List([TextToAudioLayer(d, c.nheads, c.dim_feedforward, **layer_kw)
                                    for _ in range(c.t2v_layers)])
        _tie_initial_vectors(self.v2t_layers)
        self.gka_layers = nnx.List([EncoderLayer(d, c.nheads, c.dim_feedforward, **layer_kw)
                                    for _ in range(c.enc_layers)])
        _tie_initial_vectors(self.gka_layers)
        self.slot_attention = SlotAttention(d, rngs=rngs)
        self.decoder = UVCOMDecoder(d, c.nheads, c.dim_feedforward, c.dec_layers,
                                    num_queries=c.num_queries, modulate_t_attn=c.modulate_t_attn,
                                    keep_query_pos=c.keep_query_pos, **layer_kw)
        self.feature_proj = layers.linear(d, d, xavier=True, rngs=rngs)
        self.feature_norm = layers.layer_norm(d, rngs=rngs)
        self.conv_local = LocalConv(d, rngs=rngs)
        self.text_bases = nnx.Param(layers.xavier_uniform(rngs.params(), (c.n_txt_mu, d)))
        self.audio_bases = nnx.Param(layers.xavier_uniform(rngs.params(), (c.n_visual_mu, d)))
        self.sim_audio = layers.MLP(d, AUX_MLP_HIDDEN, d, 3, xavier=True, rngs=rngs)
        self.sim_text = layers.MLP(d, AUX_MLP_HIDDEN, d, 3, xavier=True, rngs=rngs)

        self.query_embed = nnx.Param(jax.random.normal(rngs.params(), (c.num_queries, 2)))
        self.class_embed = layers.linear(d, 2, xavier=False, rngs=rngs)
        self.span_embed = layers.MLP(d, d, 2, 3, xavier=False, rngs=rngs)
        self.saliency_proj1 = layers.linear(d, d, xavier=False, rngs=rngs)
        self.saliency_proj2 = layers.linear(d, d, xavier=False, rngs=rngs)
        self.quality_embed = (
            layers.MLP(d, d, 1, 2, xavier=False, rngs=rngs) if c.quality_head else None)

    def _split_audio(self, audio: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[B, T, audio_dim] row -> (tef [B, T, 2], audio features [B, T, audio_dim - 2])."""
        if self.tef_first:
            return audio[..., :TEF_DIM], audio[..., TEF_DIM:]
        return audio[..., -TEF_DIM:], audio[..., :-TEF_DIM]

    def integrate(self, audio, audio_pos, audio_mask, text, text_pos, text_mask, *,
                  deterministic: bool, rngs=None) -> dict:
        """The CIM encoder for one (audio, text) pairing.

        Args:
          audio, audio_pos: [B, T, d] projected audio and its positions; audio_mask [B, T].
          text, text_pos: [B, L, d] projected text and its positions; text_mask [B, L].

        Returns:
          dict: `memory_global` [B, d], `memory` [B, T, d] (GKA output), `text_embed`
          [B, d] (mean projected text), `frames` [B, T, d] (GKA input audio frames).
        """
        kw = dict(deterministic=deterministic, rngs=rngs)
        a = audio
        for layer in self.t2v_layers:
            a = layer(a, audio_pos, text, text_pos, text_mask, **kw)
        s = text
        for layer in self.v2t_layers:
            s = layer(s, text_pos, audio, audio_pos, audio_mask, **kw)
        text_embed = _masked_mean(self.feature_norm(self.feature_proj(s)), text_mask)

        # DBIA: bases of each modality by EM attention.
        text_bases = em_attention.em_bases(self.text_bases[...], s, text_mask,
                                           num_iters=self.em_iter).bases
        audio_bases = em_attention.em_bases(self.audio_bases[...], a, audio_mask,
                                            num_iters=self.em_iter).bases
        # LRP: local context of every frame.
        local = a + self.conv_local(a, audio_mask)
        # The global token becomes the audio basis closest (mean cosine) to the text bases.
        affinity = jnp.einsum("bkd,bjd->bkj", l2_normalize(audio_bases),
                              l2_normalize(text_bases)).mean(axis=-1)
        best = jnp.argmax(affinity, axis=-1)
        token = jnp.take_along_axis(audio_bases, best[:, None, None], axis=1)  # [B, 1, d]
        frames = a + em_attention.random_walk_refine(local, text_bases, audio_mask,
                                                     weight=WALK_WEIGHT)

        batch = a.shape[0]
        token_pos = jnp.broadcast_to(self.global_pos[...], (batch, 1, self.hidden_dim))
        x = jnp.concatenate([token, frames], axis=1)
        pos = jnp.concatenate([token_pos.astype(x.dtype), audio_pos], axis=1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), audio_mask], axis=1)
        for layer in self.gka_layers:  # GKA
            x = layer(x, pos, mask, **kw)
        return {"memory_global": x[:, 0], "memory": x[:, 1:], "text_embed": text_embed,
                "frames": frames}

    def saliency(self, memory: jax.Array, memory_global: jax.Array) -> jax.Array:
        """Frame saliency [B, T] from memory [B, T, d] and the global token [B, d]."""
        frames = self.saliency_proj1(memory)
        token = self.saliency_proj2(memory_global)
        return jnp.einsum("btd,bd->bt", frames, token) / math.sqrt(self.hidden_dim)

    def __call__(self, inputs, *, deterministic: bool, rngs: nnx.Rngs | None = None,
                 negatives: bool | None = None, select_negatives=False) -> dict:
        """Runs the model.

        Args:
          inputs: `DetrInputs` (audio [B, T, audio_dim], audio_mask [B, T],
            text [B, L, text_dim], text_mask [B, L]).
          deterministic: disables dropout.
          rngs: dropout RNGs; required when not deterministic.
          negatives: also compute the negative pass and the similarities
            (`saliency_scores_neg`, `sim_global`, `sim_clip`, `negative_index`);
            defaults to `not deterministic`.
          select_negatives: bool (may be traced): pair each audio row with its
            least similar other text instead of the next row's.

        Returns:
          QD-DETR's outputs (`pred_logits`, `pred_spans`, `saliency_scores`,
          `aux_outputs`, `pred_quality` with the quality head) plus, with
          `negatives`, `saliency_scores_neg` [B, T], `sim_global` [B, B],
          `sim_clip` [B, T] and `negative_index` [B].
        """
        if negatives is None:
            negatives = not deterministic
        check_inputs(inputs, audio_dim=self.audio_dim, text_dim=self.text_dim,
                     deterministic=deterministic, rngs=rngs, model="UVCOM")
        audio_in, text_in = inputs.audio, inputs.text
        audio_mask = inputs.audio_mask.astype(bool)
        text_mask = inputs.text_mask.astype(bool)
        kw = dict(deterministic=deterministic, rngs=rngs)

        tef, feats = self._split_audio(audio_in)
        audio = self.input_tef_proj(tef, **kw) + self.input_audio_proj(feats, **kw)
        text = self.input_text_proj(text_in, **kw)
        audio_pos = masked_sine_positions(audio_mask, self.hidden_dim)
        text_pos = (self.text_position_embed(text, **kw) if self.use_txt_pos
                    else jnp.zeros_like(text))

        enc = self.integrate(audio, audio_pos, audio_mask, text, text_pos, text_mask, **kw)
        memory, memory_global = enc["memory"], enc["memory_global"]
        num_queries = self.query_embed.shape[0]
        slots0 = jnp.broadcast_to(enc["text_embed"][:, None, :],
                                  (audio.shape[0], num_queries, self.hidden_dim))
        slots = self.slot_attention(memory, audio_mask, slots0)
        hs, anchors = self.decoder(slots, memory, audio_mask, audio_pos, self.query_embed[...],
                                   **kw)
        logits = self.class_embed(hs)
        spans = jax.nn.sigmoid(self.span_embed(hs) + inverse_sigmoid(anchors))
        layer_outputs = [{"pred_logits": logits[i], "pred_spans": spans[i]}
                         for i in range(logits.shape[0])]
        if self.quality_embed is not None:
            quality = jax.nn.sigmoid(self.quality_embed(hs)[..., 0])
            for i, layer_out in enumerate(layer_outputs):
                layer_out["pred_quality"] = quality[i]
        out = dict(layer_outputs[-1], saliency_scores=self.saliency(memory, memory_global),
                   aux_outputs=tuple(layer_outputs[:-1]))
        if not negatives:
            return out

        audio_sim = l2_normalize(self.sim_audio(memory_global))  # [B, d]
        text_sim = l2_normalize(self.sim_text(enc["text_embed"]))  # [B, d]
        frame_sim = l2_normalize(self.sim_audio(enc["frames"]))  # [B, T, d]
        out["sim_clip"] = jnp.einsum("bd,btd->bt", text_sim, frame_sim)
        out["sim_global"] = audio_sim @ text_sim.T
        batch = audio.shape[0]
        frames_text = _masked_mean(jnp.einsum("btd,jd->btj", frame_sim, text_sim), audio_mask)
        chosen = similarity.select_negative_text(jax.lax.stop_gradient(out["sim_global"]),
                                                 jax.lax.stop_gradient(frames_text))
        rolled = (jnp.arange(batch) + 1) % batch
        neg_index = jnp.where(jnp.asarray(select_negatives), chosen, rolled)
        out["negative_index"] = neg_index
        neg = self.integrate(audio, audio_pos, audio_mask, text[neg_index], text_pos,
                             text_mask[neg_index], **kw)
        out["saliency_scores_neg"] = self.saliency(neg["memory"], neg["memory_global"])
        return out
