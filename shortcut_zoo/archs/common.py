"""Pieces the shortcut architectures share."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def scatter_new_tokens(
    new_emb: torch.Tensor, new_pos: torch.Tensor, new_valid: torch.Tensor, positions: int
) -> torch.Tensor:
    """[B, K, D] embeddings of new tokens -> [B, positions, D], zero where nothing was unmasked.

    Positions index the feature's image positions, which come first in MaskGIT's layout."""
    B, K, D = new_emb.shape
    out = new_emb.new_zeros(B, positions, D)
    src = new_emb * new_valid[..., None].to(new_emb.dtype)
    return out.scatter_add_(1, new_pos[..., None].expand(B, K, D), src)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B] -> [B, dim]: cosines then sines (DiT / GLIDE order, as published)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))  # an odd width gets a zero column


class TimeEmbedder(nn.Module):
    """Scalar (1000 · mask ratio) -> vector: sinusoids, then Linear → SiLU → Linear.

    Key names match the published `TimestepEmbedder` (`mlp.0`, `mlp.2`)."""

    def __init__(self, freq: int, hidden: int, out: int):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, out))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq))


def published_time_hidden(width: int, freq: int = 256) -> int:
    """Width of the published time MLP: round(sqrt(width · freq)) (314 for width 384)."""
    return round(math.sqrt(width * freq))
