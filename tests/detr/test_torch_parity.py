"""Whole-model parity with PyTorch: a reference-format checkpoint converted by
`amr_jax.detr.convert` makes the Flax QD-DETR compute what the reference computes.

The reference side is `torch_qd_detr.TorchQDDETR`, a plain PyTorch transcription of
lighthouse's QD-DETR with the reference's parameter names. A seeded random model
(every 1-d parameter perturbed too, so no LayerNorm weight, bias or PReLU slope sits
at its constant init where a swapped name would go unnoticed) is saved with
`torch.save` as `{"model", "optimizer", "lr_scheduler", "epoch", "opt"}`, read back
with the project's restricted loader, converted, and both models run in eval mode on
one batch with padded audio and text of mixed lengths. Default sizes (d=256: the
reference's anchor sine embedding is fixed at 128 features per coordinate), short
sequences.
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np
import pytest
from flax import nnx

from amr_jax.detr import convert
from amr_jax.detr import model as qd
from amr_jax.detr.inputs import DetrInputs
from amr_jax.detr.torch_checkpoint import load_torch_checkpoint

torch = pytest.importorskip("torch")

from test_convert import build_lighthouse_qd_detr, save_reference_checkpoint  # noqa: E402
from torch_qd_detr import TorchQDDETR  # noqa: E402

FRAMES, TOKENS = 12, 7
AUDIO_LENS = (12, 5, 9, 3)
# Row 1 pads audio after 5 frames and text after 3 tokens; under the reference's
# `repeat(nhead, 1, 1)` mask, heads 1 and 5 of every row read row 1's mask, so
# frames 5.. of rows 0 and 2 lose tokens 3.. there: the quirk changes the outputs.
TEXT_LENS = (7, 3, 5, 2)
ATOL = 1e-5
AUDIO_PROJ = {"lighthouse": "input_vid_proj", "dcase": "input_aud_proj"}

_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


@functools.partial(jax.jit, static_argnums=(0,), compiler_options=_FAST_COMPILE)
def _apply(graphdef, state, inputs):
    model = nnx.merge(graphdef, state)
    return model(inputs, deterministic=True, negatives=True)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Small matrices: torch's thread pool only contends with XLA on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_batch(seed):
    """Features (CLAP frames, tef, text) with padding zeroed, and the masks."""
    rng = np.random.default_rng(seed)
    audio_mask = np.arange(FRAMES)[None] < np.array(AUDIO_LENS)[:, None]
    text_mask = np.arange(TOKENS)[None] < np.array(TEXT_LENS)[:, None]
    clap = rng.normal(size=(len(AUDIO_LENS), FRAMES, 768)).astype(np.float32)
    text = rng.normal(size=(len(AUDIO_LENS), TOKENS, 768)).astype(np.float32)
    tef = np.zeros((len(AUDIO_LENS), FRAMES, 2), np.float32)
    for b, n in enumerate(AUDIO_LENS):
        start = np.arange(n, dtype=np.float32) / n
        tef[b, :n] = np.stack([start, start + 1.0 / n], axis=1)
    return clap * audio_mask[..., None], tef, text * text_mask[..., None], audio_mask, text_mask


def reference_model(layout, seed):
    """A seeded random reference model; the 1-d parameters perturbed off their init."""
    torch.manual_seed(seed)
    model = TorchQDDETR(audio_proj=AUDIO_PROJ[layout])
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def run_reference(model, batch, layout):
    """Outputs (numpy) of the torch model fed as the layout's reference code feeds it."""
    clap, tef, text, audio_mask, text_mask = (torch.from_numpy(np.ascontiguousarray(x))
                                              for x in batch)
    am, tm = audio_mask.float(), text_mask.float()
    with torch.no_grad():
        if layout == "lighthouse":  # tef as the "video" features, audio concatenated after
            out = model(text, tm, tef, am, clap)
        else:  # the DCASE baseline's dataset builds [clap, tef] rows
            out = model(text, tm, torch.cat([clap, tef], dim=2), am)
    return jax.tree.map(lambda t: t.numpy(), out)


@pytest.fixture(scope="module")
def blank_model():
    """`blank_model(config)`: a QDDETR with zero placeholder parameters.

    Skips the random initialization of 7 M parameters (op by op, slow on a busy
    CPU): the converter overwrites every parameter and raises if the name table
    misses one. Graph and shapes come from `nnx.eval_shape`, once per config.
    """
    skeletons = {}

    def build(config):
        key = config.to_json()
        if key not in skeletons:
            skeletons[key] = nnx.split(nnx.eval_shape(lambda: qd.QDDETR(config,
                                                                          rngs=nnx.Rngs(0))))
        graphdef, abstract = skeletons[key]
        return nnx.merge(graphdef, jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), abstract))

    return build


def converted_model(tmp_path, blank_model, reference, layout, reference_mask):
    """torch.save in the reference format -> restricted load -> strict conversion."""
    path = tmp_path / "best.ckpt"
    save_reference_checkpoint(path, reference.state_dict(), opt={"nheads": 8, "hidden_dim": 256})
    state_dict, ignored = convert.split_checkpoint(load_torch_checkpoint(path))
    assert ignored == ["optimizer", "lr_scheduler", "epoch", "opt"]
    config = qd.default_model_config()
    config.t2v_reference_mask = reference_mask
    model = blank_model(config)
    records = convert.load_state_dict_into(model, convert.torch_state_dict_to_numpy(state_dict),
                                           config, layout)
    assert len(records) == len(state_dict) == 178
    return model


def run_flax(model, batch, layout):
    """Eval outputs (numpy, negatives included) of the Flax model on the layout's rows."""
    clap, tef, text, audio_mask, text_mask = batch
    audio = np.concatenate([tef, clap] if layout == "lighthouse" else [clap, tef], axis=-1)
    inputs = DetrInputs(audio=audio, audio_mask=audio_mask, text=text, text_mask=text_mask)
    graphdef, state = nnx.split(model)
    with jax.default_matmul_precision("highest"):
        return jax.tree.map(np.asarray, _apply(graphdef, state, inputs))


def assert_outputs_close(got, expected, audio_mask, *, negatives=True):
    """Logits, spans (final and aux) everywhere; saliency on valid frames; within ATOL."""
    pairs = [("pred_logits", got["pred_logits"], expected["pred_logits"]),
             ("pred_spans", got["pred_spans"], expected["pred_spans"])]
    assert len(got["aux_outputs"]) == len(expected["aux_outputs"]) == 1
    for i, (a, b) in enumerate(zip(got["aux_outputs"], expected["aux_outputs"])):
        pairs += [(f"aux_outputs[{i}].{k}", a[k], b[k]) for k in ("pred_logits", "pred_spans")]
    # Padded frames hold arbitrary saliency values on both sides.
    keys = ("saliency_scores", "saliency_scores_neg") if negatives else ("saliency_scores",)
    pairs += [(k, np.where(audio_mask, got[k], 0.0), np.where(audio_mask, expected[k], 0.0))
              for k in keys]
    for name, a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=0, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("layout", ["lighthouse", "dcase"])
def test_reference_mask_model_equals_reference(tmp_path, blank_model, layout):
    """`t2v_reference_mask=True` (predict_detr --reproduce_reference) == the reference."""
    reference = reference_model(layout, seed=0)
    batch = make_batch(seed=1)
    expected = run_reference(reference, batch, layout)
    got = run_flax(converted_model(tmp_path, blank_model, reference, layout, True), batch, layout)
    assert_outputs_close(got, expected, batch[3])
    # The batch exercises the quirk: per-row masking changes the reference's outputs.
    reference.t2v_batch_mixing_mask = False
    per_row = run_reference(reference, batch, layout)
    assert np.abs(per_row["pred_logits"] - expected["pred_logits"]).max() > 1e-3
    assert np.abs(per_row["saliency_scores"] - expected["saliency_scores"])[batch[3]].max() > 1e-3


@pytest.mark.parametrize("layout", ["lighthouse", "dcase"])
def test_default_model_equals_reference_run_row_by_row(tmp_path, blank_model, layout):
    """The default per-row text mask == the reference with per-row masks, and (positive
    pass) == the reference run on each query alone, unpadded, as a batch of one."""
    reference = reference_model(layout, seed=2)
    batch = make_batch(seed=3)
    got = run_flax(converted_model(tmp_path, blank_model, reference, layout, False), batch, layout)
    reference.t2v_batch_mixing_mask = False
    assert_outputs_close(got, run_reference(reference, batch, layout), batch[3])
    reference.t2v_batch_mixing_mask = True  # the reference as it is
    for row, (n_frames, n_tokens) in enumerate(zip(AUDIO_LENS, TEXT_LENS)):
        alone = tuple(x[row:row + 1, :n] for x, n in zip(
            batch, (n_frames, n_frames, n_tokens, n_frames, n_tokens)))
        expected = run_reference(reference, alone, layout)
        row_out = jax.tree.map(lambda x: x[row:row + 1], got)
        row_out["saliency_scores"] = row_out["saliency_scores"][:, :n_frames]
        assert_outputs_close(row_out, expected, alone[3], negatives=False)


@pytest.mark.skipif(not os.environ.get("LIGHTHOUSE_SRC"),
                    reason="set LIGHTHOUSE_SRC to a line/lighthouse checkout to check the oracle")
def test_transcription_equals_the_lighthouse_module():
    """The oracle itself: the real lighthouse QDDETR's state dict loads strictly into
    `TorchQDDETR` and both compute the same outputs (reference mask, padded batch)."""
    lighthouse = build_lighthouse_qd_detr(os.environ["LIGHTHOUSE_SRC"])
    torch.manual_seed(4)
    with torch.no_grad():
        for p in lighthouse.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    ours = TorchQDDETR(audio_proj="input_vid_proj").eval()
    ours.load_state_dict(lighthouse.state_dict(), strict=True)
    batch = make_batch(seed=5)
    clap, tef, text, audio_mask, text_mask = (torch.from_numpy(x) for x in batch)
    with torch.no_grad():
        expected = lighthouse(text, text_mask.float(), tef, audio_mask.float(), clap,
                              audio_mask.float())
    expected = jax.tree.map(lambda t: t.numpy(), expected)
    assert_outputs_close(run_reference(ours, batch, "lighthouse"), expected, batch[3])
