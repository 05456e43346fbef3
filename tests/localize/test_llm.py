"""Language-model localizer plumbing: parser on hand-written answers, prompts, the Flax GPT-2
backend against transformers' greedy generation (tiny random model), the FWHM fallback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amr_jax.data.errors import AnnotationError
from amr_jax.localize import llm, pipeline
from experiments.configs import localize as localize_configs

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, expected", [
    ("[[3, 7.5], [10, 12]]", [(3.0, 7.5), (10.0, 12.0)]),
    ("The event is at [ 4 , 9 ] and maybe [20.5,25].", [(4.0, 9.0), (20.5, 25.0)]),
    ("[[9, 4], [5, 8]]", [(5.0, 8.0)]),                     # reversed pair dropped
    ("[[5, 5]]", None),                                      # empty
    ("[[-3, 2], [55, 80], [70, 90]]", [(0.0, 2.0), (55.0, 60.0)]),  # clipped; outside dropped
    ("[[3, 7], [3, 7], [3.0, 7.0]]", [(3.0, 7.0)]),          # duplicates
    ("[[59.5, 70]]", [(59.0, 60.0)]),                        # at least 1 s inside
    ("no idea", None),
    ("[[1, 2], [3", [(1.0, 2.0)]),                           # truncated answer
    ("[[1e1, 1.2e1]]", [(10.0, 12.0)]),
    ("[[nan, 3]] [[inf, 4]]", None),
])
def test_parser_hand_written_answers(text, expected):
    assert llm.parse_windows(text, 60.0) == expected


def test_parser_keeps_at_most_k_in_model_order():
    text = " ".join(f"[{i}, {i + 1}]" for i in range(30, 0, -2))
    got = llm.parse_windows(text, 100.0, max_windows=10)
    assert len(got) == 10 and got[0] == (30.0, 31.0) and got[-1] == (12.0, 13.0)


def test_curve_text_and_prompt_turns():
    values = np.array([0.1, 0.3, 0.5, 0.2], np.float32)
    text = llm.curve_text(values, 4.0)
    assert text == "duration: 4.0 s\ncurve: t=0: 0.00, t=1: 0.50, t=2: 1.00, t=3: 0.25"
    assert llm.curve_text(np.arange(500.0), 500.0).count("t=") == 300
    assert "t=0: 0.00" in llm.curve_text(np.full(3, 0.4), 3.0)     # flat curve -> zeros
    ex = llm.Example(query="a dog barks", duration=3.0, values=(0.0, 1.0, 0.0),
                     windows=((1.0, 2.0),))
    prompt = llm.build_prompt("rain falls", values, 4.0, [ex, ex, ex])
    assert prompt.startswith("### Task\n") and prompt.endswith("Answer:")
    assert prompt.count("### Example") == 3 and prompt.count("Answer: [[1, 2]]") == 3
    assert prompt.index("### Example 3") < prompt.index("### Query\nquery: rain falls")


class _Canned:
    """A backend answering from a table, recording the batches it got."""

    def __init__(self, answers):
        self.answers, self.batches = answers, []

    def generate(self, prompts):
        self.batches.append(len(prompts))
        return [self.answers[p.rsplit("query: ", 1)[1].split("\n")[0]] for p in prompts]


def test_llm_windows_fallback_and_batches():
    answers = {"q0": "[[1, 3]]", "q1": "I cannot tell", "q2": "[[4, 2]]", "q3": "[[0, 2], [5, 7]]",
               "q4": "[[2, 4]]"}
    backend = _Canned(answers)
    curves = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    mask = np.ones((5, 8), bool)
    fb = np.zeros((5, 10, 3), np.float32)
    fb[:, 0] = (6.0, 8.0, 0.9)
    fb_valid = np.zeros((5, 10), bool)
    fb_valid[:, 0] = True
    out = llm.llm_windows(backend, list(answers), curves, mask, np.full(5, 8.0), [], fb, fb_valid,
                          num_windows=10, batch_size=2)
    assert backend.batches == [2, 2, 1]
    assert out.fallback.tolist() == [False, True, True, False, False]
    np.testing.assert_allclose(out.windows[1, 0], (6.0, 8.0, 0.9))
    np.testing.assert_allclose(out.windows[3, :2], [(0, 2, 1.0), (5, 7, 0.5)])
    assert out.valid.sum(1).tolist() == [1, 1, 1, 2, 1]


def test_examples_file_round_trip_and_errors(tmp_path):
    ex = [llm.Example(query="x", duration=5.0, values=(0.1, 0.2), windows=((1.0, 2.0),))]
    path = tmp_path / "ex.jsonl"
    llm.write_examples(path, ex)
    assert llm.load_examples(path) == ex
    path.write_text(json.dumps({"query": "x", "duration": 5.0, "values": [0.1]}) + "\n")
    with pytest.raises(AnnotationError, match=r"ex.jsonl:1: field 'windows'"):
        llm.load_examples(path)


def _byte_alphabet():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A tiny random GPT-2 LM saved as a local transformers folder + the same Flax model."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from amr_jax.clap import gpt2 as gpt2_lib

    folder = tmp_path_factory.mktemp("tiny_lm")
    merges = [("Ġ", "t"), ("t", "="), ("0", "."), ("Ġ", "0")]
    vocab = {c: i for i, c in enumerate(_byte_alphabet())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges)
                                       + "\n")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=len(vocab), n_positions=2048, n_embd=32, n_layer=2,
                                  n_head=4, bos_token_id=len(vocab) - 1,
                                  eos_token_id=len(vocab) - 1)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(folder)
    transformers.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")
                               ).save_pretrained(folder)
    weights = {k[len("transformer."):]: v.numpy() for k, v in model.state_dict().items()
               if k.startswith("transformer.")}
    fcfg = gpt2_lib.config_from_weights(weights, n_head=4)
    params, _, _ = gpt2_lib.state_dict_to_params(weights, fcfg, source="tiny")
    return folder, gpt2_lib.build_gpt2(fcfg, params)


def test_flax_gpt2_backend_matches_transformers_greedy(tiny_lm):
    folder, flax_gpt2 = tiny_lm
    prompts = [llm.build_prompt("a dog barks", np.array([0.1, 0.9, 0.2]), 3.0, []),
               llm.build_prompt("rain", np.array([0.3, 0.1, 0.2, 0.8, 0.7]), 5.0, []),
               "Answer: [[1, 2"]
    ours = llm.ClapGPT2Backend(flax_gpt2, folder, max_new_tokens=6, batch_size=2,
                               context=768).generate(prompts)
    ref = llm.TransformersBackend(folder, max_new_tokens=6, batch_size=1).generate(prompts)
    assert len(ours) == 3 and all(isinstance(t, str) for t in ours)
    assert ours == ref


def test_jointproj_llm_system_on_a_synthetic_split(tiny_lm, synthetic_castella, tmp_path):
    """experiments.llm_examples, then the system through run_localization (transformers
    backend, tiny random LM): unparsable answers get exactly jointproj_s1's windows."""
    from amr_jax.clap import convert

    folder, _ = tiny_lm
    d = synthetic_castella
    if not (d / "clap_converted").exists():
        convert.convert_and_save(d / "msclap_synthetic.npz", d / "clap_converted")
    paths = {"annotations": d / "annotations.jsonl", "audio_feats": d / "clap",
             "text_feats": d / "clap_text", "clap_dir": d / "clap_converted"}
    examples = tmp_path / "examples.jsonl"
    run = subprocess.run([sys.executable, "-m", "experiments.llm_examples",
                          f"--annotations={paths['annotations']}",
                          f"--audio_feats={paths['audio_feats']}",
                          f"--text_feats={paths['text_feats']}", f"--clap={paths['clap_dir']}",
                          f"--output={examples}"], cwd=REPO, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(llm.load_examples(examples)) == 3
    config = localize_configs.get_config("jointproj_llm")
    config.llm.backend, config.llm.model_dir = "transformers", str(folder)
    config.llm.examples, config.llm.max_values = str(examples), 10
    config.llm.max_new_tokens, config.llm.batch_size = 4, 16
    out = pipeline.run_localization(config, output=tmp_path / "p.jsonl", print_report=False,
                                    timings=tmp_path / "t.json", **paths)
    fallback = np.asarray(out["result"].details.fallback)
    assert json.loads((tmp_path / "t.json").read_text())["llm_fallbacks"] == int(fallback.sum())
    assert fallback.any()
    s1 = pipeline.run_localization(localize_configs.get_config("jointproj_s1"),
                                   output=tmp_path / "s1.jsonl", print_report=False, **paths)
    np.testing.assert_allclose(out["result"].windows[fallback], s1["result"].windows[fallback])
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == len(fallback)
