"""`mlp`: a per-token MLP over [feature, new-token embedding at its position, time embedding].

No token mixing: each position's move is predicted from its own feature, the token just placed
there (zero elsewhere) and the mask ratio. The cheapest arch; a baseline for what mixing buys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from migm.shortcut_zoo.archs import register
from migm.shortcut_zoo.archs.common import TimeEmbedder, scatter_new_tokens


@dataclass
class MLPConfig:
    dim: int  # D of the base
    bottleneck: int = 2  # hidden = D / bottleneck
    depth: int = 2
    mlp_ratio: int = 4
    time_freq: int = 256

    @property
    def hidden(self) -> int:
        return self.dim // self.bottleneck


class Residual(nn.Module):
    def __init__(self, dim: int, mlp: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


@register("mlp", MLPConfig)
class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.dim, cfg.hidden
        self.proj_in = nn.Linear(D, H)
        self.new_token_proj_in = nn.Linear(D, H)
        self.time_embedder = TimeEmbedder(cfg.time_freq, H, H)
        self.layers = nn.Sequential(*[Residual(H, cfg.mlp_ratio * H) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(H)
        self.proj_out = nn.Linear(H, D)
        nn.init.zeros_(self.proj_out.weight)  # start as the cache predictor
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, feat, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        new = scatter_new_tokens(new_emb, new_pos, new_valid, feat.shape[1])
        x = self.proj_in(feat) + self.new_token_proj_in(new) + self.time_embedder(1000 * mask_ratio)[:, None]
        return feat + self.proj_out(self.norm_out(self.layers(x)))
