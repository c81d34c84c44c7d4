"""`tiny-transformer`: the published MIGM-Shortcut design, key-compatible with its state dict.

Bottleneck the feature (`proj_in`) and the new tokens' embeddings (`new_token_proj_in`); blocks of
[cross-attention from the feature to the new tokens + feed-forward] then [self-attention +
feed-forward]; `last_layer` (LayerNorm → Linear → GELU → LayerNorm); adaLN from a sinusoidal
embedding of 1000·mask_ratio; `proj_out` back to D; the output is the input feature plus that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from shortcut_zoo.archs import register
from trajectories.base.maskgit import Attention, FeedForward, PreNorm


@dataclass
class TinyTransformerConfig:
    dim: int  # D of the base
    bottleneck: int = 2  # hidden = D / bottleneck
    blocks: int = 1
    heads: int = 0  # 0: the most heads of at least 16 dims that divide the hidden width
    mlp_ratio: int = 4
    time_freq: int = 256  # sinusoidal frequencies of 1000·mask_ratio
    time_hidden: int = 0  # width of the time MLP; 0 means the hidden width (the published file uses 314)

    @property
    def hidden(self) -> int:
        return self.dim // self.bottleneck

    @property
    def num_heads(self) -> int:
        if self.heads:
            return self.heads
        return max(h for h in range(1, max(1, self.hidden // 16) + 1) if self.hidden % h == 0)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedder(nn.Module):
    def __init__(self, freq: int, hidden: int, out: int):
        super().__init__()
        self.freq = freq
        self.mlp = nn.Sequential(nn.Linear(freq, hidden), nn.SiLU(), nn.Linear(hidden, out))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq))


class ShortcutBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.cross_attn = PreNorm(dim, Attention(dim, heads))
        self.cross_attn_ff = PreNorm(dim, FeedForward(dim, mlp))
        self.self_attn = PreNorm(dim, Attention(dim, heads))
        self.self_attn_ff = PreNorm(dim, FeedForward(dim, mlp))

    def forward(self, x: torch.Tensor, new: torch.Tensor, new_pad: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(x, new, new_pad)  # queries from the feature, keys/values from new tokens
        x = x + self.cross_attn_ff(x)
        x = x + self.self_attn(x)
        return x + self.self_attn_ff(x)


@register("tiny-transformer", TinyTransformerConfig)
class TinyTransformer(nn.Module):
    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.dim, cfg.hidden
        self.proj_in = nn.Linear(D, H)
        self.new_token_proj_in = nn.Linear(D, H)
        self.blocks = nn.ModuleList(ShortcutBlock(H, cfg.num_heads, cfg.mlp_ratio * H) for _ in range(cfg.blocks))
        self.last_layer = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H))
        self.time_embedder = TimeEmbedder(cfg.time_freq, cfg.time_hidden or H, H)
        self.adaLN_modulation = nn.Linear(H, 2 * H)
        self.proj_out = nn.Linear(H, D)
        # Start as the identity map (the `cache` predictor) and learn the move from there.
        for layer in (self.adaLN_modulation, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, feat, new_emb, new_pos, new_valid, mask_ratio):
        x = self.proj_in(feat)
        new = self.new_token_proj_in(new_emb)
        for block in self.blocks:
            x = block(x, new, ~new_valid)
        x = self.last_layer(x)
        shift, scale = self.adaLN_modulation(F.silu(self.time_embedder(1000 * mask_ratio))).chunk(2, dim=-1)
        x = x * (1 + scale[:, None]) + shift[:, None]
        return feat + self.proj_out(x)
