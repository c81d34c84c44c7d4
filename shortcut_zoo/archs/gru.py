"""`gru`: a per-token gated recurrent update of the bottlenecked feature.

Hidden state = the feature through `proj_in`; input = the new-token embedding at its position
+ a pooled summary of all new tokens of the step (the only cross-token path) + the time embedding;
GRU gates decide, per position, how much of the feature to rewrite; `proj_out` maps back; residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from migm.shortcut_zoo.archs import register
from migm.shortcut_zoo.archs.common import TimeEmbedder, scatter_new_tokens


@dataclass
class GRUConfig:
    dim: int  # D of the base
    bottleneck: int = 2  # hidden = D / bottleneck
    time_freq: int = 256

    @property
    def hidden(self) -> int:
        return self.dim // self.bottleneck


@register("gru", GRUConfig)
class GRU(nn.Module):
    def __init__(self, cfg: GRUConfig):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.dim, cfg.hidden
        self.proj_in = nn.Linear(D, H)
        self.new_token_proj_in = nn.Linear(D, H)
        self.pool_proj = nn.Linear(D, H)
        self.time_embedder = TimeEmbedder(cfg.time_freq, H, H)
        self.cell = nn.GRUCell(H, H)
        self.norm_out = nn.LayerNorm(H)
        self.proj_out = nn.Linear(H, D)
        nn.init.zeros_(self.proj_out.weight)  # start as the cache predictor
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, feat, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        B, T, D = feat.shape
        valid = new_valid[..., None].to(new_emb.dtype)
        pooled = (new_emb * valid).sum(1) / valid.sum(1).clamp(min=1)
        new = scatter_new_tokens(new_emb, new_pos, new_valid, T)
        x = self.new_token_proj_in(new) + (self.pool_proj(pooled) + self.time_embedder(1000 * mask_ratio))[:, None]
        h = self.proj_in(feat)
        h = self.cell(x.reshape(B * T, -1), h.reshape(B * T, -1)).view(B, T, -1)
        return feat + self.proj_out(self.norm_out(h))
