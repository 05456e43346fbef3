"""experiments.extract_features end to end on synthetic wavs and a random-weight checkpoint."""

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import clap_testlib as lib
import htsat_testlib as tl
from amr_jax.data import features

REPO = Path(__file__).resolve().parents[2]
SR = 44_100


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(rate)
        f.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    vocab_dir = lib.write_tiny_vocab(root / "tokenizer")
    from amr_jax.clap.tokenizer import ClapTokenizer

    hf = lib.tiny_gpt2(vocab_size=ClapTokenizer.from_dir(vocab_dir).vocab_size, seed=2, n_embd=48,
                       n_layer=1, n_head=4)
    model = tl.torch_htsat(tl.SMALL, seed=4)
    sd = lib.random_msclap_state_dict(seed=1, d_in=tl.SMALL.num_features, d_out=16, caption_in=48,
                                      htsat=tl.checkpoint_weights(model))
    sd.update({f"caption_encoder.base.{k}": v.numpy() for k, v in hf.state_dict().items()})
    lib.save_pth(sd, root / "ck.pth")
    _run("experiments.convert_clap", f"--checkpoint={root / 'ck.pth'}",
         f"--output={root / 'clap'}", "--gpt2_num_heads=4")
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir()
    a = (0.3 * np.sin(2 * np.pi * 500 * np.arange(int(2.3 * SR)) / SR)
         + rng.normal(0, 0.05, int(2.3 * SR)))
    _write_wav(audio / "rec_a.wav", a, SR)
    _write_wav(audio / "rec_b.wav", rng.normal(0, 0.1, int(3.5 * 16000)), 16000)
    queries = root / "q.jsonl"
    queries.write_text("\n".join(json.dumps(r) for r in [
        {"qid": 7, "query": "a dog barks", "duration": 2.3, "vid": "rec_a"},
        {"qid": 9, "query": "rain on a roof", "duration": 3.5, "vid": "rec_b"}]) + "\n")
    proc = _run("experiments.extract_features", f"--clap={root / 'clap'}", f"--audio={audio}",
                "--layout=clotho_moment", f"--output={root / 'feats'}", f"--queries={queries}",
                f"--tokenizer_dir={vocab_dir}", "--batch_size=2")
    return root, model, hf, vocab_dir, a, proc


def test_audio_features_match_reference_extraction(extracted):
    root, model, _, _, a, proc = extracted
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["frames"] == {"rec_a": 3, "rec_b": 4}
    got = features.load_audio_features(root / "feats" / "clap" / "rec_a.npz",
                                       dim=tl.SMALL.num_features)
    pcm = (np.clip(a, -1, 1) * 32767).astype("<i2").astype(np.float32) / 32768
    windows = torch.nn.functional.pad(torch.from_numpy(pcm), (SR // 2, SR // 2)).unfold(0, SR, SR)
    ref, _ = tl.torch_embedding(model, windows.numpy())
    assert got.dtype == np.float32 and got.shape == (3, tl.SMALL.num_features)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    assert not list((root / "feats" / "clap").glob("*.tmp*"))


def test_text_features_are_gpt2_rows(extracted):
    root, _, hf, vocab_dir, _, _ = extracted
    ids, mask = lib.reference_tokenize(vocab_dir, ["rain on a roof"])
    with torch.no_grad():
        hidden = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    ref = hidden.last_hidden_state[0, : int(mask.sum())].numpy()
    with np.load(root / "feats" / "clap_text" / "qid9.npz") as z:
        got = z["last_hidden_state"]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_checkpoint_without_htsat_is_a_clear_error(tmp_path):
    lib.save_pth(lib.random_msclap_state_dict(seed=0, d_in=8, d_out=8), tmp_path / "ck.pth")
    _run("experiments.convert_clap", f"--checkpoint={tmp_path / 'ck.pth'}",
         f"--output={tmp_path / 'clap'}")
    (tmp_path / "x.wav").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "experiments.extract_features",
                           f"--clap={tmp_path / 'clap'}", f"--audio={tmp_path / 'x.wav'}",
                           "--layout=castella", f"--output={tmp_path / 'o'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "holds no HTS-AT weights" in proc.stderr
