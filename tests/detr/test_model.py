"""Tests of the QD-DETR model: parameter count, masking, negatives, dropout, init, parity.

Forward passes use a tiny configuration and share jitted functions through
module-scoped fixtures; only the parameter-count test builds the default model
(abstractly, with `nnx.eval_shape`).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import attention, position
from amr_jax.detr import model as qd
from amr_jax.detr.inputs import DetrInputs

# Parameters of the reference model (PyTorch QDDETR built for audio: txt_dim 768,
# vid_dim 2 (endpoint features) + aud_dim 768, hidden 256, 8 heads, FFN 1024,
# 2 + 2 encoder layers, 2 decoder layers, 10 queries, max_q_l 32), per module:
#
#   module                          how                                            count
#   input_vid_proj    LN(770) 1,540 + Linear(770,256) 197,376 + LN(256) 512
#                     + Linear(256,256) 65,792                                    265,220
#   input_txt_proj    LN(768) 1,536 + Linear(768,256) 196,864 + 512 + 65,792       264,704
#   txt_position_embed Embedding(32,256) 8,192 + LN(256) 512 (unused)                8,704
#   global_rep_token / global_rep_pos  256 each                                       512
#   t2v_encoder       2 x [MHA in_proj 3*256*256+768 = 197,376, out_proj 65,792,
#                     linear1 263,168, linear2 262,400, 2 LN 1,024, PReLU 1]
#                     = 2 x 789,761                                              1,579,522
#   encoder           same layer structure, 2 x 789,761                          1,579,522
#   decoder layer 0   5 self-attn Linear(256,256) 328,960 + out_proj 65,792 + LN 512
#                     + 6 cross-attn Linear 394,752 + out_proj(256) 65,792
#                     + linear1 263,168 + linear2 262,400 + 2 LN 1,024 + PReLU 1 1,382,401
#   decoder layer 1   layer 0 without ca_qpos_proj (65,792)                      1,316,609
#   decoder heads     norm 512 + query_scale MLP(256,256,256,2) 131,584
#                     + ref_point_head 131,584 + bbox_embed MLP(256,256,2,3) 132,098
#                     + ref_anchor_head MLP(256,256,1,2) 66,049                    461,827
#   query_embed       Embedding(10, 2)                                                  20
#   class_embed       Linear(256, 2)                                                   514
#   span_embed        MLP(256,256,2,3)                                             132,098
#   saliency_proj1/2  2 x Linear(256,256)                                          131,584
#   total                                                                        7,123,237
REFERENCE_TOTAL = 7_123_237
# The same numbers under this implementation's module names.
EXPECTED_BREAKDOWN = {
    "input_audio_proj": 265_220,
    "input_text_proj": 264_704,
    "text_position_embed": 8_704,
    "global_token": 256,
    "global_pos": 256,
    "t2v_layers": 1_579_522,
    "encoder_layers": 1_579_522,
    "decoder": 1_382_401 + 1_316_609 + 461_827,
    "query_embed": 20,
    "class_embed": 514,
    "span_embed": 132_098,
    "saliency_proj1": 65_792,
    "saliency_proj2": 65_792,
}

AUDIO_DIM, TEXT_DIM = 6, 5
BATCH, FRAMES, TOKENS = 3, 8, 5
AUDIO_LENS = (8, 5, 3)
TEXT_LENS = (5, 2, 4)


def tiny_config():
    c = qd.default_model_config()
    c.audio_dim = AUDIO_DIM
    c.text_dim = TEXT_DIM
    c.hidden_dim = 32
    c.nheads = 4
    c.dim_feedforward = 48
    c.num_queries = 4
    c.max_q_l = 6
    # One layer per encoder stack keeps compile times low; the decoder keeps two
    # layers (auxiliary outputs, first-layer-only query position projection).
    c.t2v_layers = 1
    c.enc_layers = 1
    return c


def make_inputs(seed, audio_lens, text_lens, frames, tokens):
    rng = np.random.default_rng(seed)
    b = len(audio_lens)
    audio_mask = np.arange(frames)[None] < np.asarray(audio_lens)[:, None]
    text_mask = np.arange(tokens)[None] < np.asarray(text_lens)[:, None]
    audio = rng.normal(size=(b, frames, AUDIO_DIM)).astype(np.float32) * audio_mask[..., None]
    text = rng.normal(size=(b, tokens, TEXT_DIM)).astype(np.float32) * text_mask[..., None]
    return DetrInputs(
        audio=jnp.asarray(audio),
        audio_mask=jnp.asarray(audio_mask),
        text=jnp.asarray(text),
        text_mask=jnp.asarray(text_mask),
    )


# XLA's CPU backend optimizations and fusion emitters dominate compile time for
# these small graphs (about 5-10x); they do not change what is computed.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
_TRACES = []


@functools.partial(
    jax.jit,
    static_argnums=(0,),
    static_argnames=("deterministic", "negatives"),
    compiler_options=_FAST_COMPILE,
)
def _apply(graphdef, state, inputs, *, deterministic, negatives):
    _TRACES.append(1)
    model = nnx.merge(graphdef, state)
    return model(inputs, deterministic=deterministic, negatives=negatives)


def forward(model, inputs, *, deterministic, negatives):
    """Jitted evaluation-mode model call (training mode: `_train_outputs_and_grads`)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, inputs, deterministic=deterministic, negatives=negatives)


@pytest.fixture(scope="module")
def model():
    return qd.QDDETR(tiny_config(), rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def inputs():
    return make_inputs(0, AUDIO_LENS, TEXT_LENS, FRAMES, TOKENS)


@pytest.fixture(scope="module")
def eval_out(model, inputs):
    return forward(model, inputs, deterministic=True, negatives=True)


def test_parameter_count_matches_reference():
    abstract = nnx.eval_shape(lambda: qd.QDDETR(qd.default_model_config(), rngs=nnx.Rngs(0)))
    breakdown = qd.parameter_breakdown(abstract)
    total = qd.count_parameters(abstract)
    assert sum(EXPECTED_BREAKDOWN.values()) == REFERENCE_TOTAL
    message = (
        f"ours:\n{qd.summarize_parameters(breakdown)}\n"
        f"reference:\n{qd.summarize_parameters(EXPECTED_BREAKDOWN)}\n"
        f"ours by layer:\n{qd.summarize_parameters(qd.parameter_breakdown(abstract, depth=3))}"
    )
    assert total == REFERENCE_TOTAL, message
    assert breakdown == EXPECTED_BREAKDOWN, message
    # One PReLU slope per transformer layer (2 + 2 + 2).
    slopes = [p for path, p in nnx.iter_graph(abstract) if path and path[-1] == "negative_slope"]
    assert len(slopes) == 6


def test_output_shapes_and_ranges(model, inputs, eval_out):
    out = eval_out
    q = tiny_config().num_queries
    assert out["pred_logits"].shape == (BATCH, q, 2)
    assert out["pred_spans"].shape == (BATCH, q, 2)
    assert out["saliency_scores"].shape == (BATCH, FRAMES)
    assert out["saliency_scores_neg"].shape == (BATCH, FRAMES)
    assert len(out["aux_outputs"]) == tiny_config().dec_layers - 1
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (BATCH, q, 2)
        assert aux["pred_spans"].shape == (BATCH, q, 2)
    for leaf in jax.tree.leaves(out):
        assert np.all(np.isfinite(leaf))
    for spans in [out["pred_spans"]] + [a["pred_spans"] for a in out["aux_outputs"]]:
        assert np.all((spans > 0) & (spans < 1))


def test_padded_row_equals_unpadded_row(model, eval_out):
    """Row 1 (5 frames, 2 tokens) padded to (8, 5) inside the batch == alone and unpadded."""
    batch = make_inputs(0, AUDIO_LENS, TEXT_LENS, FRAMES, TOKENS)
    row = 1
    alone = DetrInputs(
        audio=batch.audio[row : row + 1, : AUDIO_LENS[row]],
        audio_mask=batch.audio_mask[row : row + 1, : AUDIO_LENS[row]],
        text=batch.text[row : row + 1, : TEXT_LENS[row]],
        text_mask=batch.text_mask[row : row + 1, : TEXT_LENS[row]],
    )
    # Without the negative pass (the evaluation default) the positives are unchanged.
    out = forward(model, alone, deterministic=True, negatives=False)
    assert "saliency_scores_neg" not in out
    for key in ("pred_logits", "pred_spans"):
        np.testing.assert_allclose(eval_out[key][row], out[key][0], atol=1e-5)
        np.testing.assert_allclose(
            eval_out["aux_outputs"][0][key][row], out["aux_outputs"][0][key][0], atol=1e-5
        )
    np.testing.assert_allclose(
        eval_out["saliency_scores"][row, : AUDIO_LENS[row]], out["saliency_scores"][0], atol=1e-5
    )


def test_negative_pass_equals_positive_pass_with_rolled_text(model, inputs, eval_out):
    rolled = DetrInputs(
        audio=inputs.audio,
        audio_mask=inputs.audio_mask,
        text=jnp.roll(inputs.text, -1, axis=0),
        text_mask=jnp.roll(inputs.text_mask, -1, axis=0),
    )
    out = forward(model, rolled, deterministic=True, negatives=True)
    valid = np.asarray(inputs.audio_mask)
    np.testing.assert_allclose(
        np.where(valid, eval_out["saliency_scores_neg"], 0.0),
        np.where(valid, out["saliency_scores"], 0.0),
        atol=1e-5,
    )
    # Mismatched text changes the scores: the encoder does depend on the query.
    assert np.abs(eval_out["saliency_scores_neg"] - eval_out["saliency_scores"])[valid].max() > 1e-3


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_FAST_COMPILE)
def _train_outputs_and_grads(graphdef, state, inputs, key, weights):
    """Training-mode outputs and gradients (w.r.t. parameters, audio, text) of a masked loss."""

    def loss_fn(state, audio, text):
        model = nnx.merge(graphdef, state)
        x = inputs.replace(audio=audio, text=text)
        out = model(x, deterministic=False, rngs=nnx.Rngs(dropout=key), negatives=True)
        valid = inputs.audio_mask
        loss = jnp.sum(out["pred_spans"]) + jnp.sum(jax.nn.log_softmax(out["pred_logits"]))
        loss += jnp.sum(out["aux_outputs"][0]["pred_spans"])
        loss += jnp.sum(jnp.where(valid, out["saliency_scores"] * weights[0], 0.0))
        loss += jnp.sum(jnp.where(valid, out["saliency_scores_neg"] * weights[1], 0.0))
        return loss, out

    (_, out), grads = jax.value_and_grad(loss_fn, argnums=(0, 1, 2), has_aux=True)(
        state, inputs.audio, inputs.text
    )
    return out, grads


@pytest.fixture(scope="module")
def train_run(model, inputs):
    graphdef, state = nnx.split(model)
    weights = jax.random.normal(jax.random.key(3), (2, BATCH, FRAMES))
    return lambda seed: _train_outputs_and_grads(
        graphdef, state, inputs, jax.random.key(seed), weights
    )


def test_dropout_only_when_not_deterministic(model, inputs, eval_out, train_run):
    again = forward(model, inputs, deterministic=True, negatives=True)
    for a, b in zip(jax.tree.leaves(eval_out), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
    (train_a, _), (train_b, _), (train_c, _) = train_run(1), train_run(1), train_run(2)
    for a, b in zip(jax.tree.leaves(train_a), jax.tree.leaves(train_b)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(train_a["pred_spans"] - train_c["pred_spans"]).max() > 1e-4
    assert np.abs(train_a["pred_spans"] - eval_out["pred_spans"]).max() > 1e-4
    with pytest.raises(ValueError, match="rngs"):
        model(inputs, deterministic=False)


def test_gradients_finite_and_zero_on_padding(inputs, train_run):
    """Finite gradients; padded frames/tokens and the unused text table get none."""
    _, (g_state, g_audio, g_text) = train_run(1)
    leaves = {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(g_state)}
    for path, g in leaves.items():
        assert np.all(np.isfinite(g)), path
    assert not np.any(leaves[("text_position_embed", "position_embeddings")])
    assert np.any(leaves[("query_embed",)])
    assert np.any(leaves[("global_pos",)])
    assert np.any(leaves[("decoder", "bbox_embed", "layers", 2, "kernel")])
    assert np.any(leaves[("t2v_layers", 0, "activation", "negative_slope")])
    audio_mask = np.asarray(inputs.audio_mask)
    g_audio, g_text = np.asarray(g_audio), np.asarray(g_text)
    assert np.all(np.isfinite(g_audio)) and np.all(np.isfinite(g_text))
    assert not np.any(g_audio[~audio_mask])
    assert not np.any(g_text[~np.asarray(inputs.text_mask)])
    assert np.all(np.abs(g_audio[audio_mask]).sum(-1) > 0)


def test_jit_compiles_once_per_shape(model, eval_out):
    before = len(_TRACES)
    a = forward(model, make_inputs(1, AUDIO_LENS, TEXT_LENS, FRAMES, TOKENS),
                deterministic=True, negatives=True)
    b = forward(model, make_inputs(2, (2, 8, 7), (1, 5, 3), FRAMES, TOKENS),
                deterministic=True, negatives=True)
    assert len(_TRACES) == before
    assert not np.allclose(a["pred_spans"], b["pred_spans"])
    assert not np.allclose(a["pred_spans"], eval_out["pred_spans"])


def test_reference_t2v_mask_semantics():
    """Allowed-flags equal a PyTorch `repeat(H, 1, 1)` mask read back as [B, H, ...]."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    b, h, t, l = 5, 3, 6, 4
    audio_mask = np.arange(t)[None] < rng.integers(1, t + 1, size=(b, 1))
    text_mask = np.arange(l)[None] < rng.integers(1, l + 1, size=(b, 1))
    q_pad = torch.tensor(~audio_mask).float()[:, :, None]
    k_pad = torch.tensor(~text_mask).float()[:, None, :]
    tiled = torch.matmul(q_pad, k_pad).bool().repeat(h, 1, 1)  # [H * B, T, L]
    # PyTorch attention reads entry i of a 3-d mask as (batch i // H, head i % H).
    expected = ~tiled.view(b, h, t, l).numpy()
    got = qd.reference_t2v_attn_mask(jnp.asarray(audio_mask), jnp.asarray(text_mask), h)
    np.testing.assert_array_equal(np.asarray(got), expected)
    # With the quirk off nothing beyond key padding is masked; with it on, a
    # padded row can no longer be run alone with identical results.
    assert not expected.all()


def test_reference_t2v_mask_option_changes_only_mixed_batches(inputs):
    cfg = tiny_config()
    cfg.t2v_reference_mask = True
    quirk = qd.QDDETR(cfg, rngs=nnx.Rngs(0))
    plain = qd.QDDETR(tiny_config(), rngs=nnx.Rngs(0))
    full = make_inputs(0, (FRAMES,) * BATCH, TEXT_LENS, FRAMES, TOKENS)
    # No padded audio anywhere: the reference mask blocks nothing.
    a = forward(quirk, full, deterministic=True, negatives=True)
    b = forward(plain, full, deterministic=True, negatives=True)
    np.testing.assert_allclose(a["pred_spans"], b["pred_spans"], atol=1e-6)
    np.testing.assert_allclose(a["saliency_scores_neg"], b["saliency_scores_neg"], atol=1e-5)
    a = forward(quirk, inputs, deterministic=True, negatives=True)
    b = forward(plain, inputs, deterministic=True, negatives=True)
    assert np.abs(a["pred_logits"] - b["pred_logits"]).max() > 1e-4


def test_masked_sine_positions_match_numpy():
    lens = np.array([7, 3, 1])
    mask = np.arange(10)[None] < lens[:, None]
    d = 16
    got = np.asarray(position.masked_sine_positions(jnp.asarray(mask), d))
    for i, n in enumerate(lens):
        x = np.arange(1, n + 1) / (n + 1e-6) * 2 * np.pi
        expected = np.zeros((n, d))
        for k in range(d // 2):
            freq = 10000.0 ** (2 * k / d)
            expected[:, 2 * k] = np.sin(x / freq)
            expected[:, 2 * k + 1] = np.cos(x / freq)
        np.testing.assert_allclose(got[i, :n], expected, atol=1e-5)
    # Normalized by the valid length, not by the padded length.
    longer = position.masked_sine_positions(jnp.asarray(np.pad(mask, ((0, 0), (0, 5)))), d)
    np.testing.assert_allclose(np.asarray(longer)[:, :10][mask], got[mask], atol=1e-6)


def test_anchor_sine_embedding_matches_numpy():
    anchors = np.array([[0.3, 0.1], [0.9, 0.6]], np.float32)
    got = np.asarray(position.anchor_sine_embedding(jnp.asarray(anchors), num_feats=8))
    for i, (c, w) in enumerate(anchors):
        parts = []
        for v in (c, w):
            e = np.zeros(8)
            for k in range(4):
                freq = 10000.0 ** (2 * k / 8)
                e[2 * k] = np.sin(v * 2 * np.pi / freq)
                e[2 * k + 1] = np.cos(v * 2 * np.pi / freq)
            parts.append(e)
        np.testing.assert_allclose(got[i], np.concatenate(parts), atol=1e-5)


def test_multihead_attention_matches_torch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    d, h, b, lq, lk = 16, 4, 3, 5, 6
    ref = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_bias.normal_()
        ref.out_proj.bias.normal_()
    ours = attention.MultiHeadAttention(d, h, dropout=0.1, rngs=nnx.Rngs(0))
    ours.in_proj_kernel[...] = jnp.asarray(ref.in_proj_weight.detach().numpy().T)
    ours.in_proj_bias[...] = jnp.asarray(ref.in_proj_bias.detach().numpy())
    ours.out_proj.kernel[...] = jnp.asarray(ref.out_proj.weight.detach().numpy().T)
    ours.out_proj.bias[...] = jnp.asarray(ref.out_proj.bias.detach().numpy())
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(b, n, d)).astype(np.float32) for n in (lq, lk, lk))
    key_mask = np.arange(lk)[None] < np.array([[6], [2], [4]])
    with torch.no_grad():
        expected = ref(
            torch.tensor(q),
            torch.tensor(k),
            torch.tensor(v),
            key_padding_mask=torch.tensor(~key_mask),
            need_weights=False,
        )[0].numpy()
    with jax.default_matmul_precision("highest"):
        got = ours(q, k, v, jnp.asarray(key_mask), deterministic=True)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_text_to_audio_layer_keeps_residual_quirk(model):
    """FFN residual adds to the pre-norm1 tensor: y = norm2(x + FFN(norm1(x)))."""
    layer = model.t2v_layers[0]
    rng = np.random.default_rng(5)
    d = tiny_config().hidden_dim
    audio, audio_pos = (jnp.asarray(rng.normal(size=(2, 4, d)), jnp.float32) for _ in range(2))
    text = jnp.asarray(rng.normal(size=(2, 3, d)), jnp.float32)
    text_mask = jnp.asarray([[True, True, True], [True, False, False]])

    @functools.partial(jax.jit, compiler_options=_FAST_COMPILE)
    def run(state, audio, audio_pos, text, text_mask):
        lay = nnx.merge(graphdef, state)
        full = lay(audio, audio_pos, text, jnp.zeros_like(text), text_mask, deterministic=True)
        attn = lay.self_attn(audio + audio_pos, text, text, text_mask, deterministic=True)
        return full, attn

    graphdef, state = nnx.split(layer)
    got, attn = run(state, audio, audio_pos, text, text_mask)

    def ln(x, norm):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(norm.scale[...]) + np.asarray(
            norm.bias[...]
        )

    def dense(x, lin):
        return x @ np.asarray(lin.kernel[...]) + np.asarray(lin.bias[...])

    def prelu(x):
        return np.where(x >= 0, x, float(layer.activation.negative_slope[...]) * x)

    x = np.asarray(audio) + np.asarray(attn)
    ffn = dense(prelu(dense(ln(x, layer.norm1), layer.linear1)), layer.linear2)
    np.testing.assert_allclose(np.asarray(got), ln(x + ffn, layer.norm2), atol=1e-4)
    standard = ln(ln(x, layer.norm1) + ffn, layer.norm2)
    assert np.abs(np.asarray(got) - standard).max() > 1e-3


def test_initialization_follows_reference():
    cfg = tiny_config()
    cfg.t2v_layers = cfg.enc_layers = 2
    m = qd.QDDETR(cfg, rngs=nnx.Rngs(1))
    d, ff = 32, 48
    # PReLU slopes start at 0.25.
    slopes = [
        float(p[...]) for path, p in nnx.iter_graph(m) if path and path[-1] == "negative_slope"
    ]
    assert slopes == [0.25] * 6
    # Transformer kernels: xavier-uniform bounds; fused in-projection drawn as one [d, 3d] matrix.
    enc = m.encoder_layers[0]
    for kernel, (fan_in, fan_out) in [
        (enc.self_attn.in_proj_kernel, (d, 3 * d)),
        (enc.linear1.kernel, (d, ff)),
        (m.decoder.layers[0].cross_attn.out_proj.kernel, (d, d)),
        (m.decoder.bbox_embed.layers[2].kernel, (d, 2)),
    ]:
        w = np.asarray(kernel[...])
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.8 * bound
    # Outside the transformer: PyTorch default, uniform within 1/sqrt(fan_in).
    w = np.asarray(m.saliency_proj1.kernel[...])
    assert np.abs(w).max() <= 1 / math.sqrt(d) and np.abs(w).max() > 0.8 / math.sqrt(d)
    # Zero attention biases and zero last bias of the decoder's bbox_embed.
    assert not np.any(np.asarray(enc.self_attn.in_proj_bias[...]))
    assert not np.any(np.asarray(enc.self_attn.out_proj.bias[...]))
    assert not np.any(np.asarray(m.decoder.layers[1].self_attn.out_proj.bias[...]))
    assert not np.any(np.asarray(m.decoder.bbox_embed.layers[2].bias[...]))
    # Layers of a stack start as copies except for their re-drawn >1-d parameters.
    a, b = m.t2v_layers
    np.testing.assert_array_equal(a.linear1.bias[...], b.linear1.bias[...])
    assert np.any(np.asarray(a.linear1.bias[...]))
    assert not np.allclose(a.linear1.kernel[...], b.linear1.kernel[...])
    np.testing.assert_array_equal(
        m.decoder.layers[0].ca_v_proj.bias[...], m.decoder.layers[1].ca_v_proj.bias[...]
    )
    # The query position projection exists only in the first decoder layer.
    assert m.decoder.layers[0].ca_qpos_proj is not None
    assert m.decoder.layers[1].ca_qpos_proj is None


def test_text_position_encoding_matches_numpy():
    """The optional learned text positions: LayerNorm(x + table[:L]); too long text raises."""
    enc = qd.TextPositionEncoding(6, 8, dropout=0.5, rngs=nnx.Rngs(0))
    x = np.random.default_rng(6).normal(size=(2, 4, 8)).astype(np.float32)
    got = np.asarray(enc(jnp.asarray(x), deterministic=True))
    y = x + np.asarray(enc.position_embeddings[...])[:4]
    mu, var = y.mean(-1, keepdims=True), y.var(-1, keepdims=True)
    np.testing.assert_allclose(got, (y - mu) / np.sqrt(var + 1e-5), atol=1e-5)
    with pytest.raises(ValueError, match="max_q_l"):
        enc(jnp.zeros((1, 7, 8)), deterministic=True)
