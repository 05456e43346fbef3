"""Shared references for the CLAP tests: torch modules, numpy heads, tiny vocabularies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import erf

HEAD_SUFFIXES = ("linear1.weight", "linear2.weight", "layer_norm.weight", "layer_norm.bias")


def torch_projection_class():
    """A torch module with MS-CLAP's `Projection` structure (imports torch lazily)."""
    import torch
    import torch.nn.functional as F

    class TorchProjection(torch.nn.Module):
        def __init__(self, d_in: int, d_out: int, p: float = 0.5):
            super().__init__()
            self.linear1 = torch.nn.Linear(d_in, d_out, bias=False)
            self.linear2 = torch.nn.Linear(d_out, d_out, bias=False)
            self.layer_norm = torch.nn.LayerNorm(d_out)
            self.drop = torch.nn.Dropout(p)

        def forward(self, x):
            embed1 = self.linear1(x)
            embed2 = self.drop(self.linear2(F.gelu(embed1)))
            return self.layer_norm(embed1 + embed2)

    return TorchProjection


def random_torch_projection(d_in: int, d_out: int, seed: int):
    """TorchProjection in eval mode with random (non-trivial) LayerNorm params."""
    import torch

    torch.manual_seed(seed)
    module = torch_projection_class()(d_in, d_out).eval()
    with torch.no_grad():
        module.layer_norm.weight.normal_(1.0, 0.2)
        module.layer_norm.bias.normal_(0.0, 0.2)
    return module


def random_head_weights(rng: np.random.Generator, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    """Torch-layout head weights (suffix -> array), float32."""
    return {
        "linear1.weight": rng.normal(0, d_in**-0.5, (d_out, d_in)).astype(np.float32),
        "linear2.weight": rng.normal(0, d_out**-0.5, (d_out, d_out)).astype(np.float32),
        "layer_norm.weight": rng.normal(1, 0.2, (d_out,)).astype(np.float32),
        "layer_norm.bias": rng.normal(0, 0.2, (d_out,)).astype(np.float32),
    }


def random_msclap_state_dict(
    seed: int = 0, d_in: int = 768, d_out: int = 1024, caption_in: int | None = None,
    htsat: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """MS-CLAP-named weights: both heads, logit_scale and optionally HTS-AT weights
    (`audio_encoder.base.htsat.*`, e.g. `htsat_testlib.checkpoint_weights(model)`)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for enc, width in (("audio_encoder", d_in), ("caption_encoder", caption_in or d_in)):
        for suffix, value in random_head_weights(rng, width, d_out).items():
            sd[f"{enc}.projection.{suffix}"] = value
    sd.update(htsat or {})
    sd["logit_scale"] = np.array(np.log(1 / 0.07), np.float32)
    return sd


def save_pth(sd: dict[str, np.ndarray], path: Path) -> Path:
    import torch

    torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}}, path)
    return path


def numpy_head(x: np.ndarray, sd: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """MS-CLAP projection + L2 norm in float64 numpy from torch-layout weights."""
    x = np.asarray(x, np.float64)
    h = x @ sd[prefix + "linear1.weight"].astype(np.float64).T
    g = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    z = h + g @ sd[prefix + "linear2.weight"].astype(np.float64).T
    mu = z.mean(-1, keepdims=True)
    var = ((z - mu) ** 2).mean(-1, keepdims=True)
    y = (z - mu) / np.sqrt(var + 1e-5)
    y = y * sd[prefix + "layer_norm.weight"] + sd[prefix + "layer_norm.bias"]
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte -> printable character table, in GPT-2 id order ("!" first)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


TINY_MERGES = (
    ("Ġ", "d"), ("Ġd", "o"), ("Ġdo", "g"), ("!", "!"), ("Ġ", "!"), ("a", "r"), ("ar", "k"),
    ("Ġ", "b"), ("Ġb", "ark"), ("W", "o"), ("Wo", "w"), ("Ġ", "a"), ("Ġa", "m"), ("Ġam", "b"),
)


def write_tiny_vocab(directory: Path) -> Path:
    """A GPT-2-style byte-level BPE vocabulary (256 bytes + a few merges + EOT)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(_byte_alphabet())}
    for a, b in TINY_MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in TINY_MERGES) + "\n"
    )
    return directory


def reference_tokenize(directory: Path, texts):
    """MS-CLAP's steps on transformers' GPT-2 tokenizer from local files."""
    import transformers

    tok = transformers.GPT2Tokenizer.from_pretrained(str(directory), local_files_only=True)
    tok.add_special_tokens({"pad_token": "!"})
    out = [
        tok(t + " <|endoftext|>", max_length=77, padding="max_length", truncation=True)
        for t in texts
    ]
    return (
        np.array([o["input_ids"] for o in out]),
        np.array([o["attention_mask"] for o in out]),
    )


def tiny_gpt2(vocab_size: int, seed: int = 0, n_embd: int = 48, n_layer: int = 2, n_head: int = 4,
              n_inner: int | None = None):
    """A randomly initialized transformers.GPT2Model (no download)."""
    import torch
    import transformers

    cfg = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=80, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        n_inner=n_inner, bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1,
    )
    torch.manual_seed(seed)
    model = transformers.GPT2Model(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm params and biases
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or name.startswith("ln_f"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def jit_call(module, *args):
    """`module(*args)` as one compiled call (cheaper than op-by-op dispatch in tests)."""
    from flax import nnx

    return np.asarray(nnx.jit(lambda m, *a: m(*a))(module, *args))


def torch_text_embedding(vocab_dir: Path, hf, head, texts) -> np.ndarray:
    """MS-CLAP's caption route in torch: transformers tokenizer with MS-CLAP's steps, GPT-2,
    the row `count(ids != 0) - 1`, the caption head, L2 norm. `[B, out]` float32."""
    import torch
    import torch.nn.functional as F

    ids, mask = reference_tokenize(vocab_dir, texts)
    ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        seq = torch.ne(ids, 0).sum(-1) - 1
        pooled = hidden[torch.arange(len(texts)), seq]
        return F.normalize(head(pooled), dim=-1).numpy()


def torch_caption_head(sd: dict[str, np.ndarray]):
    """TorchProjection (eval) holding the checkpoint's `caption_encoder.projection.*`."""
    import torch

    d_out, d_in = sd["caption_encoder.projection.linear1.weight"].shape
    head = torch_projection_class()(d_in, d_out).eval()
    head.load_state_dict(
        {k: torch.from_numpy(np.asarray(sd[f"caption_encoder.projection.{k}"])) for k in HEAD_SUFFIXES}
    )
    return head
