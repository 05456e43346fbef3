"""GPT-2 tokenization exactly as MS-CLAP 2023 prepares captions.

MS-CLAP (`CLAPWrapper.preprocess_text` with the `gpt2` tokenizer) does:

1. append `" <|endoftext|>"` to the caption;
2. register `"!"` as the pad token. `"!"` is already GPT-2 token 0, so this adds
   no new id, but `"!"` becomes a special token: every `"!"` in a caption is split
   out as its own id 0 (so `"!!"` is `[0, 0]`, not GPT-2's merged `"!!"` token);
3. encode with `max_length=77, padding="max_length"` (longer captions keep their
   first 77 tokens), padding with id 0 and attention mask 0;
4. pool the hidden state at `count(ids != 0) - 1`.

Because the pad id equals the id of `"!"`, a caption containing `"!"` is pooled
*before* its end-of-text token (one position earlier per `"!"`). This is what
produced the released embeddings, so `last_index` keeps it. The released
per-token text features, by contrast, keep every attended row, and their last
row is the end-of-text token.

Only local files are read (`vocab.json` + `merges.txt`); nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

END_OF_TEXT = "<|endoftext|>"
PAD_TOKEN = "!"
PAD_ID = 0
TEXT_LEN = 77  # MS-CLAP 2023 `text_len`


class ClapTokenizer:
    """MS-CLAP 2023 caption tokenizer over a local GPT-2 BPE vocabulary.

    Args:
      vocab_path: GPT-2 `vocab.json` (token -> id; `"!"` must be id 0).
      merges_path: GPT-2 `merges.txt`.
      max_length: padded length (77 in MS-CLAP 2023).
    """

    def __init__(
        self,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        *,
        max_length: int = TEXT_LEN,
    ):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

        vocab_path, merges_path = Path(vocab_path), Path(merges_path)
        for p in (vocab_path, merges_path):
            if not p.is_file():
                raise FileNotFoundError(f"GPT-2 tokenizer file not found: {p}")
        # GPT-2's BPE: byte-level, no unknown token, no normalizer, no prefix space.
        model = models.BPE.from_file(str(vocab_path), str(merges_path))
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        for token in (END_OF_TEXT, PAD_TOKEN):
            if tok.token_to_id(token) is None:
                raise ValueError(f"{vocab_path}: vocabulary has no {token!r} token")
        if tok.token_to_id(PAD_TOKEN) != PAD_ID:
            raise ValueError(
                f"{vocab_path}: {PAD_TOKEN!r} has id {tok.token_to_id(PAD_TOKEN)}, "
                f"expected {PAD_ID} as in GPT-2"
            )
        # Existing vocabulary ids are kept; both become atomic special tokens.
        tok.add_special_tokens(
            [AddedToken(END_OF_TEXT, special=True), AddedToken(PAD_TOKEN, special=True)]
        )
        self._tok = tok
        self.max_length = max_length
        self.eot_id = tok.token_to_id(END_OF_TEXT)
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, **kwargs) -> ClapTokenizer:
        """Reads `vocab.json` and `merges.txt` from a local folder (e.g. a HF snapshot)."""
        directory = Path(directory)
        return cls(directory / "vocab.json", directory / "merges.txt", **kwargs)

    def tokenize(self, text: str) -> list[int]:
        """Ids of `text + " <|endoftext|>"`, before truncation and padding."""
        return self._tok.encode(text + " " + END_OF_TEXT, add_special_tokens=True).ids

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encodes captions as MS-CLAP does.

        Args:
          texts: B captions (plain strings).

        Returns:
          (input_ids `[B, max_length]` int32 padded with 0,
           attention_mask `[B, max_length]` int32, 1 on real tokens).
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        ids = np.full((len(texts), self.max_length), PAD_ID, np.int32)
        mask = np.zeros((len(texts), self.max_length), np.int32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
            row = self.tokenize(text)[: self.max_length]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


def last_index(input_ids: np.ndarray) -> np.ndarray:
    """MS-CLAP's pooling index `count(ids != 0) - 1` per row, `[B, L] -> [B]`.

    A row with no non-zero id gives -1, which torch indexing wraps to `L - 1`;
    the same wrap is applied here.
    """
    input_ids = np.asarray(input_ids)
    idx = np.sum(input_ids != PAD_ID, axis=-1) - 1
    return np.mod(idx, input_ids.shape[-1]).astype(np.int32)
