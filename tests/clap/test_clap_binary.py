"""experiments.convert_clap on the synthetic generator's checkpoint, end to end."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clap_testlib as lib
from amr_jax.clap import convert, embed
from amr_jax.data import features

REPO = Path(__file__).resolve().parents[2]


def _run(module, *args):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """make_synthetic (2 recordings) then convert_clap on its .pth checkpoint."""
    root = tmp_path_factory.mktemp("synthetic")
    _run("experiments.make_synthetic", "--preset=castella", f"--output={root}", "--seed=0",
         "--num_recordings=2")
    proc = _run("experiments.convert_clap", f"--checkpoint={root / 'msclap_synthetic.pth'}",
                f"--output={root / 'converted'}")
    assert "converted 8 tensors, ignored 1" in proc.stdout
    return root, convert.load_converted(root / "converted")


def test_embeddings_equal_numpy_head_on_generator_weights(converted):
    root, params = converted
    with np.load(root / "msclap_synthetic.npz") as z:
        sd = {k: z[k] for k in z.files}
    assert params.report["ignored"] == ["logit_scale"]
    clap = params.to_model()

    vids = sorted(p.stem for p in (root / "clap").glob("*.npz"))
    audio = [
        features.load_audio_features(features.audio_feature_path(root / "clap", v))
        for v in vids
    ]
    x = np.zeros((len(audio), max(map(len, audio)), features.FEATURE_DIM), np.float32)
    mask = np.zeros(x.shape[:2], bool)
    for i, a in enumerate(audio):
        x[i, : len(a)], mask[i, : len(a)] = a, True
    out = embed.project_audio(clap, x, mask, chunk_size=1)
    ref = lib.numpy_head(x[mask], sd, "audio_encoder.projection.")
    assert np.abs(out[mask] - ref).max() <= 1e-5

    texts = sorted((root / "clap_text").glob("qid*.npz"))[:4]
    rows = [features.load_text_features(p) for p in texts]
    t = np.zeros((len(rows), max(map(len, rows)), features.FEATURE_DIM), np.float32)
    tm = np.zeros(t.shape[:2], bool)
    for i, r in enumerate(rows):
        t[i, : len(r)], tm[i, : len(r)] = r, True
    q = embed.embed_query_from_features(clap, t, tm)
    ref_q = lib.numpy_head(np.stack([r[-1] for r in rows]), sd, "caption_encoder.projection.")
    assert np.abs(q - ref_q).max() <= 1e-5

    n = embed.neutral_embedding(clap, neutral_feats_dir=root / "neutral_text")
    eot = [
        features.load_text_features(embed.neutral_feature_path(root / "neutral_text", p))[-1]
        for p in embed.NEUTRAL_PROMPTS
    ]
    ref_n = lib.numpy_head(np.stack(eot), sd, "caption_encoder.projection.").mean(0)
    assert np.abs(n - ref_n / np.linalg.norm(ref_n)).max() <= 1e-5


def test_binary_reports_bad_checkpoint(tmp_path):
    sd = lib.random_msclap_state_dict(seed=1, d_in=8, d_out=12)
    sd["audio_encoder.projection.extra.weight"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "bad.npz", **sd)
    proc = subprocess.run([sys.executable, "-m", "experiments.convert_clap",
                           f"--checkpoint={tmp_path / 'bad.npz'}", f"--output={tmp_path / 'out'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unexpected ['audio_encoder.projection.extra.weight']" in proc.stderr
    assert not (tmp_path / "out" / convert.REPORT_NAME).exists()
