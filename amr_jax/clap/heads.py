"""MS-CLAP projection heads and the module that bundles them with the text encoder.

Both modalities use the same head (MS-CLAP `Projection`):

    h = Linear1(x)                       # no bias
    y = LayerNorm(h + Dropout(Linear2(GELU(h))))   # exact (erf) GELU, eps 1e-5

The heads map 768-d backbone vectors (HTSAT audio embeddings, GPT-2 end-of-text
hidden states) to the 1024-d joint space. Outputs are *not* normalized here; the
joint space is the L2-normalized head output (see `amr_jax.clap.embed`).
"""

from __future__ import annotations

import jax
from flax import nnx

from amr_jax.norms import l2_normalize  # noqa: F401 (re-exported by amr_jax.clap)

# Heads are tiny; full float32 matmuls keep embeddings faithful on accelerators
# whose default float32 matmul precision is reduced (TPU bf16 passes, GPU TF32).
_PRECISION = jax.lax.Precision.HIGHEST


class ProjectionHead(nnx.Module):
    """MS-CLAP projection head `[..., in_dim] -> [..., out_dim]`.

    Dropout (rate `dropout`, MS-CLAP's default 0.5) acts only in training mode:
    call `.eval()` on the module (or pass `deterministic=True`) for inference.
    Modules built by `amr_jax.clap.convert` are already in eval mode.
    """

    def __init__(
        self,
        in_dim: int = 768,
        out_dim: int = 1024,
        dropout: float = 0.5,
        *,
        rngs: nnx.Rngs,
    ):
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.linear1 = nnx.Linear(
            in_dim, out_dim, use_bias=False, precision=_PRECISION, rngs=rngs
        )
        self.linear2 = nnx.Linear(
            out_dim, out_dim, use_bias=False, precision=_PRECISION, rngs=rngs
        )
        # Two-pass variance matches torch.nn.LayerNorm to float32 rounding.
        self.layer_norm = nnx.LayerNorm(
            out_dim, epsilon=1e-5, use_fast_variance=False, rngs=rngs
        )
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def __call__(self, x: jax.Array, *, deterministic: bool | None = None) -> jax.Array:
        """Projects `x` `[..., in_dim]` to `[..., out_dim]` (unnormalized)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(
                f"ProjectionHead expects inputs of width {self.in_dim}, got shape {x.shape}"
            )
        h = self.linear1(x)
        y = self.linear2(jax.nn.gelu(h, approximate=False))
        y = self.dropout(y, deterministic=deterministic)
        return self.layer_norm(h + y)


class ClapModel(nnx.Module):
    """The MS-CLAP parts used here: both heads and, optionally, the GPT-2 text encoder.

    Attributes:
      audio_head: `ProjectionHead` for 768-d HTSAT embeddings.
      caption_head: `ProjectionHead` for GPT-2 end-of-text hidden states.
      gpt2: `amr_jax.clap.gpt2.GPT2` or None when only text features are used.
    """

    def __init__(self, audio_head: ProjectionHead, caption_head: ProjectionHead, gpt2=None):
        if audio_head.out_dim != caption_head.out_dim:
            raise ValueError(
                f"audio head projects to {audio_head.out_dim} dims but caption head to "
                f"{caption_head.out_dim}: not one joint space"
            )
        self.audio_head = audio_head
        self.caption_head = caption_head
        self.gpt2 = gpt2

    @property
    def joint_dim(self) -> int:
        return self.audio_head.out_dim
