"""Tiny on-disk splits and a tiny stand-in model for the training tests."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

DIM = 768


def write_tiny_split(root: Path, *, num_recordings: int, queries_per_recording: int,
                     frames: tuple[int, int], seed: int, max_windows_per_query: int = 7) -> Path:
    """Writes annotations.jsonl, clap/<vid>.npz, clap_text/qid<qid>.npz under `root`.

    Frames inside a query's windows carry that query's end-of-text vector plus
    noise, so the split is learnable.
    """
    rng = np.random.default_rng(seed)
    (root / "clap").mkdir(parents=True, exist_ok=True)
    (root / "clap_text").mkdir(parents=True, exist_ok=True)
    lines = []
    for r in range(num_recordings):
        vid = f"rec{r:03d}"
        t = int(rng.integers(frames[0], frames[1] + 1))
        audio = rng.normal(size=(t, DIM)).astype(np.float32)
        for q in range(queries_per_recording):
            qid = f"{vid}_{q + 1}"
            n_tok = int(rng.integers(3, 9))
            text = rng.normal(size=(n_tok, DIM)).astype(np.float32)
            k = int(rng.integers(1, max_windows_per_query + 1))
            starts = np.sort(rng.choice(np.arange(0, t - 2), size=min(k, t - 2), replace=False))
            windows = []
            for s in starts:
                e = int(min(t, s + rng.integers(1, 4)))
                if windows and s < windows[-1][1]:
                    continue
                windows.append([int(s), e])
                audio[s:e] += 2.0 * text[-1]
            np.savez(root / "clap_text" / f"qid{qid}.npz", last_hidden_state=text)
            lines.append({"qid": qid, "query": f"sound {q}", "duration": float(t), "vid": vid,
                          "relevant_windows": windows})
        np.savez(root / "clap" / f"{vid}.npz", features=audio)
    ann = root / "annotations.jsonl"
    ann.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return ann


def data_fields(config: ml_collections.ConfigDict, root: Path) -> None:
    for split in ("train", "val"):
        config.data[f"{split}_annotations"] = str(root / "annotations.jsonl")
        config.data[f"{split}_audio_feats"] = str(root / "clap")
        config.data[f"{split}_text_feats"] = str(root / "clap_text")


class TinyDetr(nnx.Module):
    """A small model with the QD-DETR output contract (for fast trainer tests)."""

    def __init__(self, config: ml_collections.ConfigDict, *, rngs: nnx.Rngs):
        d = 16
        self.audio_proj = nnx.Linear(config.audio_dim, d, rngs=rngs)
        self.text_proj = nnx.Linear(config.text_dim, d, rngs=rngs)
        self.queries = nnx.Param(jax.random.normal(rngs.params(), (config.num_queries, d)))
        self.heads = nnx.List([nnx.Linear(2 * d, 4, rngs=rngs) for _ in range(config.dec_layers)])
        self.saliency_proj = nnx.Linear(d, d, rngs=rngs)
        self.dropout = nnx.Dropout(config.dropout)

    def _frames(self, inputs, text, text_mask, *, deterministic, rngs):
        a = self.audio_proj(inputs.audio)
        m = text_mask[..., None]
        t = (self.text_proj(text) * m).sum(1) / jnp.maximum(m.sum(1), 1)
        f = jax.nn.relu(a + t[:, None])
        return self.dropout(f, deterministic=deterministic, rngs=rngs), t

    def __call__(self, inputs, *, deterministic, rngs=None):
        f, t = self._frames(inputs, inputs.text, inputs.text_mask, deterministic=deterministic,
                            rngs=rngs)
        mask = inputs.audio_mask[..., None]
        pooled = (f * mask).sum(1) / jnp.maximum(mask.sum(1), 1)
        q = jnp.broadcast_to(self.queries[...], (f.shape[0],) + self.queries.shape)
        h = jnp.concatenate([q, jnp.broadcast_to(pooled[:, None], q.shape)], -1)
        layers = [head(h) for head in self.heads]
        outs = [{"pred_logits": o[..., :2], "pred_spans": jax.nn.sigmoid(o[..., 2:])}
                for o in layers]
        sal = jnp.einsum("btd,bd->bt", self.saliency_proj(f), t)
        out = dict(outs[-1], saliency_scores=sal, aux_outputs=tuple(outs[:-1]))
        if not deterministic:
            fn, tn = self._frames(inputs, jnp.roll(inputs.text, -1, 0),
                                  jnp.roll(inputs.text_mask, -1, 0), deterministic=deterministic,
                                  rngs=rngs)
            out["saliency_scores_neg"] = jnp.einsum("btd,bd->bt", self.saliency_proj(fn), tn)
        return out


def tiny_model_factory(model_config, rngs):
    return TinyDetr(model_config, rngs=rngs)
