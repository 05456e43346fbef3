"""msclap's HTS-AT (the reference) built with random weights, and its checkpoint names.

`msclap/__init__.py` imports torchaudio (no build exists for the pinned torch); the HTS-AT
code does not need it, so `msclap_htsat()` registers the package without running its
`__init__` and imports `msclap.models.htsat` directly.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np

from amr_jax.clap.htsat import HTSATConfig

# Narrow but same code paths: four stages, shifted and unshifted blocks, one-window last stage.
SMALL = HTSATConfig(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), num_classes=7)


def msclap_htsat():
    """The `msclap.models.htsat` module (skipping the package's torchaudio import)."""
    if "msclap" not in sys.modules:
        spec = importlib.util.find_spec("msclap")
        if spec is None:
            raise ImportError("msclap is not installed (pip install --no-deps msclap torchlibrosa)")
        pkg = types.ModuleType("msclap")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["msclap"] = pkg
    from msclap.models import htsat

    return htsat


def torch_htsat(cfg: HTSATConfig, seed: int = 0):
    """msclap's `HTSAT_Swin_Transformer` with `cfg`, eval mode, every weight random.

    LayerNorm / bn0 parameters and statistics, biases and bias tables are randomised too,
    so a swapped scale/bias or a dropped term shows.
    """
    import torch

    htsat = msclap_htsat()
    torch.manual_seed(seed)
    model = htsat.HTSAT_Swin_Transformer(
        spec_size=cfg.spec_size, patch_size=cfg.patch_size,
        patch_stride=(cfg.patch_size, cfg.patch_size), num_classes=cfg.num_classes,
        embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
        window_size=cfg.window_size, mlp_ratio=cfg.mlp_ratio, config=htsat.config,
    ).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "extractor" in name:
                continue
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "bn0.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or "bias_table" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        model.bn0.running_mean.copy_(-30 + 5 * torch.randn(cfg.mel_bins, generator=gen))
        model.bn0.running_var.copy_(100 + 20 * torch.rand(cfg.mel_bins, generator=gen))
    return model


def checkpoint_weights(model, prefix: str = "audio_encoder.base.htsat.") -> dict[str, np.ndarray]:
    """The model's state dict as a checkpoint would name it (numpy, float32 / int64)."""
    return {prefix + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def torch_embedding(model, waves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embedding [B, C], clipwise [B, K]) of the reference for `[B, N]` waveforms."""
    import torch

    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(waves, np.float32)))
    return out["latent_output"].numpy(), out["clipwise_output"].numpy()


def torch_resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """torchaudio.functional.resample (sinc_interp_hann, width 6, rolloff 0.99) transcribed
    in torch from torchaudio's source (no torchaudio build exists for the pinned torch):
    float32 kernel, conv1d with stride orig, blocks interleaved, cut to ceil(new * N / orig)."""
    import math

    import torch

    g = math.gcd(orig_sr, new_sr)
    orig, new = orig_sr // g, new_sr // g
    zeros, base = 6, min(orig, new) * 0.99
    width = math.ceil(zeros * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
    t = t.clamp(-zeros, zeros)
    window = torch.cos(t * math.pi / zeros / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0, dtype=torch.float64), torch.sin(t) / t)
    kernel = (kernel * window * base / orig).to(torch.float32)
    wav = torch.from_numpy(np.asarray(x, np.float32))[None]
    wav = torch.nn.functional.pad(wav, (width, width + orig))
    out = torch.nn.functional.conv1d(wav[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(1, -1)
    return out[0, : math.ceil(new * len(x) / orig)].numpy()
