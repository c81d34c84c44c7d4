"""`tiny-transformer`: the published MIGM-Shortcut (`MaskGITShortcut`), key-compatible with its state
dict and computing its forward (checked against the published outputs in
`tests/test_published_fidelity.py`).

Bottleneck the feature (`proj_in`) and the new tokens' embeddings (`new_token_proj_in`); blocks of
[cross-attention from the feature to the new tokens + feed-forward] then [self-attention +
feed-forward]; `last_layer` (LayerNorm → Linear → GELU → LayerNorm, eps 1e-12); adaLN from a
sinusoidal embedding of 1000·mask_ratio (`scale, shift`, no SiLU before the linear); `proj_out` back
to D; the output is the input feature plus that. As published, only the attention *query* is
layer-normed: keys and values are the raw stream (self-attention) or the raw projected new tokens
(cross-attention). Bottleneck 1 uses no projections at all, and `time=False` drops the mask-ratio
conditioning (no `time_embedder` / `adaLN_modulation`), as the published options do.

Beyond the published forward: padded new tokens (`new_valid = False`) are masked out of the
cross-attention, so batches can mix steps; without padding the result is the published one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from migm.shortcut_zoo.archs import register
from migm.shortcut_zoo.archs.common import TimeEmbedder, published_time_hidden
from migm.trajectories.base.maskgit import Attention, FeedForward, PreNorm


@dataclass
class TinyTransformerConfig:
    dim: int  # D of the base
    bottleneck: int = 2  # hidden = D / bottleneck; 1: no proj_in / proj_out / new_token_proj_in (identity)
    blocks: int = 1
    heads: int = 0  # 0: the most heads of at least 16 dims that divide the hidden width
    mlp_ratio: int = 4
    time: bool = True  # mask-ratio conditioning (adaLN); False: no time_embedder / adaLN_modulation
    time_freq: int = 256  # sinusoidal frequencies of 1000·mask_ratio
    time_hidden: int = 0  # width of the time MLP; 0: round(sqrt(hidden · time_freq)), as published
    dropout: float = 0.0  # attention and feed-forward dropout, active in training only

    def __post_init__(self):
        if self.dim < 1 or self.bottleneck < 1 or self.dim % self.bottleneck:
            raise ValueError(f"bottleneck {self.bottleneck} must divide the width {self.dim}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        if self.heads < 0 or (self.heads and self.hidden % self.heads):
            raise ValueError(f"heads {self.heads} must divide the hidden width {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden(self) -> int:
        return self.dim // self.bottleneck

    @property
    def num_heads(self) -> int:
        if self.heads:
            return self.heads
        return max(h for h in range(1, max(1, self.hidden // 16) + 1) if self.hidden % h == 0)

    @property
    def time_width(self) -> int:
        return self.time_hidden or published_time_hidden(self.hidden, self.time_freq)


class QueryNorm(nn.Module):
    """The published `PreNorm` around an attention called with explicit keys and values: the
    LayerNorm applies to the query only. Same key names as `PreNorm` (`norm`, `fn`)."""

    def __init__(self, dim: int, attn: Attention):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = attn

    def forward(self, x: torch.Tensor, context: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(self.norm(x), context, pad)


class ShortcutBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int, dropout: float = 0.0):
        super().__init__()
        self.cross_attn = QueryNorm(dim, Attention(dim, heads, dropout))
        self.cross_attn_ff = PreNorm(dim, FeedForward(dim, mlp, dropout))
        self.self_attn = QueryNorm(dim, Attention(dim, heads, dropout))
        self.self_attn_ff = PreNorm(dim, FeedForward(dim, mlp, dropout))

    def forward(self, x: torch.Tensor, new: torch.Tensor, new_pad: torch.Tensor) -> torch.Tensor:
        x = x + self.cross_attn(x, new, new_pad)  # query norm(x); keys/values the raw new tokens
        x = x + self.cross_attn_ff(x)
        x = x + self.self_attn(x, x)  # query norm(x); keys/values the raw x
        return x + self.self_attn_ff(x)


@register("tiny-transformer", TinyTransformerConfig)
class TinyTransformer(nn.Module):
    def __init__(self, cfg: TinyTransformerConfig):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.dim, cfg.hidden
        project = cfg.bottleneck != 1
        self.proj_in = nn.Linear(D, H) if project else nn.Identity()
        self.new_token_proj_in = nn.Linear(D, H) if project else nn.Identity()
        self.blocks = nn.ModuleList(
            ShortcutBlock(H, cfg.num_heads, cfg.mlp_ratio * H, cfg.dropout) for _ in range(cfg.blocks)
        )
        self.last_layer = nn.Sequential(
            nn.LayerNorm(H, eps=1e-12), nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H, eps=1e-12)
        )
        self.time_embedder = TimeEmbedder(cfg.time_freq, cfg.time_width, H) if cfg.time else None
        self.adaLN_modulation = nn.Linear(H, 2 * H) if cfg.time else None
        self.proj_out = nn.Linear(H, D) if project else nn.Identity()
        # Start as the identity map (the `cache` predictor) and learn the move from there: zero the
        # last affine map before the residual (proj_out, or with no projections the last LayerNorm),
        # and the adaLN so that the modulation starts as the identity.
        last = self.proj_out if project else self.last_layer[3]
        for layer in (last, self.adaLN_modulation):
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, feat, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        x = self.proj_in(feat)
        new = self.new_token_proj_in(new_emb)
        for block in self.blocks:
            x = block(x, new, ~new_valid)
        x = self.last_layer(x)
        if self.time_embedder is not None:
            scale, shift = self.adaLN_modulation(self.time_embedder(1000 * mask_ratio)).chunk(2, dim=-1)
            x = x * (1 + scale[:, None]) + shift[:, None]
        return feat + self.proj_out(x)
