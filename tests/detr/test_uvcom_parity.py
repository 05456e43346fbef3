"""UVCOM forward parity with the torch transcription of lighthouse, and padded == unpadded.

A seeded `torch_uvcom.TorchUVCOM` at the report's sizes (d=256: the reference's anchor
sine embedding is fixed at 128 features per coordinate) with every entry perturbed is
converted through `amr_jax.detr.convert`'s UVCOM name table into the Flax model; both
run in eval mode. The reference sums over padded frames and tokens in several places
(EM, random walk, slot attention, text mean) where the Flax model masks, so:

* a batch without padding must match the whole output dict (spans, logits of every
  decoder layer, saliency, negative-pair saliency, both similarities), with the
  rolled negatives and with the similarity-selected ones (`epoch >= neg_choose_epoch`);
* a padded batch must give, row by row, what the reference computes on the unpadded
  row alone (a batch of one).

`LIGHTHOUSE_SRC` (a line/lighthouse checkout) additionally checks the transcription
against lighthouse's own `build_model`: same state-dict keys and shapes, same outputs.
"""

from __future__ import annotations

import functools
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import convert
from amr_jax.detr import model as qd
from amr_jax.detr.inputs import DetrInputs
from amr_jax.detr.uvcom import UVCOM

torch = pytest.importorskip("torch")

from torch_uvcom import TorchUVCOM  # noqa: E402

B, FRAMES, TOKENS = 3, 8, 5
ATOL = 2e-5
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_FAST_COMPILE)
def _apply(graphdef, state, inputs, select):
    model = nnx.merge(graphdef, state)
    return model(inputs, deterministic=True, negatives=True, select_negatives=select)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def uvcom_config(**overrides):
    c = qd.default_model_config()
    c.backbone = "uvcom"
    for k, v in overrides.items():
        c[k] = v
    return c


def build(config, seed=None):
    """A UVCOM with every parameter drawn from numpy (no initializer runs: eager or jitted
    initialization is slow on a small shared CPU); zeros when `seed` is None (to be
    overwritten by a conversion)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: UVCOM(config, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if seed is None:
            return jnp.zeros(leaf.shape, leaf.dtype)
        base = 1.0 if str(path[-1]).endswith("scale") else 0.0  # LayerNorm scales near 1
        scale = 1.0 / np.sqrt(leaf.shape[0]) if len(leaf.shape) == 2 else 0.1
        return jnp.asarray(base + scale * rng.normal(size=leaf.shape), leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    ref = TorchUVCOM().eval()
    rng = np.random.default_rng(0)
    state = {k: (v.detach().numpy() + 0.05 * rng.normal(size=tuple(v.shape))).astype(np.float32)
             for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    config = uvcom_config()
    ours = build(config)
    convert.load_state_dict_into(ours, state, config, "dcase")
    graphdef, params = nnx.split(ours)
    return ref, graphdef, params, state


def make_batch(seed, audio_lens, text_lens):
    rng = np.random.default_rng(seed)
    am = np.arange(FRAMES)[None] < np.asarray(audio_lens)[:, None]
    tm = np.arange(TOKENS)[None] < np.asarray(text_lens)[:, None]
    clap = rng.normal(size=(B, FRAMES, 768)).astype(np.float32) * am[..., None]
    n = np.asarray(audio_lens, np.float32)[:, None]
    i = np.arange(FRAMES, dtype=np.float32)[None]
    tef = np.stack([i / n, (i + 1) / n], -1).astype(np.float32) * am[..., None]
    text = rng.normal(size=(B, TOKENS, 768)).astype(np.float32) * tm[..., None]
    return clap, tef, am, text, tm


def run_ours(models, clap, tef, am, text, tm, select):
    _, graphdef, params, _ = models
    inputs = DetrInputs(audio=jnp.asarray(np.concatenate([clap, tef], -1)),
                        audio_mask=jnp.asarray(am), text=jnp.asarray(text),
                        text_mask=jnp.asarray(tm))
    return jax.device_get(_apply(graphdef, params, inputs, jnp.asarray(select)))


def run_ref(ref, clap, tef, am, text, tm, epoch):
    with torch.no_grad():
        out = ref(torch.from_numpy(text), torch.from_numpy(tm.astype(np.float32)),
                  torch.from_numpy(tef), torch.from_numpy(am.astype(np.float32)), epoch=epoch,
                  src_aud=torch.from_numpy(clap))
    return out


KEYS = ("pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg", "sim_global",
        "sim_clip")


@pytest.mark.parametrize("epoch", [None, 80])
def test_unpadded_batch_matches_reference(models, epoch):
    ref = models[0]
    select = epoch is not None
    # Seed 5: the reference's choice is never the row's own text (which ours excludes).
    batch = make_batch(5 if select else 1, [FRAMES] * B, [TOKENS] * B)
    want = run_ref(ref, *batch, epoch)
    got = run_ours(models, *batch, select)
    if select:
        idx = want["negative_index"].numpy()
        assert np.all(idx != np.arange(B)), "reference picked a row's own text: change the seed"
    else:
        idx = np.roll(np.arange(B), -1)
    np.testing.assert_array_equal(got["negative_index"], idx)
    for k in KEYS:
        np.testing.assert_allclose(got[k], want[k].numpy(), atol=ATOL, rtol=1e-4, err_msg=k)
    for a, w in zip(got["aux_outputs"], want["aux_outputs"]):
        for k in ("pred_logits", "pred_spans"):
            np.testing.assert_allclose(a[k], w[k].numpy(), atol=ATOL, rtol=1e-4, err_msg=k)


def test_padded_rows_match_reference_on_each_unpadded_row(models):
    ref = models[0]
    audio_lens, text_lens = [8, 5, 3], [2, 5, 4]
    clap, tef, am, text, tm = make_batch(2, audio_lens, text_lens)
    got = run_ours(models, clap, tef, am, text, tm, False)
    for b, (n, l) in enumerate(zip(audio_lens, text_lens)):
        row = (clap[b:b + 1, :n], tef[b:b + 1, :n], am[b:b + 1, :n], text[b:b + 1, :l],
               tm[b:b + 1, :l])
        want = run_ref(ref, *row, None)
        for k in ("pred_logits", "pred_spans"):
            np.testing.assert_allclose(got[k][b], want[k][0].numpy(), atol=ATOL, rtol=1e-4,
                                       err_msg=f"row {b} {k}")
        np.testing.assert_allclose(got["saliency_scores"][b, :n],
                                   want["saliency_scores"][0].numpy(), atol=ATOL, rtol=1e-4)
        np.testing.assert_allclose(got["sim_clip"][b, :n], want["sim_clip"][0].numpy(),
                                   atol=ATOL, rtol=1e-4)


# ------------------------------------------------------------ padded == unpadded (small model)

# One layer per encoder stack keeps compilation short; two decoder layers keep aux outputs.
SMALL = dict(hidden_dim=32, nheads=4, dim_feedforward=64, num_queries=4, n_visual_mu=6,
             audio_dim=34, text_dim=12, t2v_layers=1, enc_layers=1)


def small_inputs(frames, tokens, audio_lens, text_lens, seed=0):
    rng = np.random.default_rng(seed)
    rows = len(audio_lens)
    am = np.arange(frames)[None] < np.asarray(audio_lens)[:, None]
    tm = np.arange(tokens)[None] < np.asarray(text_lens)[:, None]
    audio = rng.normal(size=(rows, 12, 34)).astype(np.float32)
    text = rng.normal(size=(rows, 6, 12)).astype(np.float32)
    audio = np.pad(audio, ((0, 0), (0, frames - 12), (0, 0)))[:, :frames] * am[..., None]
    text = np.pad(text, ((0, 0), (0, tokens - 6), (0, 0)))[:, :tokens] * tm[..., None]
    # garbage in the padding must not matter
    audio = audio + (~am[..., None]) * 7.0
    text = text + (~tm[..., None]) * -3.0
    return DetrInputs(jnp.asarray(audio), jnp.asarray(am), jnp.asarray(text), jnp.asarray(tm))


@pytest.fixture(scope="module")
def small_model():
    return build(uvcom_config(**SMALL), seed=0)


def test_padded_rows_give_the_unpadded_result(small_model):
    graphdef, params = nnx.split(small_model)
    audio_lens, text_lens = [12, 7, 3], [6, 2, 4]
    tight = small_inputs(12, 6, audio_lens, text_lens)
    loose = small_inputs(20, 9, audio_lens, text_lens)
    for select in (False, True):
        a = jax.device_get(_apply(graphdef, params, tight, jnp.asarray(select)))
        b = jax.device_get(_apply(graphdef, params, loose, jnp.asarray(select)))
        np.testing.assert_array_equal(a["negative_index"], b["negative_index"])
        for k in ("pred_logits", "pred_spans", "sim_global"):
            np.testing.assert_allclose(a[k], b[k], atol=1e-5, rtol=1e-5, err_msg=k)
        for k in ("saliency_scores", "saliency_scores_neg", "sim_clip"):
            for row, n in enumerate(audio_lens):
                np.testing.assert_allclose(a[k][row, :n], b[k][row, :n], atol=1e-5, rtol=1e-5,
                                           err_msg=k)


# ------------------------------------------------------------ oracle check against lighthouse

def build_lighthouse_uvcom(src):
    """lighthouse's UVCOM for audio via its `build_model` (imported from a checkout)."""
    package = types.ModuleType("lighthouse")
    package.__path__ = [os.path.join(src, "lighthouse")]
    saved = dict(sys.modules)
    sys.modules["lighthouse"] = package
    sys.path.insert(0, src)
    try:
        from lighthouse.common import uvcom as lh

        class Args(dict):
            __getattr__ = dict.__getitem__

        args = Args(device="cpu", hidden_dim=256, dropout=0.1, nheads=8, dim_feedforward=1024,
                    enc_layers=2, dec_layers=2, pre_norm=False, position_embedding="sine",
                    max_q_l=32, input_dropout=0.5, t_feat_dim=768, v_feat_dim=2, a_feat_dim=768,
                    aux_loss=True, num_queries=30, span_loss_type="l1", n_input_proj=2,
                    set_cost_span=10, set_cost_giou=1, set_cost_class=4, span_loss_coef=10,
                    giou_loss_coef=1, label_loss_coef=4, lw_saliency=1, eos_coef=0.1,
                    saliency_margin=0.2, max_v_l=75, em_iter=5, n_txt_mu=5, n_visual_mu=30,
                    neg_choose_epoch=80, cross_fusion=False, sim_loss_coef=0.5,
                    dset_name="clotho-moment")
        torch.manual_seed(0)
        return lh.build_model(args)[0].eval()
    finally:
        sys.path.remove(src)
        # Only lighthouse's own modules are dropped: its dependencies (sklearn, scipy) hold
        # extension modules that cannot be imported twice in one process.
        for name in [m for m in sys.modules if m.split(".")[0] == "lighthouse"]:
            del sys.modules[name]
        sys.modules.update({k: v for k, v in saved.items() if k.split(".")[0] == "lighthouse"})


@pytest.mark.skipif(not os.environ.get("LIGHTHOUSE_SRC"),
                    reason="set LIGHTHOUSE_SRC to a line/lighthouse checkout to check the oracle")
@pytest.mark.parametrize("epoch", [None, 80])
def test_transcription_matches_lighthouse(epoch):
    # lighthouse's build_CIM never passes num_queries, so its decoder's span embedding
    # always has CIM's default 30 rows and the model only runs with 30 queries (its
    # uvcom.yml); at the report's 10 queries it fails on `tgt + span_embed`. The oracle
    # check therefore runs at 30 queries.
    torch.manual_seed(0)
    ref = TorchUVCOM(num_queries=30).eval()
    rng = np.random.default_rng(0)
    state = {k: (v.detach().numpy() + 0.05 * rng.normal(size=tuple(v.shape))).astype(np.float32)
             for k, v in ref.state_dict().items()}
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    lighthouse = build_lighthouse_uvcom(os.environ["LIGHTHOUSE_SRC"])
    theirs = {k: tuple(v.shape) for k, v in lighthouse.state_dict().items()}
    assert theirs == {k: v.shape for k, v in state.items()}
    lighthouse.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    clap, tef, am, text, tm = make_batch(1, [FRAMES] * B, [TOKENS] * B)
    want = run_ref(lighthouse, clap, tef, am, text, tm, epoch)
    got = run_ref(ref, clap, tef, am, text, tm, epoch)
    for k in ("pred_logits", "pred_spans", "saliency_scores", "saliency_scores_neg"):
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), atol=1e-5, err_msg=k)
    np.testing.assert_allclose(got["sim_global"].numpy(), want["sim"]["VLA_Sim"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(got["sim_clip"].numpy(), want["sim"]["CTA_Sim"][0].numpy(),
                               atol=1e-5)
