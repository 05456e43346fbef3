"""Language-model localizer with task-activating prompting (DESIGN 9.10; EXPLORATORY).

Seed 000's fourth system: a language model reads the joint-space relevance curve as text and
answers with windows. No language-model weights are available offline, so this module is
plumbing: prompt rendering, batched generation through a pluggable backend, strict parsing
and the FWHM fallback are tested; no figure on model quality is claimed.

Pieces:
  curve_text      the curve as one line `t=0: 0.12, t=1: 0.40, ...` (two decimals, at most
                  `max_values` values) after a `duration: 60.0 s` line. Values are the curve
                  min-max scaled to [0, 1] over the recording (pinned: the task turn can then
                  say "1 is the most relevant second"); `t` is the frame index (frame t covers
                  `[t + o, t + 1 + o)` s, `o` the split's frame offset).
  build_prompt    three turns: (1) the task and how to read a curve, (2) worked examples from
                  the training split with their answers, (3) the query; the answer format is
                  `[[start, end], ...]` in seconds.
  parse_windows   lenient extraction of every `[a, b]` number pair in free text, strict
                  validation: finite numbers, reversed or empty pairs dropped, clipped to
                  `[0, duration]`, at least 1 s (`ranking.clamp_window` rule), exact duplicates
                  dropped, at most K in the model's order. Nothing valid -> None.
  Backend         `generate(prompts) -> texts`. `ClapGPT2Backend`: the project's Flax GPT-2
                  (amr_jax/clap/gpt2.py, e.g. MS-CLAP's text encoder) with its tied LM head,
                  greedy, batched, one fixed-shape jitted step. `TransformersBackend`: any local
                  causal LM folder through transformers (optional extra `torch`; imported only
                  when built), greedy `generate`, batched, left padding.
  llm_windows     prompts for every query, batched generation, parsing; queries whose answer
                  does not parse get the FWHM windows (jointproj_s1 settings) and are counted.
Window scores are `1 / (1 + rank)` in the model's order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from absl import logging

from amr_jax.data.errors import AnnotationError

_PAIR = re.compile(r"\[\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*,\s*"
                   r"([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)\s*\]")

TASK_TURN = (
    "Task: audio moment retrieval. A recording is split into one-second steps. For a text "
    "query, a relevance curve gives one value per step: t is the step, the value says how well "
    "that second matches the query, from 0 (least) to 1 (most relevant). Find the time "
    "windows where the described sound happens: contiguous stretches of high values, with "
    "boundaries where the values fall back. Answer with the windows in seconds, best first, "
    "as [[start, end], ...] and nothing else.")


@dataclasses.dataclass(frozen=True)
class Example:
    """A worked example from the training split.

    Attributes:
      query: the query text; duration: seconds; values: the relevance curve (valid frames);
      windows: `[[start, end], ...]` the answer in seconds.
    """

    query: str
    duration: float
    values: tuple[float, ...]
    windows: tuple[tuple[float, float], ...]


class Backend(Protocol):
    """A text generator: one completion per prompt, same order."""

    def generate(self, prompts: Sequence[str]) -> list[str]: ...


def curve_text(values: np.ndarray, duration: float, *, max_values: int = 300) -> str:
    """`duration: D s` and the curve line (module docstring)."""
    v = np.asarray(values, np.float64)[:max_values]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (0.0, 0.0)
    scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    line = ", ".join(f"t={t}: {x:.2f}" for t, x in enumerate(scaled))
    return f"duration: {float(duration):.1f} s\ncurve: {line}"


def _format_windows(windows) -> str:
    return "[" + ", ".join(f"[{s:g}, {e:g}]" for s, e in windows) + "]"


def build_prompt(query: str, values: np.ndarray, duration: float, examples: Sequence[Example],
                 *, max_values: int = 300) -> str:
    """The three-turn TAP prompt; the completion is expected right after `Answer:`."""
    parts = [f"### Task\n{TASK_TURN}"]
    for i, ex in enumerate(examples, 1):
        parts.append(f"### Example {i}\nquery: {ex.query}\n"
                     f"{curve_text(np.asarray(ex.values), ex.duration, max_values=max_values)}\n"
                     f"Answer: {_format_windows(ex.windows)}")
    parts.append(f"### Query\nquery: {query}\n"
                 f"{curve_text(values, duration, max_values=max_values)}\nAnswer:")
    return "\n\n".join(parts)


def parse_windows(text: str, duration: float, *, max_windows: int = 10
                  ) -> list[tuple[float, float]] | None:
    """Windows from free text (module docstring); None when nothing valid is found."""
    out: list[tuple[float, float]] = []
    for m in _PAIR.finditer(text):
        s, e = float(m.group(1)), float(m.group(2))
        if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
            continue                    # reversed or empty: the model said something wrong
        s, e = max(s, 0.0), min(e, float(duration))
        if e <= s:
            continue                    # entirely outside the recording
        e = min(max(e, s + 1.0), float(duration))
        s = max(min(s, e - 1.0), 0.0)
        if (s, e) not in out:
            out.append((s, e))
        if len(out) == max_windows:
            break
    return out or None


def load_examples(path: str | os.PathLike) -> list[Example]:
    """Reads an examples jsonl (`write_examples`); errors name the file, line and field."""
    examples = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{where}: malformed json ({e.msg})") from None
        for key in ("query", "duration", "values", "windows"):
            if key not in obj:
                raise AnnotationError(f"{where}: field {key!r} is missing")
        try:
            windows = tuple((float(s), float(e)) for s, e in obj["windows"])
            values = tuple(float(v) for v in obj["values"])
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: 'values' must be numbers and 'windows' "
                                  "[start, end] pairs") from None
        examples.append(Example(query=str(obj["query"]), duration=float(obj["duration"]),
                                values=values, windows=windows))
    if not examples:
        raise AnnotationError(f"{path}: no examples")
    return examples


def select_examples(records, curves: np.ndarray, mask: np.ndarray, *, num: int,
                    seed: int) -> list[Example]:
    """`num` worked examples drawn (seeded) from an annotated (training) split's queries."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(records), size=min(num, len(records)), replace=False)
    return [Example(query=records[i].query, duration=float(records[i].duration),
                    values=tuple(float(v) for v in np.round(curves[i][mask[i]], 4)),
                    windows=tuple((float(s), float(e)) for s, e in records[i].windows))
            for i in sorted(int(i) for i in idx)]


def write_examples(path: str | os.PathLike, examples: Sequence[Example]) -> None:
    from amr_jax.io_utils import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(dataclasses.asdict(e)) + "\n" for e in examples))


@dataclasses.dataclass
class LLMResult:
    """`windows [B, K, 3]`, `valid [B, K]`, `fallback [B]` bool, the raw `texts`."""

    windows: np.ndarray
    valid: np.ndarray
    fallback: np.ndarray
    texts: list[str]


def llm_windows(backend: Backend, queries: Sequence[str], curves: np.ndarray, mask: np.ndarray,
                duration: np.ndarray, examples: Sequence[Example], fallback_windows: np.ndarray,
                fallback_valid: np.ndarray, *, num_windows: int, batch_size: int,
                max_values: int = 300) -> LLMResult:
    """Prompts, batched generation, parsing, FWHM fallback (module docstring).

    Args:
      backend: the generator.
      queries: B query texts.
      curves, mask: `[B, T]` joint-space relevance and prefix mask.
      duration: `[B]` seconds.
      examples: the worked examples.
      fallback_windows, fallback_valid: `[B, K, 3]` / `[B, K]` FWHM predictions.
      num_windows: K; batch_size: prompts per `generate` call.
    """
    prompts = [build_prompt(q, curves[i][mask[i]], float(duration[i]), examples,
                            max_values=max_values) for i, q in enumerate(queries)]
    texts: list[str] = []
    for s in range(0, len(prompts), batch_size):
        texts.extend(backend.generate(prompts[s:s + batch_size]))
    if len(texts) != len(prompts):
        raise RuntimeError(f"backend returned {len(texts)} texts for {len(prompts)} prompts")
    windows = np.zeros((len(prompts), num_windows, 3), np.float32)
    valid = np.zeros((len(prompts), num_windows), bool)
    fallback = np.zeros(len(prompts), bool)
    for i, text in enumerate(texts):
        parsed = parse_windows(text, float(duration[i]), max_windows=num_windows)
        if parsed is None:
            fallback[i] = True
            windows[i], valid[i] = fallback_windows[i], fallback_valid[i]
            continue
        for r, (s, e) in enumerate(parsed):
            windows[i, r] = (s, e, 1.0 / (1.0 + r))
            valid[i, r] = True
    logging.info("language-model localizer: %d of %d answers did not parse (FWHM fallback)",
                 int(fallback.sum()), len(prompts))
    return LLMResult(windows=windows, valid=valid, fallback=fallback, texts=texts)


class ClapGPT2Backend:
    """Greedy decoding with the project's Flax GPT-2 and its tied LM head.

    Every step runs the whole fixed `[batch_size, context]` buffer (right-padded prompts; the
    causal mask keeps padding out of the earlier positions) and reads the logits at each row's
    last token, so one jitted function serves every step. Prompts longer than
    `context - max_new_tokens` tokens keep their last tokens (logged). No KV cache: fine for
    the plumbing this backend is for, slow for long answers.

    Args:
      gpt2: `amr_jax.clap.gpt2.GPT2`.
      tokenizer_dir: folder with GPT-2's vocab.json and merges.txt.
      max_new_tokens, batch_size: generation limits.
      context: buffer length (at most `gpt2.config.n_positions`; 0 = that).
    """

    def __init__(self, gpt2, tokenizer_dir: str | os.PathLike, *, max_new_tokens: int,
                 batch_size: int, context: int = 0):
        import jax
        import jax.numpy as jnp
        from flax import nnx
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        directory = Path(tokenizer_dir)
        for name in ("vocab.json", "merges.txt"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"GPT-2 tokenizer file not found: {directory / name}")
        tok = Tokenizer(models.BPE.from_file(str(directory / "vocab.json"),
                                             str(directory / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        self._tok = tok
        self.eot_id = tok.token_to_id("<|endoftext|>")
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.context = min(context or gpt2.config.n_positions, gpt2.config.n_positions)
        if self.context <= max_new_tokens:
            raise ValueError(f"context {self.context} leaves no room for {max_new_tokens} tokens")
        graphdef, state = nnx.split(gpt2)

        @jax.jit
        def step(state, ids, length):
            model = nnx.merge(graphdef, state)
            hidden = model(ids)                                        # [B, L, E]
            last = jnp.take_along_axis(hidden, (length - 1)[:, None, None], axis=1)[:, 0]
            logits = last @ model.wte.embedding[...].T               # tied LM head
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)

        self._state, self._step = state, step

    def generate(self, prompts: Sequence[str]) -> list[str]:
        out = []
        for s in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[s:s + self.batch_size]))
        return out

    def _generate_batch(self, prompts: Sequence[str]) -> list[str]:
        keep = self.context - self.max_new_tokens
        ids = np.zeros((self.batch_size, self.context), np.int32)
        length = np.ones(self.batch_size, np.int32)
        for i, p in enumerate(prompts):
            row = self._tok.encode(p).ids
            if len(row) > keep:
                logging.info("prompt %d has %d tokens; keeping the last %d", i, len(row), keep)
                row = row[-keep:]
            ids[i, :len(row)] = row
            length[i] = max(len(row), 1)
        start = length.copy()
        done = np.zeros(self.batch_size, bool)
        done[len(prompts):] = True
        for _ in range(self.max_new_tokens):
            nxt = np.asarray(self._step(self._state, ids, length))
            for i in np.flatnonzero(~done):
                if nxt[i] == self.eot_id:
                    done[i] = True
                    continue
                ids[i, length[i]] = nxt[i]
                length[i] += 1
            if done.all():
                break
        return [self._tok.decode(ids[i, start[i]:length[i]].tolist()) for i in range(len(prompts))]


class TransformersBackend:
    """A local causal LM folder through transformers (greedy, batched, left padding).

    transformers and torch are imported here only (optional extra `torch`); the folder is read
    with `local_files_only=True`, nothing is downloaded.
    """

    def __init__(self, model_dir: str | os.PathLike, *, max_new_tokens: int, batch_size: int):
        import torch
        import transformers

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"language model folder not found: {model_dir}")
        self._torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(model_dir), local_files_only=True, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(model_dir), local_files_only=True).eval()
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[str]) -> list[str]:
        out = []
        for s in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(list(prompts[s:s + self.batch_size]), return_tensors="pt",
                                   padding=True)
            with self._torch.no_grad():
                gen = self.model.generate(**batch, max_new_tokens=self.max_new_tokens,
                                          do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, batch["input_ids"].shape[1]:]
            out.extend(self.tokenizer.batch_decode(new, skip_special_tokens=True))
        return out


def make_backend(config, *, clap_dir: str | os.PathLike | None,
                 tokenizer_dir: str | os.PathLike | None) -> Backend:
    """The backend `config.llm.backend` names ("clap_gpt2" or "transformers")."""
    from amr_jax.errors import ConfigError, UsageError

    llm = config.llm
    if llm.backend == "transformers":
        if not llm.model_dir:
            raise ConfigError("llm.backend=transformers needs --config.llm.model_dir=FOLDER "
                              "(a local causal language model)")
        return TransformersBackend(llm.model_dir, max_new_tokens=llm.max_new_tokens,
                                   batch_size=llm.batch_size)
    if llm.backend == "clap_gpt2":
        from amr_jax.clap import convert

        if not (clap_dir and tokenizer_dir):
            raise UsageError("llm.backend=clap_gpt2 needs --clap (a converted folder holding "
                             "GPT-2) and --tokenizer_dir (vocab.json, merges.txt)")
        clap = convert.load_converted(clap_dir).to_model()
        gpt2 = getattr(clap, "gpt2", None)
        if gpt2 is None:
            raise UsageError(f"{clap_dir}: the converted MS-CLAP folder holds no GPT-2 weights; "
                             "convert with --gpt2_dir, or use llm.backend=transformers")
        return ClapGPT2Backend(gpt2, tokenizer_dir, max_new_tokens=llm.max_new_tokens,
                               batch_size=llm.batch_size, context=llm.context)
    raise ConfigError(f"unknown llm.backend {llm.backend!r}; expected 'clap_gpt2' or "
                      "'transformers'")
