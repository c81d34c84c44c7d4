"""`dimoo-transformer`: the published DiMOO shortcut (`MDMShortcut`), key-compatible with its state dict
and computing its forward (checked against the published outputs in `tests/test_dimoo_shortcut.py`).

Bottleneck the feature (`proj_in`) and the new tokens' embeddings (`new_token_proj_in`) to
hidden = round(D / bottleneck); blocks of [cross-attention + MLP] then [self-attention + MLP], each a
LLaDA block of the base (its heads, KV heads, MLP width, RMSNorm eps and RoPE θ) at the hidden width;
`ln_f`; adaLN `x·(1+scale)+shift` from the mask-ratio embedding (no SiLU before the linear);
`proj_out`; the output is the input feature plus that. The cross-attention takes queries from
`attn_norm(x)` rotated at positions 0…T−1 and keys / values from `attn_norm(new)` rotated at the new
tokens' absolute sequence positions. Bottleneck 1 uses no projections, and `time=False` drops the
mask-ratio conditioning, as the published options do.

Beyond the published forward (which runs batch 1): padded new tokens (`new_valid = False`) are masked
out of the cross-attention and padded feature positions (`feat_valid = False`) out of the
self-attention keys, and come out zero, so a right-padded batch equals its rows run alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from migm.shortcut_zoo.archs import register
from migm.shortcut_zoo.archs.common import TimeEmbedder, published_time_hidden
from migm.trajectories.base.llada import Block, LLaDAConfig, RMSNorm
from migm.trajectories.errors import MigmError


@dataclass
class DimooTransformerConfig:
    dim: int  # D of the base
    bottleneck: int = 2  # hidden = round(D / bottleneck); 1: no proj_in / proj_out / new_token_proj_in
    blocks: int = 1
    # The base's block shape (0: from the base, see `base_fields`); the MLP width is not narrowed.
    heads: int = 0
    kv_heads: int = 0  # 0 with heads given: as many as heads
    mlp_hidden: int = 0
    eps: float = 0.0  # RMSNorm eps; 0: 1e-5 when built without a base (LLaDA's default)
    theta: float = 0.0  # RoPE θ; 0: 10000 when built without a base (LLaDA's default)
    time: bool = True  # mask-ratio conditioning (adaLN); False: no time_embedder / adaLN_modulation
    time_freq: int = 256  # sinusoidal frequencies of 1000·mask_ratio; the time MLP is round(sqrt(hidden·freq)) wide

    def __post_init__(self):
        if self.dim < 1 or self.bottleneck < 1:
            raise ValueError(f"dim and bottleneck must be positive, got {self.dim} and {self.bottleneck}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        if not self.heads or not self.mlp_hidden:
            raise ValueError("heads and mlp_hidden come from the base: build it for a DiMOO base, or give them")
        # Fill what is left to its LLaDA default, so the saved config rebuilds the same module.
        self.kv_heads = self.kv_heads or self.heads
        self.eps = self.eps or 1e-5
        self.theta = self.theta or 10000.0
        if self.hidden % self.heads or (self.hidden // self.heads) % 2 or self.heads % self.kv_heads:
            raise ValueError(
                f"the hidden width {self.hidden} must split into {self.heads} heads of even width, "
                f"and heads into kv_heads {self.kv_heads} groups"
            )

    @property
    def hidden(self) -> int:
        return round(self.dim / self.bottleneck)  # as published (round, not floor)

    @classmethod
    def base_fields(cls, base) -> dict:
        """The block shape of a DiMOO-architecture base (its LLaDA config `base.net.cfg`)."""
        cfg = getattr(getattr(base, "net", None), "cfg", None)
        if not isinstance(cfg, LLaDAConfig):
            raise MigmError(f"dimoo-transformer needs a DiMOO-architecture (LLaDA) base, not {base.name}")
        return {
            "heads": cfg.n_heads,
            "kv_heads": cfg.n_kv_heads,
            "mlp_hidden": cfg.mlp_hidden_size,
            "eps": cfg.rms_norm_eps,
            "theta": cfg.rope_theta,
        }


class ShortcutBlock(nn.Module):
    """Published `ShortcutAttnBlock`: `cross_attn` and `self_attn` are LLaDA blocks (same key names)."""

    def __init__(self, cfg: DimooTransformerConfig):
        super().__init__()
        shape = (cfg.hidden, cfg.heads, cfg.kv_heads, cfg.mlp_hidden, cfg.eps, cfg.theta)
        self.cross_attn = Block(*shape)
        self.self_attn = Block(*shape)

    def forward(self, x, new, new_pos, new_valid, positions, feat_valid):
        ca = self.cross_attn
        if new.shape[1]:
            # A row with no new token attends to nothing: its cross-attention adds zero (attn_out has
            # no bias), instead of the NaN of a softmax over no keys.
            some = new_valid.any(dim=1)
            att = ca.attend(ca.attn_norm(x), ca.attn_norm(new), positions, new_pos, new_valid | ~some[:, None])
            x = x + att * some[:, None, None].to(att.dtype)
        x = x + ca.mlp(x)
        return self.self_attn(x, positions, feat_valid)


@register("dimoo-transformer", DimooTransformerConfig)
class DimooTransformer(nn.Module):
    def __init__(self, cfg: DimooTransformerConfig):
        super().__init__()
        self.cfg = cfg
        D, H = cfg.dim, cfg.hidden
        project = cfg.bottleneck != 1
        self.proj_in = nn.Linear(D, H) if project else nn.Identity()
        self.proj_out = nn.Linear(H, D) if project else nn.Identity()
        self.new_token_proj_in = nn.Linear(D, H) if project else nn.Identity()
        self.blocks = nn.ModuleList(ShortcutBlock(cfg) for _ in range(cfg.blocks))
        self.ln_f = RMSNorm(H, cfg.eps)
        self.time_embedder = (
            TimeEmbedder(cfg.time_freq, published_time_hidden(H, cfg.time_freq), H) if cfg.time else None
        )
        self.adaLN_modulation = nn.Linear(H, 2 * H) if cfg.time else None
        # Start as the identity map (the `cache` predictor) and learn the move from there: zero the
        # last affine map before the residual (proj_out, or with no projections the final norm's
        # weight), and the adaLN so that the modulation starts as the identity.
        if project:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)
        else:
            nn.init.zeros_(self.ln_f.weight)
        if self.adaLN_modulation is not None:
            nn.init.zeros_(self.adaLN_modulation.weight)
            nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, feat, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        positions = torch.arange(feat.shape[1], device=feat.device)  # rows are right-padded
        x = self.proj_in(feat)
        new = self.new_token_proj_in(new_emb)
        for block in self.blocks:
            x = block(x, new, new_pos, new_valid, positions, feat_valid)
        x = self.ln_f(x)
        if self.time_embedder is not None:
            scale, shift = self.adaLN_modulation(self.time_embedder(1000 * mask_ratio)).chunk(2, dim=-1)
            x = x * (1 + scale[:, None]) + shift[:, None]
        out = feat + self.proj_out(x)
        if feat_valid is not None:  # padded positions stay zero, as in the base's padded features
            out = out * feat_valid[..., None].to(out.dtype)
        return out
