"""Raw-text routes of experiments.localize / experiments.diagnose on the SYNTHETIC checkpoint
extended with a tiny GPT-2 (`caption_encoder.base.*`) and a tiny GPT-2-style tokenizer.

The references are torch: transformers' GPT2Model and GPT2Tokenizer with MS-CLAP's steps and a
torch projection head loaded with the checkpoint's caption head.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clap_testlib as lib
from amr_jax import cli
from amr_jax.clap import convert, embed
from amr_jax.clap.tokenizer import ClapTokenizer
from amr_jax.data.errors import ModelFileError
from amr_jax.eval import diagnostics
from amr_jax.localize import pipeline
from experiments.configs import localize as localize_configs

REPO = Path(__file__).resolve().parents[2]
N_HEAD = 4


@pytest.fixture(scope="module")
def routes(synthetic_castella, tmp_path_factory):
    """The synthetic heads plus a 1-layer, 768-wide random GPT-2, converted; a tiny tokenizer."""
    root = tmp_path_factory.mktemp("text_routes")
    vocab_dir = lib.write_tiny_vocab(root / "tokenizer")
    tok = ClapTokenizer.from_dir(vocab_dir)
    hf = lib.tiny_gpt2(vocab_size=tok.vocab_size, seed=5, n_embd=768, n_layer=1, n_head=N_HEAD,
                       n_inner=128)
    with np.load(synthetic_castella / "msclap_synthetic.npz") as z:
        sd = {k: z[k] for k in z.files}
    sd.update({f"caption_encoder.base.{k}": v.numpy() for k, v in hf.state_dict().items()})
    np.savez(root / "msclap_synthetic_gpt2.npz", **sd)
    convert.convert_and_save(root / "msclap_synthetic_gpt2.npz", root / "clap_gpt2",
                             gpt2_num_heads=N_HEAD)
    no_gpt2 = root / "clap_heads_only"
    convert.convert_and_save(synthetic_castella / "msclap_synthetic.npz", no_gpt2)
    return {"data": synthetic_castella, "tokenizer": vocab_dir, "clap": root / "clap_gpt2",
            "clap_no_gpt2": no_gpt2, "hf": hf, "head": lib.torch_caption_head(sd), "tok": tok}


def _split_args(d):
    return {"annotations": d / "annotations.jsonl", "audio_feats": d / "clap",
            "text_feats": d / "clap_text"}


def _run(module, *args, ok=True):
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return proc


def _partial_tokenizer(routes, folder: Path) -> Path:
    """A tokenizer folder holding vocab.json but no merges.txt."""
    folder.mkdir()
    (folder / "vocab.json").write_text((routes["tokenizer"] / "vocab.json").read_text())
    return folder


def _torch_neutral(routes):
    emb = lib.torch_text_embedding(routes["tokenizer"], routes["hf"], routes["head"],
                                   list(embed.NEUTRAL_PROMPTS)).mean(0)
    return emb / np.linalg.norm(emb)


def test_gmm_contrast_with_only_clap_and_tokenizer(routes, tmp_path):
    """The binary needs no --neutral_feats; its neutral direction is the three phrases' GPT-2 +
    head embedding (torch reference), and its predictions equal the library call's."""
    d = routes["data"]
    args = _split_args(d)
    # The full config on this split is what tests/localize compiles too (shared executables).
    config = "experiments/configs/localize.py:gmm_contrast"
    run = _run("experiments.localize", f"--config={config}",
               *(f"--{k}={v}" for k, v in args.items()), f"--clap={routes['clap']}",
               f"--tokenizer_dir={routes['tokenizer']}", f"--output={tmp_path / 'bin.jsonl'}")
    assert "neutral direction from the phrases" in run.stderr
    last = json.loads(run.stdout.strip().splitlines()[-1])
    assert list(last) == ["R1@0.5", "R1@0.7", "mAP", "mAP@0.5", "mAP@0.75"]

    out = pipeline.run_localization(localize_configs.get_config("gmm_contrast"),
                                    output=tmp_path / "lib.jsonl", clap_dir=routes["clap"],
                                    tokenizer_dir=routes["tokenizer"], print_report=False, **args)
    neutral = out["embedded"].neutral
    assert neutral.shape == (1024,)
    assert np.abs(neutral - _torch_neutral(routes)).max() <= 1e-4
    model = convert.load_converted(routes["clap"]).to_model()
    np.testing.assert_allclose(neutral, embed.neutral_embedding(model, tokenizer=routes["tok"]),
                               atol=1e-6)
    # The phrases' direction is not the one of the released neutral features.
    from_files = embed.neutral_embedding(model, neutral_feats_dir=d / "neutral_text")
    assert np.abs(neutral - from_files).max() > 1e-2
    assert (tmp_path / "bin.jsonl").read_text() == (tmp_path / "lib.jsonl").read_text()


def test_query_route_text_embeds_the_raw_queries(routes):
    d = routes["data"]
    split = pipeline.load_split(*_split_args(d).values(), progress=False)
    config = localize_configs.get_config("jointproj_s1,runlocal")
    arrays = pipeline.split_arrays(split, max_frames=config.max_frames,
                                   frame_bucket=config.frame_bucket)
    text = pipeline.embed_split(config, arrays, clap_dir=routes["clap"], neutral_feats=None,
                                tokenizer_dir=routes["tokenizer"], query_route="text")
    ref = lib.torch_text_embedding(routes["tokenizer"], routes["hf"], routes["head"],
                                   [r.query for r in split.records])
    assert text.queries.shape == (len(split.records), 1024)
    assert np.abs(text.queries - ref).max() <= 1e-4
    feats = pipeline.embed_split(config, arrays, clap_dir=routes["clap"], neutral_feats=None)
    assert np.abs(feats.queries - text.queries).max() > 1e-2  # the route did switch
    np.testing.assert_array_equal(np.asarray(feats.audio), np.asarray(text.audio))


def test_diagnose_with_text_routes(routes, tmp_path, monkeypatch):
    d = routes["data"]
    encoded = []  # every text that went through GPT-2
    real = embed.embed_query_from_text

    def spy(clap, tokenizer, texts, **kwargs):
        encoded.extend(texts)
        return real(clap, tokenizer, texts, **kwargs)

    monkeypatch.setattr(embed, "embed_query_from_text", spy)
    result = diagnostics.run_diagnostics(
        localize_configs.get_config("gmm_contrast"), clap_dir=routes["clap"],
        tokenizer_dir=routes["tokenizer"], query_route="text", output=tmp_path / "d.json",
        **_split_args(d))
    queries = [r.query for r in pipeline.load_split(*_split_args(d).values(), progress=False).records]
    assert sorted(encoded) == sorted(list(embed.NEUTRAL_PROMPTS) + queries)
    assert json.loads((tmp_path / "d.json").read_text())["joint"] == result["joint"]
    # The binary hands both flags to the library: a tokenizer without merges.txt fails early.
    partial = _partial_tokenizer(routes, tmp_path / "partial")
    run = _run("experiments.diagnose", *(f"--{k}={v}" for k, v in _split_args(d).items()),
               f"--clap={routes['clap']}", f"--tokenizer_dir={partial}", "--query_route=text",
               ok=False)
    assert run.returncode == cli.EXIT_OTHER
    assert "error: --query_route=text needs the raw-text route" in run.stderr
    assert str(partial / "merges.txt") in run.stderr and "Traceback" not in run.stderr


def test_missing_pieces_are_named(routes, tmp_path):
    d = routes["data"]
    split = pipeline.load_split(*_split_args(d).values(), progress=False)
    contrast = localize_configs.get_config("gmm_contrast,runlocal")
    arrays = pipeline.split_arrays(split, max_frames=contrast.max_frames,
                                   frame_bucket=contrast.frame_bucket)

    def embed_with(config=contrast, **kw):
        kw = {"clap_dir": routes["clap"], "neutral_feats": None, **kw}
        return pipeline.embed_split(config, arrays, **kw)

    # No GPT-2 in the folder and no tokenizer: both named, and the --neutral_feats alternative.
    with pytest.raises(ModelFileError) as e:
        embed_with(clap_dir=routes["clap_no_gpt2"])
    msg = str(e.value)
    assert "caption_encoder.base.*" in msg and str(routes["clap_no_gpt2"]) in msg
    assert "--tokenizer_dir=DIR" in msg and "--neutral_feats=DIR" in msg
    assert "background_sound.npz" in msg
    # A tokenizer folder without merges.txt.
    partial = _partial_tokenizer(routes, tmp_path / "partial_tokenizer")
    with pytest.raises(ModelFileError, match=r"missing: .*partial_tokenizer/merges\.txt"):
        embed_with(tokenizer_dir=partial)
    # The text query route names what it needs; the neutral files alone do not satisfy it.
    with pytest.raises(ModelFileError, match=r"--query_route=text .*--tokenizer_dir=DIR"):
        embed_with(config=localize_configs.get_config("jointproj_s1"), query_route="text",
                   neutral_feats=d / "neutral_text")
    with pytest.raises(ValueError, match="joint-space systems only"):
        embed_with(config=localize_configs.get_config("backbone_cosine"), query_route="text")
    with pytest.raises(ValueError, match="unknown query route"):
        embed_with(query_route="tokens")
