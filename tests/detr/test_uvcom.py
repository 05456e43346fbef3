"""UVCOM pieces: parameter count vs the reference, EM attention and random walk vs numpy,
the similarity loss, negative selection, and the strict UVCOM name table.

Forward parity with the torch transcription and padded == unpadded are in
`test_uvcom_parity.py`; training through the trainer in tests/train/test_uvcom_train.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import convert, em_attention, similarity
from amr_jax.detr import model as qd
from amr_jax.detr.uvcom import UVCOM

torch = pytest.importorskip("torch")

from torch_uvcom import TorchUVCOM  # noqa: E402

# Parameters of lighthouse's UVCOM for audio at the report's sizes (hidden 256, 8 heads,
# FFN 1024, 2 encoder layers per stack, 2 decoder layers, 10 queries, text 768, "video"
# = the 2 endpoint features, audio 768, n_txt_mu 5, n_visual_mu 30, max_q_l 32):
#
#   reference module          how                                                  count
#   input_vid_proj            LN(2) 4 + Linear(2,256) 768 + LN(256) 512
#                             + Linear(256,256) 65,792                             67,076
#   input_audio_proj          LN(768) 1,536 + Linear(768,256) 196,864 + 512 + 65,792 264,704
#   input_txt_proj            same as input_audio_proj                            264,704
#   txt_position_embed        Embedding(32,256) 8,192 + LN 512 (unused)             8,704
#   global_rep_token / _pos   256 each (the token has no effect on outputs)           512
#   CIM.t2v_encoder           2 x [MHA 263,168 + linear1 263,168 + linear2 262,400
#                             + 2 LN 1,024 + PReLU 1] = 2 x 789,761              1,579,522
#   CIM.v2t_encoder           same                                              1,579,522
#   CIM.GKA_Module            same (self-attention layers)                      1,579,522
#   CIM.processer_for_tgt     4 LN 2,048 + q/k/v Linear 197,376
#                             + MLP(256,1024,256,3) 1,575,168                   1,774,592
#   CIM.decoder               QD-DETR's decoder 3,160,837 (layers 1,382,401
#                             + 1,316,609, heads 461,827) + span_embed 10x256   3,163,397
#   CIM.feature_proj          Linear(256,256) 65,792 + LN 512                      66,304
#   CIM.conv_local            Conv1d k1 65,792 + k3 196,864 + k1 65,792           328,448
#   CIM.txt_mu / CIM.vid_mu   5x256 1,280 / 30x256 7,680                           8,960
#   CIM.sim_vid / sim_txt     2 x MLP(256,1024,256,3) 1,575,168                 3,150,336
#   query_embed               Embedding(10, 2)                                         20
#   class_embed               Linear(256, 2)                                          514
#   span_embed                MLP(256,256,2,3)                                    132,098
#   saliency_proj1/2          2 x Linear(256,256)                                 131,584
#   total                                                                      14,100,519
REFERENCE_TOTAL = 14_100_519
EXPECTED_BREAKDOWN = {  # reference module -> count, under the reference's names
    "input_vid_proj": 67_076, "input_audio_proj": 264_704, "input_txt_proj": 264_704,
    "txt_position_embed": 8_704, "global_rep_token": 256, "global_rep_pos": 256,
    "CIM.t2v_encoder": 1_579_522, "CIM.v2t_encoder": 1_579_522, "CIM.GKA_Module": 1_579_522,
    "CIM.processer_for_tgt": 1_774_592, "CIM.decoder": 3_163_397, "CIM.feature_proj": 66_304,
    "CIM.conv_local": 328_448, "CIM.txt_mu": 1_280, "CIM.vid_mu": 7_680,
    "CIM.sim_vid": 1_575_168, "CIM.sim_txt": 1_575_168, "query_embed": 20,
    "class_embed": 514, "span_embed": 132_098, "saliency_proj1": 65_792,
    "saliency_proj2": 65_792,
}
# Our module(s) holding each reference module.
OURS = {
    "input_vid_proj": ("input_tef_proj",), "input_audio_proj": ("input_audio_proj",),
    "input_txt_proj": ("input_text_proj",), "txt_position_embed": ("text_position_embed",),
    "global_rep_token": ("global_token",), "global_rep_pos": ("global_pos",),
    "CIM.t2v_encoder": ("t2v_layers",), "CIM.v2t_encoder": ("v2t_layers",),
    "CIM.GKA_Module": ("gka_layers",), "CIM.processer_for_tgt": ("slot_attention",),
    "CIM.decoder": ("decoder",), "CIM.feature_proj": ("feature_proj", "feature_norm"),
    "CIM.conv_local": ("conv_local",), "CIM.txt_mu": ("text_bases",),
    "CIM.vid_mu": ("audio_bases",), "CIM.sim_vid": ("sim_audio",), "CIM.sim_txt": ("sim_text",),
    "query_embed": ("query_embed",), "class_embed": ("class_embed",),
    "span_embed": ("span_embed",), "saliency_proj1": ("saliency_proj1",),
    "saliency_proj2": ("saliency_proj2",),
}


def uvcom_config(**overrides):
    c = qd.default_model_config()
    c.backbone = "uvcom"
    for k, v in overrides.items():
        c[k] = v
    return c


def torch_breakdown(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "CIM" else parts[0]
        counts[key] = counts.get(key, 0) + p.numel()
    return counts


def test_parameter_count_per_module_matches_the_reference():
    torch.manual_seed(0)
    ref = torch_breakdown(TorchUVCOM())
    assert ref == EXPECTED_BREAKDOWN
    assert sum(ref.values()) == REFERENCE_TOTAL
    abstract = nnx.eval_shape(lambda: UVCOM(uvcom_config(), rngs=nnx.Rngs(0)))
    ours = qd.parameter_breakdown(abstract)
    assert sorted(k for v in OURS.values() for k in v) == sorted(ours)
    mapped = {ref_name: sum(ours[k] for k in keys) for ref_name, keys in OURS.items()}
    assert mapped == EXPECTED_BREAKDOWN, qd.summarize_parameters(ours)
    assert qd.count_parameters(abstract) == REFERENCE_TOTAL


# ---------------------------------------------------------------- EM attention (numpy oracle)

def np_unit(x):
    return x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-9)


def np_em(mu, x, iters, sigma=1.2):
    """The reference's EM_RBF on one unpadded row: mu [K, d], x [T, d] (float64)."""
    ux = np_unit(x)
    for _ in range(iters):
        um = np_unit(mu)
        d2 = ((um[:, None, :] - ux[None, :, :]) ** 2).sum(-1)  # [K, T]
        e = np.exp(-0.5 * d2 / sigma**2)
        z = e / e.sum(0, keepdims=True)
        z = z / (z.sum(1, keepdims=True) + 1e-9)
        mu = z @ x
    return mu


def np_walk(x, y, w=0.5):
    """The reference's BMRW on one unpadded row, with its T x T matrix and a solve."""
    xn, yn = np_unit(x), np_unit(y)
    a = 5.0 * yn @ xn.T  # [K, T]
    z = np.exp(a - a.max(0, keepdims=True))
    z = z / z.sum(0, keepdims=True)
    zn = z / (z.sum(1, keepdims=True) + 1e-9)
    affinity = z.T @ zn  # [T, T]
    eye = np.eye(x.shape[0])
    inv = np.linalg.solve(eye, eye - w**2 * affinity)
    return (1 - w) * inv @ (w * z.T @ y + x)


@pytest.fixture(scope="module")
def small_case():
    rng = np.random.default_rng(0)
    lens = np.array([6, 4, 1])
    x = rng.normal(size=(3, 6, 5)).astype(np.float32)
    mask = np.arange(6)[None] < lens[:, None]
    x = np.where(mask[..., None], x, rng.normal(size=x.shape) * 9)  # garbage in padding
    mu = rng.normal(size=(4, 5)).astype(np.float32)
    return x.astype(np.float32), mask, mu, lens


@pytest.mark.parametrize("iters", [0, 1, 5])
def test_em_bases_match_numpy_on_the_valid_frames(small_case, iters):
    x, mask, mu, lens = small_case
    state = jax.jit(lambda m, x, k: em_attention.em_bases(m, x, k, num_iters=iters))(
        jnp.asarray(mu), jnp.asarray(x), jnp.asarray(mask))
    assert state.bases.shape == (3, 4, 5)
    for b, n in enumerate(lens):
        want = np_em(mu.astype(np.float64), x[b, :n].astype(np.float64), iters)
        np.testing.assert_allclose(np.asarray(state.bases[b]), want, rtol=2e-5, atol=2e-5)
    # responsibilities are zero on padded frames and sum to ~1 over valid frames
    if iters:
        z = np.asarray(state.responsibilities)
        assert np.all(z[~np.broadcast_to(mask[:, None, :], z.shape)] == 0)
        np.testing.assert_allclose(z.sum(-1), 1.0, atol=1e-5)


def test_random_walk_matches_numpy_solve_on_the_valid_frames(small_case):
    x, mask, _, lens = small_case
    y = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    got = np.asarray(jax.jit(em_attention.random_walk_refine)(jnp.asarray(x), jnp.asarray(y),
                                                              jnp.asarray(mask)))
    for b, n in enumerate(lens):
        want = np_walk(x[b, :n].astype(np.float64), y[b].astype(np.float64))
        np.testing.assert_allclose(got[b, :n], want, rtol=2e-5, atol=2e-5)


# ---------------------------------------------------------------- similarity loss

def np_similarity_loss(sg, sc, spans, mask):
    """Independent numpy transcription of the loss (valid frames only)."""
    def log_softmax(v):
        v = v - v.max()
        return v - np.log(np.exp(v).sum())
    b = sg.shape[0]
    inter = np.mean([log_softmax(sg[i])[i] for i in range(b)])
    inter_t = np.mean([log_softmax(sg[:, i])[i] for i in range(b)])
    rows = []
    for i in range(b):
        n = int(mask[i].sum())
        st, ed = spans[i, 0] - spans[i, 1] / 2, spans[i, 0] + spans[i, 1] / 2
        lo, hi = int(np.floor(st * n)), int(np.floor(ed * n))
        lp = log_softmax(sc[i, :n])
        rows.append(sum(lp[t] for t in range(n) if lo <= t < hi) / n)
    return -(0.5 * (inter + inter_t) / 2 + 0.5 * np.mean(rows))


def test_similarity_loss_matches_numpy_with_padding():
    rng = np.random.default_rng(0)
    sg = rng.normal(size=(4, 4)).astype(np.float32)
    sc = rng.normal(size=(4, 10)).astype(np.float32)
    mask = np.arange(10)[None] < np.array([10, 7, 3, 5])[:, None]
    spans = np.array([[0.5, 0.4], [0.3, 0.2], [0.5, 1.0], [0.9, 0.2]], np.float32)
    got = similarity.similarity_loss(jnp.asarray(sg), jnp.asarray(sc), jnp.asarray(spans),
                                     jnp.asarray(mask))
    np.testing.assert_allclose(float(got), np_similarity_loss(sg, sc, spans, mask), rtol=1e-5)
    # padded frames do not matter
    sc2 = np.where(mask, sc, 100.0).astype(np.float32)
    got2 = similarity.similarity_loss(jnp.asarray(sg), jnp.asarray(sc2), jnp.asarray(spans),
                                      jnp.asarray(mask))
    np.testing.assert_allclose(float(got2), float(got), rtol=1e-6)


def aligned_embeddings(batch, frames, dim, scale):
    """Audio global / text / frame embeddings with perfect alignment: audio_i = text_i,
    orthogonal across rows; frames inside row i's moment equal text_i, others orthogonal."""
    eye = np.eye(dim, dtype=np.float32)
    text = eye[:batch]
    audio = eye[:batch]
    frame_emb = np.tile(eye[batch:batch + 1], (batch, frames, 1))  # off-moment: orthogonal
    moment = np.zeros((batch, frames), bool)
    for i in range(batch):
        moment[i, 2 * i] = True  # one-frame moments
        frame_emb[i, 2 * i] = text[i]
    sim_global = scale * audio @ text.T
    sim_clip = scale * np.einsum("bd,btd->bt", text, frame_emb)
    return sim_global, sim_clip, moment


def test_similarity_loss_about_zero_when_perfectly_aligned():
    batch, frames = 4, 10
    mask = np.ones((batch, frames), bool)
    # windows [2i + 0.5, 2i + 1.5) frames: frame 2i only
    spans = np.array([[(2 * i + 1) / frames, 1 / frames] for i in range(batch)], np.float32)
    sg, sc, moment = aligned_embeddings(batch, frames, 16, scale=50.0)
    assert np.array_equal(np.asarray(similarity.moment_frames(jnp.asarray(spans),
                                                              jnp.asarray(mask))), moment)
    loss = float(similarity.similarity_loss(jnp.asarray(sg), jnp.asarray(sc), jnp.asarray(spans),
                                            jnp.asarray(mask)))
    assert 0.0 <= loss < 1e-6 * frames
    # at the reference's unit temperature the aligned loss is its analytic floor, and
    # any misalignment (texts permuted) is worse
    sg1, sc1, _ = aligned_embeddings(batch, frames, 16, scale=1.0)
    floor = float(similarity.similarity_loss(jnp.asarray(sg1), jnp.asarray(sc1),
                                             jnp.asarray(spans), jnp.asarray(mask)))
    e = np.e
    want = -(0.5 * np.log(e / (e + batch - 1)) + 0.5 * np.log(e / (e + frames - 1)) / frames)
    np.testing.assert_allclose(floor, want, rtol=1e-5)
    perm = np.roll(np.arange(batch), 1)
    worse = float(similarity.similarity_loss(jnp.asarray(sg1[:, perm]), jnp.asarray(sc1),
                                             jnp.asarray(spans), jnp.asarray(mask)))
    assert worse > floor + 0.1


def test_similarity_loss_gradients_finite_and_zero_on_padding():
    rng = np.random.default_rng(3)
    mask = np.arange(8)[None] < np.array([8, 2, 5])[:, None]
    sg = jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)
    sc = jnp.asarray(np.where(mask, rng.normal(size=(3, 8)), -1e30), jnp.float32)
    spans = jnp.asarray([[0.5, 0.5], [0.25, 0.5], [0.9, 0.2]], jnp.float32)
    g_sg, g_sc = jax.grad(similarity.similarity_loss, argnums=(0, 1))(sg, sc, spans,
                                                                      jnp.asarray(mask))
    assert np.all(np.isfinite(g_sg)) and np.all(np.isfinite(g_sc))
    assert np.all(np.asarray(g_sc)[~mask] == 0)
    assert np.any(np.asarray(g_sc)[mask] != 0)


# ---------------------------------------------------------------- negative selection

def test_negative_selection_picks_the_least_similar_other_text():
    # Row 0's own text is its least similar: it must still pick another row.
    sg = np.array([[-5.0, 2.0, 0.1, 1.0],
                   [3.0, 4.0, -2.0, 0.0],
                   [0.5, 0.2, 1.0, 0.4],
                   [1.0, 1.0, 1.0, 1.0]], np.float32)
    ft = np.zeros((4, 4), np.float32)
    ft[3, 1] = -3.0  # row 3: ties in sg, broken by the frame term
    got = np.asarray(similarity.select_negative_text(jnp.asarray(sg), jnp.asarray(ft)))
    np.testing.assert_array_equal(got, [2, 2, 1, 1])
    # brute force on random scores
    rng = np.random.default_rng(0)
    for _ in range(20):
        sg, ft = rng.normal(size=(2, 6, 6)).astype(np.float32)
        score = 0.5 * (np.exp(sg) / np.exp(sg).sum(1, keepdims=True)
                       + np.exp(ft) / np.exp(ft).sum(1, keepdims=True))
        np.fill_diagonal(score, np.inf)
        np.testing.assert_array_equal(
            np.asarray(similarity.select_negative_text(jnp.asarray(sg), jnp.asarray(ft))),
            score.argmin(1))


# ---------------------------------------------------------------- strict name table

SMALL = dict(hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=3, n_visual_mu=6)


def perturbed_state_dict(ref, seed):
    """Reference-format state dict with every entry perturbed (no LayerNorm at 1 / 0)."""
    rng = np.random.default_rng(seed)
    return {k: (v.detach().numpy() + 0.1 * rng.normal(size=tuple(v.shape))).astype(np.float32)
            for k, v in ref.state_dict().items()}


def test_name_table_converts_a_reference_state_dict_strictly():
    config = uvcom_config(**SMALL)
    torch.manual_seed(1)
    ref = TorchUVCOM(d=32, nhead=4, dim_ff=64, num_queries=3, n_visual_mu=6)
    state = perturbed_state_dict(ref, 0)
    table = convert.name_table(config, "dcase")
    assert sorted(e.torch_name for e in table) == sorted(state)
    concrete = UVCOM(config, rngs=nnx.Rngs(0))
    records = convert.load_state_dict_into(concrete, state, config, "dcase")
    assert len(records) == len(state)
    assert {r["transform"] for r in records} == {"linear", "in_proj", "conv", "prelu", "copy"}
    exported = convert.export_state_dict(concrete, config, "dcase")
    assert exported.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(exported[k], state[k], err_msg=k)

    missing = dict(state)
    del missing["CIM.conv_local.1.weight"]
    with pytest.raises(convert.ConversionError, match=r"missing \['CIM.conv_local.1.weight'\]"):
        convert.load_state_dict_into(concrete, missing, config, "dcase")
    extra = dict(state, **{"CIM.moment_fusion.multihead_attn.in_proj_weight": np.zeros(3)})
    with pytest.raises(convert.ConversionError, match="unexpected.*moment_fusion"):
        convert.load_state_dict_into(concrete, extra, config, "dcase")
    bad = dict(state, **{"CIM.vid_mu": np.zeros((20, 32), np.float32)})
    with pytest.raises(convert.ConversionError, match=r"CIM.vid_mu: shape \(20, 32\)"):
        convert.load_state_dict_into(concrete, bad, config, "dcase")
    with pytest.raises(convert.ConversionError, match="model parameters without a reference"):
        with_quality = uvcom_config(quality_head=True, **SMALL)
        convert.load_state_dict_into(UVCOM(with_quality, rngs=nnx.Rngs(0)), state, with_quality,
                                     "dcase")
