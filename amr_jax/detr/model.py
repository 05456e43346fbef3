"""QD-DETR (query-dependent DETR) for audio moment retrieval, in Flax NNX.

Faithful to the reference implementation configured for audio (DCASE baseline):

    audio [B, T, 770] = [clap_768 ‖ tef_start, tef_end]   text [B, L, 768]
      (dcase layout; lighthouse puts tef first: amr_jax/detr/layout.py)
      │ InputProjection (LN -> Dropout(0.5) -> Linear -> ReLU, LN -> Dropout -> Linear)
      ▼
    audio [B, T, d] + sine positions (normalized per sample)   text [B, L, d] (zero positions)
      │ t2v_layers x TextToAudioLayer   (audio queries attend to text)
      ▼
    [global token ‖ audio] [B, 1 + T, d]
      │ encoder_layers x EncoderLayer  (post-norm self-attention)
      ▼
    memory_global [B, d], memory [B, T, d] ──► saliency <proj1(memory), proj2(global)> / sqrt(d)
      │ Decoder: conditional/DAB-DETR with 2-d anchors (center, width), query scale,
      │ width-modulated cross-attention, iterative anchor refinement
      ▼
    hs [N_dec, B, Q, d] ──► class_embed -> logits [.., 2] (class 0 = foreground)
                        ──► span_embed + inverse_sigmoid(anchor) -> sigmoid -> (center, width)

Negative pairs: the text batch is rolled by one (row i gets row i+1's query) and
the encoder runs again with the same positions; the saliency of these mismatched
pairs is returned as `saliency_scores_neg` (computed by default in training).
The positive and negative encoder passes run as one batch of 2B rows.

Masks are True on valid entries; padded audio frames and padded text tokens are
masked as attention keys everywhere, so a padded row gives the same outputs on
its valid frames as the unpadded row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from amr_jax.detr import layers
from amr_jax.detr.attention import MultiHeadAttention, ProjectionFreeAttention
from amr_jax.detr.position import anchor_sine_embedding, masked_sine_positions

# Clamp of the reference's inverse_sigmoid.
INVERSE_SIGMOID_EPS = 1e-3


def default_model_config() -> ml_collections.ConfigDict:
    """The reference audio configuration (lighthouse / DCASE baseline `base.yml`).

    Returned unlocked; `experiments/configs/qd_detr.py` places it under
    `config.model` and locks the whole config.
    """
    c = ml_collections.ConfigDict()
    c.audio_dim = 770  # 768-d CLAP frame features + [tef_start, tef_end] (either order).
    c.text_dim = 768
    c.hidden_dim = 256
    c.nheads = 8
    c.t2v_layers = 2  # text-to-audio cross-attention encoder layers
    c.enc_layers = 2  # self-attention encoder layers
    c.dec_layers = 2
    c.dim_feedforward = 1024
    c.dropout = 0.1
    c.input_dropout = 0.5
    c.n_input_proj = 2
    c.num_queries = 10
    # Size of the learned text position table; unused unless use_txt_pos but
    # part of the reference parameter count (8,704 parameters).
    c.max_q_l = 32
    c.use_txt_pos = False
    c.activation = "prelu"
    # Decoder: width-modulated attention on, query position projection in the
    # first cross-attention layer only.
    c.modulate_t_attn = True
    c.keep_query_pos = False
    # Reproduce the reference's text-to-audio attention mask, whose heads and
    # batch rows are misordered (see `reference_t2v_attn_mask`). Off: padded
    # text is masked per row only, so each row is independent of the batch.
    c.t2v_reference_mask = False
    # --- Seed 003 refinements (DESIGN 9.3); off in the reference model. ---
    # Quality head: q = sigmoid(MLP(h)) on every decoder layer's output,
    # returned as `pred_quality`; built last, so it leaves the initial values
    # of every other parameter unchanged.
    c.quality_head = False
    # --- UVCOM backbone (DESIGN 9.6; amr_jax/detr/uvcom.py); "qd_detr" ignores these. ---
    c.backbone = "qd_detr"  # or "uvcom"
    c.em_iter = 5           # EM attention iterations
    c.n_txt_mu = 5          # learned text bases
    c.n_visual_mu = 30      # learned audio bases
    # Order of the audio row, which UVCOM splits into its endpoint and audio parts
    # (two input projections); set from data.layout by `layout.resolve_run_config`.
    c.tef_first = False
    return c


def check_inputs(inputs, *, audio_dim: int, text_dim: int, deterministic: bool, rngs,
                 model: str) -> None:
    """Raises ValueError naming the widths / shapes when `inputs` do not fit the model."""
    if not deterministic and rngs is None:
        raise ValueError(f"{model} needs `rngs` (dropout) when deterministic=False")
    audio_in, text_in = inputs.audio, inputs.text
    if audio_in.shape[-1] != audio_dim or text_in.shape[-1] != text_dim:
        raise ValueError(
            f"{model} expects audio width {audio_dim} and text width {text_dim}, "
            f"got audio {audio_in.shape} and text {text_in.shape}")
    audio_mask_shape, text_mask_shape = inputs.audio_mask.shape, inputs.text_mask.shape
    if audio_mask_shape != audio_in.shape[:2] or text_mask_shape != text_in.shape[:2]:
        raise ValueError(
            f"masks must be [B, T] and [B, L]: audio {audio_in.shape} with audio_mask "
            f"{audio_mask_shape}, text {text_in.shape} with text_mask {text_mask_shape}")


def inverse_sigmoid(x: jax.Array, eps: float = INVERSE_SIGMOID_EPS) -> jax.Array:
    """`log(x / (1 - x))` with both terms clamped at `eps` (x first clipped to [0, 1])."""
    x = jnp.clip(x, 0.0, 1.0)
    return jnp.log(jnp.maximum(x, eps) / jnp.maximum(1.0 - x, eps))


def reference_t2v_attn_mask(
    audio_mask: jax.Array, text_mask: jax.Array, num_heads: int
) -> jax.Array:
    """The text-to-audio attention mask the reference applies, as allowed-flags.

    The reference blocks (audio frame t, text token l) when both are padding,
    builds that [B, T, L] mask, and tiles it with `repeat(num_heads, 1, 1)`,
    giving entry `h * B + b` the mask of row `b`. PyTorch reads entry `i` as
    row `i // H`, head `i % H`, so row `b`, head `h` actually receives the mask
    of row `(b * H + h) % B`. Where that other row has padded audio and padded
    text, valid frames of row `b` cannot see some of its valid tokens. This
    depends only on the valid lengths (not on how far rows are padded), so it
    is reproduced exactly under fixed-length padding.

    Args:
        audio_mask: [B, T] bool, True on valid frames.
        text_mask: [B, L] bool, True on valid tokens.
        num_heads: H.

    Returns:
        [B, H, T, L] bool, True where attention is allowed.
    """
    batch = audio_mask.shape[0]
    blocked = (~audio_mask)[:, :, None] & (~text_mask)[:, None, :]  # [B, T, L]
    source = (jnp.arange(batch)[:, None] * num_heads + jnp.arange(num_heads)[None, :]) % batch
    return ~blocked[source]


def _concat_heads(a: jax.Array, b: jax.Array, num_heads: int) -> jax.Array:
    """Concatenates `a` and `b` [B, N, d] per head: [B, N, 2d] with head h = (a_h ‖ b_h)."""
    batch, n, d = a.shape
    a = a.reshape(batch, n, num_heads, d // num_heads)
    b = b.reshape(batch, n, num_heads, d // num_heads)
    return jnp.concatenate([a, b], axis=-1).reshape(batch, n, 2 * d)


def _tie_initial_vectors(stack) -> None:
    """Copies every 1-d parameter of `stack[0]` into the other layers.

    The reference builds a layer stack by deep-copying one layer and then
    re-draws only the >1-d parameters (xavier), so at initialization the
    biases (and norms, slopes) of all layers in a stack are identical.
    """
    reference = {
        path: node
        for path, node in nnx.iter_graph(stack[0])
        if isinstance(node, nnx.Param) and node[...].ndim == 1
    }
    for layer in list(stack)[1:]:
        for path, node in nnx.iter_graph(layer):
            if isinstance(node, nnx.Param) and path in reference:
                node[...] = reference[path][...]


class EncoderLayer(nnx.Module):
    """Post-norm self-attention layer over `[B, N, d]` (positions added to queries and keys)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dim_feedforward: int,
        *,
        dropout: float,
        activation: str,
        rngs: nnx.Rngs,
    ):
        self.self_attn = MultiHeadAttention(dim, num_heads, dropout=dropout, rngs=rngs)
        self.linear1 = layers.linear(dim, dim_feedforward, xavier=True, rngs=rngs)
        self.linear2 = layers.linear(dim_feedforward, dim, xavier=True, rngs=rngs)
        self.norm1 = layers.layer_norm(dim, rngs=rngs)
        self.norm2 = layers.layer_norm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.dropout1 = nnx.Dropout(dropout)
        self.dropout2 = nnx.Dropout(dropout)
        self.activation = layers.activation_layer(activation)

    def __call__(
        self, x: jax.Array, pos: jax.Array, mask: jax.Array, *, deterministic: bool, rngs=None
    ) -> jax.Array:
        """x/pos [B, N, d]; mask [B, N] (True = valid key) -> [B, N, d]."""
        kw = dict(deterministic=deterministic, rngs=rngs)
        qk = x + pos
        x = self.norm1(x + self.dropout1(self.self_attn(qk, qk, x, mask, **kw), **kw))
        h = self.linear2(self.dropout(self.activation(self.linear1(x)), **kw))
        return self.norm2(x + self.dropout2(h, **kw))


class TextToAudioLayer(EncoderLayer):
    """Cross-attention encoder layer: audio frames (queries) attend to text tokens.

    Keeps the reference's residual quirk: the feed-forward residual is added to
    the tensor *before* `norm1`:

        x = audio + Dropout(Attn(audio + pos_a, text + pos_t, text))
        y = norm2(x + Dropout(FFN(norm1(x))))

    The global token and the text pass through unchanged, so the layer only
    maps audio `[B, T, d] -> [B, T, d]`. Same sub-modules (and parameter names)
    as `EncoderLayer`; only the wiring differs.
    """

    def __call__(
        self,
        audio: jax.Array,
        audio_pos: jax.Array,
        text: jax.Array,
        text_pos: jax.Array,
        text_mask: jax.Array,
        *,
        deterministic: bool,
        rngs=None,
        attn_mask: jax.Array | None = None,
    ) -> jax.Array:
        """audio/audio_pos [B, T, d]; text/text_pos [B, L, d]; text_mask [B, L] -> [B, T, d].

        `attn_mask` [B, H, T, L] (True = allowed) optionally restricts attention further.
        """
        kw = dict(deterministic=deterministic, rngs=rngs)
        attn = self.self_attn(
            audio + audio_pos, text + text_pos, text, text_mask, attn_mask=attn_mask, **kw
        )
        x = audio + self.dropout1(attn, **kw)
        h = self.linear1(self.norm1(x))
        h = self.linear2(self.dropout(self.activation(h), **kw))
        return self.norm2(x + self.dropout2(h, **kw))

class DecoderLayer(nnx.Module):
    """Conditional-DETR decoder layer (separate content and position projections).

    Self-attention among queries: `q = Wq_c tgt + Wq_p query_pos`,
    `k = Wk_c tgt + Wk_p query_pos`, `v = Wv tgt`.

    Cross-attention to the audio memory with 2d-wide queries and keys built per
    head as `(content_h ‖ position_h)`: queries use `ca_qpos_sine_proj` of the
    anchor sine embedding as the position part, keys the projected memory
    positions. Only a layer with `ca_qpos_proj` (the first, unless
    `keep_query_pos`) also adds the projected query position to the query
    content and the key position to the key content.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dim_feedforward: int,
        *,
        dropout: float,
        activation: str,
        with_query_pos_proj: bool,
        rngs: nnx.Rngs,
    ):
        def proj():
            return layers.linear(dim, dim, xavier=True, rngs=rngs)

        self.num_heads = num_heads
        self.sa_qcontent_proj = proj()
        self.sa_qpos_proj = proj()
        self.sa_kcontent_proj = proj()
        self.sa_kpos_proj = proj()
        self.sa_v_proj = proj()
        self.self_attn = ProjectionFreeAttention(dim, dim, num_heads, dropout=dropout, rngs=rngs)
        self.norm1 = layers.layer_norm(dim, rngs=rngs)
        self.dropout1 = nnx.Dropout(dropout)

        self.ca_qcontent_proj = proj()
        self.ca_qpos_proj = proj() if with_query_pos_proj else None
        self.ca_kcontent_proj = proj()
        self.ca_kpos_proj = proj()
        self.ca_v_proj = proj()
        self.ca_qpos_sine_proj = proj()
        self.cross_attn = ProjectionFreeAttention(
            2 * dim, dim, num_heads, dropout=dropout, rngs=rngs
        )

        self.linear1 = layers.linear(dim, dim_feedforward, xavier=True, rngs=rngs)
        self.linear2 = layers.linear(dim_feedforward, dim, xavier=True, rngs=rngs)
        self.norm2 = layers.layer_norm(dim, rngs=rngs)
        self.norm3 = layers.layer_norm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)
        self.dropout2 = nnx.Dropout(dropout)
        self.dropout3 = nnx.Dropout(dropout)
        self.activation = layers.activation_layer(activation)

    def __call__(
        self,
        tgt: jax.Array,
        memory: jax.Array,
        memory_mask: jax.Array,
        memory_pos: jax.Array,
        query_pos: jax.Array,
        query_sine_embed: jax.Array,
        *,
        deterministic: bool,
        rngs=None,
    ) -> jax.Array:
        """tgt/query_pos/query_sine_embed [B, Q, d]; memory/memory_pos [B, T, d];
        memory_mask [B, T] -> [B, Q, d]."""
        kw = dict(deterministic=deterministic, rngs=rngs)
        q = self.sa_qcontent_proj(tgt) + self.sa_qpos_proj(query_pos)
        k = self.sa_kcontent_proj(tgt) + self.sa_kpos_proj(query_pos)
        v = self.sa_v_proj(tgt)
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, v, None, **kw), **kw))

        q = self.ca_qcontent_proj(tgt)
        k = self.ca_kcontent_proj(memory)
        v = self.ca_v_proj(memory)
        k_pos = self.ca_kpos_proj(memory_pos)
        if self.ca_qpos_proj is not None:
            q = q + self.ca_qpos_proj(query_pos)
            k = k + k_pos
        q = _concat_heads(q, self.ca_qpos_sine_proj(query_sine_embed), self.num_heads)
        k = _concat_heads(k, k_pos, self.num_heads)
        attn = self.cross_attn(q, k, v, memory_mask, **kw)
        tgt = self.norm2(tgt + self.dropout2(attn, **kw))

        h = self.linear2(self.dropout(self.activation(self.linear1(tgt)), **kw))
        return self.norm3(tgt + self.dropout3(h, **kw))


class Decoder(nnx.Module):
    """DAB-style decoder with 2-d anchors `(center, width)` refined layer by layer.

    For layer `i` with anchors `a` (sigmoid space) and previous output `o`:

        s = sine(a)                       # [B, Q, d], d/2 features per coordinate
        query_pos = ref_point_head(s)
        s = s * query_scale(o)            # not in the first layer
        s = s * sigmoid(ref_anchor_head(o)) / a_width      # modulate_t_attn
        o = layer(o, memory, query_pos, s)
        a' = sigmoid(bbox_embed(o) + inverse_sigmoid(a)); next layer uses stop_gradient(a')

    Returns the normed output of every layer and the anchor each layer's
    prediction is relative to (the initial anchors, then `a'` of the previous
    layer *without* stop_gradient, as in the reference).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        dim_feedforward: int,
        num_layers: int,
        *,
        dropout: float,
        activation: str,
        modulate_t_attn: bool,
        keep_query_pos: bool,
        rngs: nnx.Rngs,
    ):
        if dim % 2:
            raise ValueError(f"hidden_dim must be even for the anchor sine embedding, got {dim}")
        self.dim = dim
        self.layers = nnx.List(
            [
                DecoderLayer(
                    dim,
                    num_heads,
                    dim_feedforward,
                    dropout=dropout,
                    activation=activation,
                    with_query_pos_proj=keep_query_pos or i == 0,
                    rngs=rngs,
                )
                for i in range(num_layers)
            ]
        )
        _tie_initial_vectors(self.layers)
        self.norm = layers.layer_norm(dim, rngs=rngs)
        self.query_scale = layers.MLP(dim, dim, dim, 2, xavier=True, rngs=rngs)
        self.ref_point_head = layers.MLP(dim, dim, dim, 2, xavier=True, rngs=rngs)
        # The reference zero-initializes the last layer, but the transformer's
        # xavier pass then re-draws its weight: only the bias stays zero.
        self.bbox_embed = layers.MLP(dim, dim, 2, 3, xavier=True, zero_last_bias=True, rngs=rngs)
        self.ref_anchor_head = (
            layers.MLP(dim, dim, 1, 2, xavier=True, rngs=rngs) if modulate_t_attn else None
        )

    def __call__(
        self,
        memory: jax.Array,
        memory_mask: jax.Array,
        memory_pos: jax.Array,
        anchor_logits: jax.Array,
        *,
        deterministic: bool,
        rngs=None,
    ) -> tuple[jax.Array, jax.Array]:
        """Decodes `Q` anchors against the audio memory.

        Args:
            memory: [B, T, d] encoded audio.
            memory_mask: [B, T] bool, True on valid frames.
            memory_pos: [B, T, d] audio positions.
            anchor_logits: [Q, 2] learned anchors before the sigmoid.
            deterministic: disables dropout.
            rngs: dropout RNGs.

        Returns:
            hs: [N_dec, B, Q, d] normed output of each layer.
            anchors: [N_dec, B, Q, 2] anchor (sigmoid space) of each layer's output.
        """
        batch = memory.shape[0]
        num_queries = anchor_logits.shape[0]
        anchor = jnp.broadcast_to(jax.nn.sigmoid(anchor_logits), (batch, num_queries, 2))
        output = jnp.zeros((batch, num_queries, self.dim), memory.dtype)
        hs, anchors = [], [anchor]
        for i, layer in enumerate(self.layers):
            sine = anchor_sine_embedding(anchor, num_feats=self.dim // 2)
            query_pos = self.ref_point_head(sine)
            if i > 0:
                sine = sine * self.query_scale(output)
            if self.ref_anchor_head is not None:
                width_cond = jax.nn.sigmoid(self.ref_anchor_head(output))  # [B, Q, 1]
                sine = sine * (width_cond / anchor[..., 1:2])
            output = layer(
                output,
                memory,
                memory_mask,
                memory_pos,
                query_pos,
                sine,
                deterministic=deterministic,
                rngs=rngs,
            )
            hs.append(self.norm(output))
            if i < len(self.layers) - 1:
                # The last layer's refinement is never used, so it is skipped.
                new_anchor = jax.nn.sigmoid(self.bbox_embed(output) + inverse_sigmoid(anchor))
                anchors.append(new_anchor)
                anchor = jax.lax.stop_gradient(new_anchor)
        return jnp.stack(hs), jnp.stack(anchors)


class TextPositionEncoding(nnx.Module):
    """Learned text positions `LayerNorm(x + table[:L])` then dropout.

    Used only with `use_txt_pos`; by default the table exists (and is counted)
    but text positions are zero, as in the reference.
    """

    def __init__(self, max_len: int, dim: int, *, dropout: float, rngs: nnx.Rngs):
        self.position_embeddings = nnx.Param(jax.random.normal(rngs.params(), (max_len, dim)))
        self.layer_norm = layers.layer_norm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: jax.Array, *, deterministic: bool, rngs=None) -> jax.Array:
        """x [B, L, d] -> [B, L, d]; requires L <= max_len."""
        table = self.position_embeddings[...]
        if x.shape[1] > table.shape[0]:
            raise ValueError(
                f"text has {x.shape[1]} tokens but the position table holds {table.shape[0]} "
                "(max_q_l)"
            )
        x = self.layer_norm(x + table[: x.shape[1]])
        return self.dropout(x, deterministic=deterministic, rngs=rngs)


class QDDETR(nnx.Module):
    """QD-DETR for audio. See the module docstring for the data flow.

    Call with an object holding `audio` [B, T, audio_dim], `audio_mask` [B, T],
    `text` [B, L, text_dim], `text_mask` [B, L] (`amr_jax.detr.inputs.DetrInputs`).
    Negative pairs need B >= 2 (with B = 1 the rolled text is the query itself).
    """

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        c = config
        d = c.hidden_dim
        if d % c.nheads:
            raise ValueError(f"hidden_dim={d} must be divisible by nheads={c.nheads}")
        self.hidden_dim = d
        self.num_heads = c.nheads
        self.use_txt_pos = c.use_txt_pos
        self.t2v_reference_mask = c.t2v_reference_mask
        self.audio_dim = c.audio_dim
        self.text_dim = c.text_dim

        self.input_audio_proj = layers.InputProjection(
            c.audio_dim, d, num_layers=c.n_input_proj, dropout=c.input_dropout, rngs=rngs
        )
        self.input_text_proj = layers.InputProjection(
            c.text_dim, d, num_layers=c.n_input_proj, dropout=c.input_dropout, rngs=rngs
        )
        self.text_position_embed = TextPositionEncoding(
            c.max_q_l, d, dropout=c.input_dropout, rngs=rngs
        )
        self.global_token = nnx.Param(jax.random.normal(rngs.params(), (d,)))
        self.global_pos = nnx.Param(jax.random.normal(rngs.params(), (d,)))

        layer_kw = dict(dropout=c.dropout, activation=c.activation, rngs=rngs)
        self.t2v_layers = nnx.List(
            [
                TextToAudioLayer(d, c.nheads, c.dim_feedforward, **layer_kw)
                for _ in range(c.t2v_layers)
            ]
        )
        _tie_initial_vectors(self.t2v_layers)
        self.encoder_layers = nnx.List(
            [EncoderLayer(d, c.nheads, c.dim_feedforward, **layer_kw) for _ in range(c.enc_layers)]
        )
        _tie_initial_vectors(self.encoder_layers)
        self.decoder = Decoder(
            d,
            c.nheads,
            c.dim_feedforward,
            c.dec_layers,
            modulate_t_attn=c.modulate_t_attn,
            keep_query_pos=c.keep_query_pos,
            **layer_kw,
        )
        self.query_embed = nnx.Param(jax.random.normal(rngs.params(), (c.num_queries, 2)))
        self.class_embed = layers.linear(d, 2, xavier=False, rngs=rngs)
        self.span_embed = layers.MLP(d, d, 2, 3, xavier=False, rngs=rngs)
        self.saliency_proj1 = layers.linear(d, d, xavier=False, rngs=rngs)
        self.saliency_proj2 = layers.linear(d, d, xavier=False, rngs=rngs)
        # MLP(d, d, 1, 2 layers, ReLU), PyTorch-default init like the other heads.
        self.quality_embed = (
            layers.MLP(d, d, 1, 2, xavier=False, rngs=rngs) if c.quality_head else None
        )

    def encode(
        self,
        audio: jax.Array,
        audio_pos: jax.Array,
        audio_mask: jax.Array,
        text: jax.Array,
        text_pos: jax.Array,
        text_mask: jax.Array,
        t2v_attn_mask: jax.Array | None = None,
        *,
        deterministic: bool,
        rngs=None,
    ) -> tuple[jax.Array, jax.Array]:
        """Query-dependent encoder.

        Args:
            audio, audio_pos: [B, T, d] projected audio and its positions.
            audio_mask: [B, T] bool.
            text, text_pos: [B, L, d] projected text and its positions.
            text_mask: [B, L] bool.
            t2v_attn_mask: optional [B, H, T, L] bool extra text-to-audio mask.

        Returns:
            memory_global [B, d] (the global token) and memory [B, T, d] (audio).
        """
        kw = dict(deterministic=deterministic, rngs=rngs)
        x = audio
        for layer in self.t2v_layers:
            x = layer(x, audio_pos, text, text_pos, text_mask, attn_mask=t2v_attn_mask, **kw)
        batch = x.shape[0]
        token = jnp.broadcast_to(self.global_token[...], (batch, 1, self.hidden_dim))
        token_pos = jnp.broadcast_to(self.global_pos[...], (batch, 1, self.hidden_dim))
        x = jnp.concatenate([token.astype(x.dtype), x], axis=1)
        pos = jnp.concatenate([token_pos.astype(x.dtype), audio_pos], axis=1)
        mask = jnp.concatenate([jnp.ones((batch, 1), bool), audio_mask], axis=1)
        for layer in self.encoder_layers:
            x = layer(x, pos, mask, **kw)
        return x[:, 0], x[:, 1:]

    def saliency(self, memory: jax.Array, memory_global: jax.Array) -> jax.Array:
        """Frame saliency [B, T] from memory [B, T, d] and the global token [B, d]."""
        frames = self.saliency_proj1(memory)
        token = self.saliency_proj2(memory_global)
        return jnp.einsum("btd,bd->bt", frames, token) / math.sqrt(self.hidden_dim)

    def __call__(
        self,
        inputs,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None = None,
        negatives: bool | None = None,
    ) -> dict:
        """Runs the model.

        Args:
            inputs: `DetrInputs` (audio [B, T, audio_dim], audio_mask [B, T],
                text [B, L, text_dim], text_mask [B, L]; masks True on valid
                entries, valid entries first).
            deterministic: disables all dropout (evaluation).
            rngs: dropout RNGs (stream "dropout", else "default"); required
                when not deterministic.
            negatives: also compute `saliency_scores_neg`; defaults to
                `not deterministic`.

        Returns:
            dict with `pred_logits` [B, Q, 2] (class 0 = foreground),
            `pred_spans` [B, Q, 2] normalized (center, width) in (0, 1),
            `saliency_scores` [B, T] (padded frames hold arbitrary values),
            `saliency_scores_neg` [B, T] when `negatives`, and `aux_outputs`,
            a tuple of `{pred_logits, pred_spans}` for each decoder layer but
            the last. With `quality_head`, the final and every auxiliary dict
            also hold `pred_quality` [B, Q] in (0, 1).
        """
        if negatives is None:
            negatives = not deterministic
        check_inputs(inputs, audio_dim=self.audio_dim, text_dim=self.text_dim,
                     deterministic=deterministic, rngs=rngs, model="QDDETR")
        audio_in, text_in = inputs.audio, inputs.text
        audio_mask = inputs.audio_mask.astype(bool)
        text_mask = inputs.text_mask.astype(bool)
        kw = dict(deterministic=deterministic, rngs=rngs)

        audio = self.input_audio_proj(audio_in, **kw)
        text = self.input_text_proj(text_in, **kw)
        audio_pos = masked_sine_positions(audio_mask, self.hidden_dim)
        if self.use_txt_pos:
            text_pos = self.text_position_embed(text, **kw)
        else:
            text_pos = jnp.zeros_like(text)

        batch = audio.shape[0]
        enc = [audio, audio_pos, audio_mask, text, text_pos, text_mask]
        if negatives:
            # Row i of the negative half pairs audio i with query i+1; positions
            # (including text positions) are those of the positive pass.
            neg = [
                audio,
                audio_pos,
                audio_mask,
                jnp.roll(text, -1, axis=0),
                text_pos,
                jnp.roll(text_mask, -1, axis=0),
            ]
        if self.t2v_reference_mask:
            # Computed per pass: the reference runs the negative pass as its own batch.
            enc.append(reference_t2v_attn_mask(audio_mask, text_mask, self.num_heads))
            if negatives:
                neg.append(reference_t2v_attn_mask(audio_mask, neg[5], self.num_heads))
        if negatives:
            enc = [jnp.concatenate([p, n], axis=0) for p, n in zip(enc, neg)]
        memory_global, memory = self.encode(*enc, **kw)
        saliency = self.saliency(memory, memory_global)

        hs, anchors = self.decoder(
            memory[:batch], audio_mask, audio_pos, self.query_embed[...], **kw
        )
        logits = self.class_embed(hs)  # [N_dec, B, Q, 2]
        spans = jax.nn.sigmoid(self.span_embed(hs) + inverse_sigmoid(anchors))

        layer_outputs = [
            {"pred_logits": logits[i], "pred_spans": spans[i]} for i in range(logits.shape[0])
        ]
        if self.quality_embed is not None:
            quality = jax.nn.sigmoid(self.quality_embed(hs)[..., 0])  # [N_dec, B, Q]
            for i, layer_out in enumerate(layer_outputs):
                layer_out["pred_quality"] = quality[i]
        out = dict(
            layer_outputs[-1],
            saliency_scores=saliency[:batch],
            aux_outputs=tuple(layer_outputs[:-1]),
        )
        if negatives:
            out["saliency_scores_neg"] = saliency[batch:]
        return out


def parameter_breakdown(model: nnx.Module, depth: int = 1) -> dict[str, int]:
    """Number of parameters per module path truncated to `depth` components.

    Example: `{"input_audio_proj": 265220, "t2v_layers": 1579522, ...}` for
    depth 1. Works on abstract modules from `nnx.eval_shape`.
    """
    counts: dict[str, int] = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Param):
            key = "/".join(str(p) for p in path[:depth])
            counts[key] = counts.get(key, 0) + int(math.prod(node.shape))
    return counts


def count_parameters(model: nnx.Module) -> int:
    """Total number of `nnx.Param` entries in `model`."""
    return sum(parameter_breakdown(model, depth=0).values())


def summarize_parameters(counts: Mapping[str, int]) -> str:
    """A two-column text table of `parameter_breakdown` output with a total row."""
    width = max([len(k) for k in counts] + [5])
    rows = [f"{k:<{width}}  {v:>10,}" for k, v in counts.items()]
    rows.append(f"{'total':<{width}}  {sum(counts.values()):>10,}")
    return "\n".join(rows)
