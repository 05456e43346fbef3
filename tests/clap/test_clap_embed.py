"""Joint-space embeddings against numpy and torch references."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clap_testlib as lib
from amr_jax.clap import convert, embed
from amr_jax.clap.tokenizer import ClapTokenizer
from amr_jax.data.errors import FeatureError

D, J = 768, 1024
N_EMBD = 48


@pytest.fixture(scope="module")
def sd():
    return lib.random_msclap_state_dict(seed=11, d_in=D, d_out=J)


@pytest.fixture(scope="module")
def clap(sd):
    params, report = convert.convert_state_dict(sd)
    return convert.params_to_clap(params, report).to_model()


def _ragged(rng, lengths, width, scale=1.0):
    x = np.zeros((len(lengths), max(lengths), width), np.float32)
    mask = np.zeros(x.shape[:2], bool)
    for i, n in enumerate(lengths):
        x[i, :n] = scale * rng.normal(size=(n, width))
        mask[i, :n] = True
    return x, mask


def test_project_audio_matches_numpy_and_padding_is_inert(sd, clap):
    rng = np.random.default_rng(0)
    lengths = [7, 3, 9, 1, 5]
    x, mask = _ragged(rng, lengths, D, scale=2.0)
    x[~mask] = 1e3  # garbage in padded frames must not reach valid ones
    out = embed.project_audio(clap, x, mask, chunk_size=2)  # 3 chunks, last one padded
    assert out.shape == (5, 9, J) and out.dtype == np.float32
    ref = lib.numpy_head(x[mask], sd, "audio_encoder.projection.")
    assert np.abs(out[mask] - ref).max() <= 1e-5
    np.testing.assert_array_equal(out[~mask], 0.0)
    # Padded equals unpadded: recording 2 alone, at its own length.
    alone = embed.project_audio(clap, x[2:3, :9], mask[2:3, :9], chunk_size=2)
    np.testing.assert_allclose(alone[0], out[2], atol=1e-6)


def test_project_audio_errors(clap):
    x = np.zeros((2, 4, D), np.float32)
    m = np.ones((2, 4), bool)
    with pytest.raises(ValueError, match="width 767"):
        embed.project_audio(clap, x[..., :767], m)
    with pytest.raises(ValueError, match="mask shape"):
        embed.project_audio(clap, x, m[:, :3])
    with pytest.raises(ValueError, match=r"\[N, T, D\]"):
        embed.project_audio(clap, x[0], m[0])
    x[1, 2, 5] = np.inf
    with pytest.raises(ValueError, match=r"non-finite values at \(row, position\) \[1 2\]"):
        embed.project_audio(clap, x, m)
    x[1, 2, 5] = 0.0
    with pytest.raises(ValueError, match="chunk_size"):
        embed.project_audio(clap, x, m, chunk_size=0)
    empty = embed.project_audio(clap, x[:0], m[:0])
    assert empty.shape == (0, 4, J)


def test_query_from_features_uses_last_valid_row(sd, clap):
    rng = np.random.default_rng(1)
    text, mask = _ragged(rng, [4, 1, 6], D)
    out = embed.embed_query_from_features(clap, text, mask, chunk_size=2)
    last = np.stack([text[0, 3], text[1, 0], text[2, 5]])
    ref = lib.numpy_head(last, sd, "caption_encoder.projection.")
    assert out.shape == (3, J)
    assert np.abs(out - ref).max() <= 1e-5
    mask[1] = False
    with pytest.raises(ValueError, match=r"text rows \[1\] have no valid token"):
        embed.embed_query_from_features(clap, text, mask)


def _write_text_feats(directory, rows, *, padded_with_mask=False):
    directory.mkdir(parents=True, exist_ok=True)
    for prompt, r in zip(embed.NEUTRAL_PROMPTS, rows):
        path = embed.neutral_feature_path(directory, prompt)
        if padded_with_mask:
            x = np.zeros((1, 77, r.shape[1]), np.float32)
            x[0, : len(r)] = r
            valid = (np.arange(77) < len(r))[None].astype(np.int64)
            np.savez(path, last_hidden_state=x, attention_mask=valid)
        else:
            np.savez(path, last_hidden_state=r)


def test_neutral_from_feature_files(sd, clap, tmp_path):
    rng = np.random.default_rng(2)
    rows = [rng.normal(size=(n, D)).astype(np.float32) for n in (3, 4, 3)]
    expected = lib.numpy_head(np.stack([r[-1] for r in rows]), sd, "caption_encoder.projection.")
    expected = expected.mean(0)
    expected /= np.linalg.norm(expected)
    _write_text_feats(tmp_path / "plain", rows)
    _write_text_feats(tmp_path / "padded", rows, padded_with_mask=True)
    for d in ("plain", "padded"):
        n = embed.neutral_embedding(clap, neutral_feats_dir=tmp_path / d)
        assert n.shape == (J,)
        assert np.abs(n - expected).max() <= 1e-5
    with pytest.raises(FeatureError, match="background_sound.npz"):
        embed.neutral_embedding(clap, neutral_feats_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="neutral_feats_dir"):
        embed.neutral_embedding(clap)


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    """Tiny vocabulary, tiny random GPT-2 and caption head, converted through a checkpoint."""
    vocab_dir = lib.write_tiny_vocab(tmp_path_factory.mktemp("vocab"))
    tok = ClapTokenizer.from_dir(vocab_dir)
    hf = lib.tiny_gpt2(vocab_size=tok.vocab_size, seed=7, n_embd=N_EMBD)
    sd = lib.random_msclap_state_dict(seed=12, d_in=32, d_out=64, caption_in=N_EMBD)
    for k, v in hf.state_dict().items():
        sd[f"caption_encoder.base.{k}"] = v.numpy()
    params, report = convert.convert_state_dict(sd, gpt2_num_heads=4)
    model = convert.params_to_clap(params, report).to_model()
    head = lib.random_torch_projection(N_EMBD, 64, seed=0)
    head.load_state_dict(
        {k: torch.from_numpy(sd[f"caption_encoder.projection.{k}"]) for k in lib.HEAD_SUFFIXES}
    )
    return vocab_dir, tok, hf, head, model


def _torch_text_embedding(vocab_dir, hf, head, texts):
    """MS-CLAP's caption encoder path in torch: GPT-2, row count(ids != 0) - 1, head, normalize."""
    ids, mask = lib.reference_tokenize(vocab_dir, texts)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        seq = torch.ne(ids, 0).sum(-1) - 1
        pooled = hidden[torch.arange(len(texts)), seq]
        return F.normalize(head(pooled), dim=-1).numpy()


def test_query_from_text_matches_torch_pipeline(text_setup):
    vocab_dir, tok, hf, head, model = text_setup
    texts = ["Wow! dog bark", "dog bark", "a dog!! barks !", "ambient noise", "x"]
    ours = embed.embed_query_from_text(model, tok, texts, chunk_size=2)
    ref = _torch_text_embedding(vocab_dir, hf, head, texts)
    assert ours.shape == (5, 64)
    assert np.abs(ours - ref).max() <= 1e-4

    neutral = embed.neutral_embedding(model, tokenizer=tok)
    ref_n = _torch_text_embedding(vocab_dir, hf, head, list(embed.NEUTRAL_PROMPTS)).mean(0)
    np.testing.assert_allclose(neutral, ref_n / np.linalg.norm(ref_n), atol=1e-4)


def test_query_from_text_needs_gpt2(clap, text_setup):
    tok = text_setup[1]
    with pytest.raises(ValueError, match="no GPT-2 weights"):
        embed.embed_query_from_text(clap, tok, ["dog"])


def test_embedding_is_deterministic_even_for_training_mode_heads(sd, clap):
    x = np.random.default_rng(3).normal(size=(2, 3, D)).astype(np.float32)
    m = np.ones((2, 3), bool)
    want = embed.project_audio(clap, x, m)
    clap.audio_head.train()
    try:
        got = embed.project_audio(clap, x, m)
    finally:
        clap.audio_head.eval()
    np.testing.assert_array_equal(got, want)
