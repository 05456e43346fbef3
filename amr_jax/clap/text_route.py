"""What the raw-text route needs (GPT-2 weights + a local tokenizer), checked up front.

The binaries embed text two ways: from the released text features (the end-of-text row, no
GPT-2 needed) or from raw text through MS-CLAP's GPT-2 (DESIGN section 4, route b). The raw-text
route needs the GPT-2 weights in the converted MS-CLAP folder (`caption_encoder.base.*` in the
checkpoint, or `experiments.convert_clap --gpt2_dir`) and a GPT-2 tokenizer folder holding
`vocab.json` and `merges.txt`. `require_tokenizer` reports every missing piece at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from amr_jax.clap.convert import GPT2_PREFIX, REPORT_NAME
from amr_jax.clap.heads import ClapModel
from amr_jax.clap.tokenizer import ClapTokenizer
from amr_jax.data.errors import ModelFileError

TOKENIZER_FILES = ("vocab.json", "merges.txt")


def require_tokenizer(clap: ClapModel, *, clap_dir: str | os.PathLike | None,
                      tokenizer_dir: str | os.PathLike | None, needed_for: str,
                      otherwise: str = "") -> ClapTokenizer:
    """The tokenizer of the raw-text route, after checking that GPT-2 is there too.

    Args:
      clap: the converted model (`clap.gpt2` is None when the folder holds no GPT-2).
      clap_dir: the converted MS-CLAP folder (named in the error).
      tokenizer_dir: local folder with `vocab.json` and `merges.txt`, or None.
      needed_for: what asks for the route, e.g. "--query_route=text".
      otherwise: an alternative appended to the error, e.g. "; or pass --neutral_feats=DIR".

    Raises:
      ModelFileError: naming every missing piece (GPT-2 weights, the tokenizer folder or its
        files) and what to pass.
    """
    problems = []
    if clap.gpt2 is None:
        problems.append(
            f"the converted MS-CLAP folder {clap_dir} holds no GPT-2 text encoder ({REPORT_NAME}: "
            f"no {GPT2_PREFIX}* weights): convert a checkpoint that holds {GPT2_PREFIX}*, or add a "
            "local GPT-2 with `python -m experiments.convert_clap --checkpoint=CKPT "
            "--gpt2_dir=LOCAL_GPT2 --output=DIR` and pass --clap=DIR")
    if not tokenizer_dir:
        problems.append("no GPT-2 tokenizer: pass --tokenizer_dir=DIR, a local folder with "
                        + " and ".join(TOKENIZER_FILES))
    else:
        missing = [str(Path(tokenizer_dir) / f) for f in TOKENIZER_FILES
                   if not (Path(tokenizer_dir) / f).is_file()]
        if missing:
            problems.append(f"tokenizer file(s) missing: {', '.join(missing)} (--tokenizer_dir "
                            "must be a local GPT-2 tokenizer folder with "
                            + " and ".join(TOKENIZER_FILES) + ")")
    if problems:
        raise ModelFileError(f"{needed_for} needs the raw-text route (MS-CLAP's GPT-2): "
                             + "; ".join(problems) + otherwise)
    return ClapTokenizer.from_dir(tokenizer_dir)
