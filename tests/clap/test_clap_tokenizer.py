"""MS-CLAP 2023 tokenization against transformers' GPT-2 tokenizer on a tiny BPE vocabulary."""

import json

import numpy as np
import pytest

import clap_testlib as lib
from amr_jax.clap.tokenizer import ClapTokenizer, last_index

TEXTS = [
    "Wow! dog bark",          # '!' is id 0: pooled one row before end-of-text
    "dog bark",
    "a dog!! barks !",        # '!!' would merge in plain GPT-2; here it is [0, 0]
    "ambient noise",
    "naïve café ☃ 12",
    "dog bark " * 40,         # more than 77 tokens: first 77 kept
]


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return lib.write_tiny_vocab(tmp_path_factory.mktemp("vocab"))


def test_ids_and_mask_match_msclap_steps(vocab_dir):
    tok = ClapTokenizer.from_dir(vocab_dir)
    ids, mask = tok(TEXTS)
    ref_ids, ref_mask = lib.reference_tokenize(vocab_dir, TEXTS)
    assert ids.shape == (len(TEXTS), 77) and ids.dtype == np.int32
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(mask, ref_mask)
    # MS-CLAP's pooling index: torch.ne(ids, 0).sum(-1) - 1 on the reference ids.
    np.testing.assert_array_equal(last_index(ids), (ref_ids != 0).sum(-1) - 1)


def test_exclamation_quirk(vocab_dir):
    tok = ClapTokenizer.from_dir(vocab_dir)
    ids, mask = tok(TEXTS[:3])
    eot = mask.sum(-1) - 1  # position of <|endoftext|>
    assert (ids[np.arange(3), eot] == tok.eot_id).all()
    idx = last_index(ids)
    assert idx[1] == eot[1]          # no '!': the end-of-text row
    assert idx[0] == eot[0] - 1      # one '!': one row earlier
    assert idx[2] == eot[2] - 3      # three "!" tokens
    vocab = json.loads((vocab_dir / "vocab.json").read_text())
    assert list(ids[2, :4]) == [vocab["a"], vocab["Ġdog"], 0, 0]


def test_truncation_and_wraparound():
    ids = np.zeros((2, 5), np.int32)
    ids[0] = [3, 4, 5, 6, 7]
    np.testing.assert_array_equal(last_index(ids), [4, 4])  # -1 wraps like torch indexing


def test_bad_vocabulary(tmp_path, vocab_dir):
    vocab = json.loads((vocab_dir / "vocab.json").read_text())
    vocab["!"], vocab["\""] = vocab["\""], vocab["!"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text((vocab_dir / "merges.txt").read_text())
    with pytest.raises(ValueError, match="'!' has id 1"):
        ClapTokenizer.from_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        ClapTokenizer(vocab_dir / "vocab.json", tmp_path / "missing" / "merges.txt")
    with pytest.raises(TypeError):
        ClapTokenizer.from_dir(vocab_dir)("one string")
