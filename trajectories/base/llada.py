"""The LLaDA transformer behind Lumina-DiMOO, written here (no remote code), key-compatible with the
released checkpoints (`model.transformer.{wte, blocks.{i}.*, ln_f, ff_out}`).

Llama-style blocks without bias: RMSNorm computed in fp32, rotate-half RoPE over absolute positions,
bidirectional attention (padded keys masked), MLP `ff_out(silu(ff_proj(x)) * up_proj(x))`.
The feature is `ln_f(h)` at every position; logits are `ff_out(feature)` (no weight tying).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from migm.trajectories.errors import MigmError


@dataclass
class LLaDAConfig:
    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 134656  # rows of wte and ff_out (`embedding_size` when it is set)
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_hf(cls, hf: dict) -> LLaDAConfig:
        """The fields of a released `config.json`; variants this module does not compute are refused."""
        unsupported = {
            "block_type": ("llama", None),
            "layer_norm_type": ("rms", None),
            "activation_type": ("silu", None),
            "rope": (True, None),
            "alibi": (False, None),
            "weight_tying": (False, None),
            "include_bias": (False, None),
            "include_qkv_bias": (False, None),
            "attention_layer_norm": (False, None),
            "input_emb_norm": (False, None),
            "scale_logits": (False, None),
            "block_group_size": (1, None),
        }
        bad = [f"{k}={hf[k]!r}" for k, ok in unsupported.items() if k in hf and hf[k] not in ok]
        if bad:
            raise MigmError(f"config.json: unsupported LLaDA variant ({', '.join(bad)})")
        missing = [k for k in ("d_model", "n_layers", "n_heads", "vocab_size") if k not in hf]
        if missing:
            raise MigmError(f"config.json: missing LLaDA fields {', '.join(missing)}")
        d, heads = int(hf["d_model"]), int(hf["n_heads"])
        cfg = cls(
            d_model=d,
            n_layers=int(hf["n_layers"]),
            n_heads=heads,
            n_kv_heads=int(hf.get("n_kv_heads") or heads),
            mlp_hidden_size=int(hf.get("mlp_hidden_size") or hf.get("mlp_ratio", 4) * d),
            vocab_size=int(hf.get("embedding_size") or hf["vocab_size"]),
            rope_theta=float(hf.get("rope_theta", 10000.0)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        )
        if min(cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size, cfg.vocab_size) < 1:
            raise MigmError("config.json: LLaDA sizes must be positive")
        if d % heads or heads % cfg.n_kv_heads or cfg.head_dim % 2:
            raise MigmError(
                f"config.json: d_model {d} must split into {heads} heads of even width, "
                f"and n_heads into n_kv_heads {cfg.n_kv_heads} groups"
            )
        return cfg


class RMSNorm(nn.Module):
    """RMS norm computed in fp32 whatever the input dtype, then scaled by `weight` (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            h = x.float()
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate-half RoPE of x [B, H, T, hs] at integer `positions` [B, T] (or [T]), computed in fp32."""
    hs = x.shape[-1]
    with torch.autocast(x.device.type, enabled=False):
        inv_freq = 1.0 / (theta ** (torch.arange(0, hs, 2, device=x.device, dtype=torch.float) / hs))
        freqs = positions.to(x.device, torch.float)[..., None] * inv_freq  # [B, T, hs/2]
        angles = torch.cat([freqs, freqs], dim=-1)
        if angles.dim() == 3:
            angles = angles[:, None]  # broadcast over heads
        h = x.float()
        h1, h2 = h[..., : hs // 2], h[..., hs // 2 :]
        out = h * angles.cos() + torch.cat([-h2, h1], dim=-1) * angles.sin()
    return out.to(x.dtype)


class Block(nn.Module):
    """A LLaDA Llama block. `attend` takes queries and keys/values from different inputs, so the
    shortcut's cross-attention reuses the same weights and key names."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, mlp_hidden: int, eps: float, theta: float):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.theta = n_heads, n_kv_heads, theta
        head_dim = d_model // n_heads
        self.attn_norm = RMSNorm(d_model, eps)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * head_dim, bias=False)
        self.attn_out = nn.Linear(d_model, d_model, bias=False)
        self.ff_norm = RMSNorm(d_model, eps)
        self.ff_proj = nn.Linear(d_model, mlp_hidden, bias=False)
        self.up_proj = nn.Linear(d_model, mlp_hidden, bias=False)
        self.ff_out = nn.Linear(mlp_hidden, d_model, bias=False)

    @classmethod
    def from_config(cls, cfg: LLaDAConfig, d_model: int | None = None) -> Block:
        """A block of the base's shape, or at another width with the same heads and MLP width."""
        return cls(
            d_model or cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden_size, cfg.rms_norm_eps, cfg.rope_theta
        )

    def attend(
        self,
        q_in: torch.Tensor,
        kv_in: torch.Tensor,
        q_pos: torch.Tensor,
        kv_pos: torch.Tensor,
        kv_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attention of normed q_in [B, Tq, D] over normed kv_in [B, Tk, D] at absolute positions
        q_pos / kv_pos; keys where kv_valid [B, Tk] is False are ignored. Returns attn_out(...)."""
        return self.attention(self.q_proj(q_in), *self.keys_values(kv_in), q_pos, kv_pos, kv_valid)

    def keys_values(self, kv_in: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, T, n_kv_heads * head_dim] of normed kv_in, before RoPE (what a K/V cache keeps)."""
        return self.k_proj(kv_in), self.v_proj(kv_in)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_pos: torch.Tensor,
        kv_pos: torch.Tensor,
        kv_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """attn_out of the attention of projected queries q [B, Tq, D] over un-rotated keys / values
        k, v [B, Tk, n_kv_heads * head_dim]; RoPE is applied here at q_pos / kv_pos."""
        B, Tq, D = q.shape
        Tk = k.shape[1]
        q = q.view(B, Tq, self.n_heads, -1).transpose(1, 2)
        k = k.view(B, Tk, self.n_kv_heads, -1).transpose(1, 2)
        v = v.view(B, Tk, self.n_kv_heads, -1).transpose(1, 2)
        q, k = rotate(q, q_pos, self.theta), rotate(k, kv_pos, self.theta)
        if self.n_kv_heads != self.n_heads:
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        mask = None if kv_valid is None else kv_valid[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.attn_out(att.transpose(1, 2).reshape(B, Tq, D))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ff_norm(x)
        return self.ff_out(F.silu(self.ff_proj(h)) * self.up_proj(h))

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor | None = None,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """One block over every position; the layer's keys and values (before RoPE) are appended to
        `kv` when it is given (ML-Cache records them at its refresh steps)."""
        if kv is None:
            return self.layer(x, positions, valid)
        h = self.attn_norm(x)
        k, v = self.keys_values(h)
        kv.append((k, v))
        x = x + self.attention(self.q_proj(h), k, v, positions, positions, valid)
        return x + self.mlp(x)

    # Under torch.compile (--compile) the blocks are one region compiled once and stamped out for every
    # layer (a 32-layer model compiles about as fast as a 1-layer one); a no-op in eager mode.
    @torch.compiler.nested_compile_region
    def layer(self, x: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`forward` without recording keys and values: the same computation."""
        h = self.attn_norm(x)
        k, v = self.keys_values(h)
        x = x + self.attention(self.q_proj(h), k, v, positions, positions, valid)
        return x + self.mlp(x)

    def forward_rows(
        self,
        x: torch.Tensor,
        rows: torch.Tensor,
        keep: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One block over a subset of positions: x [B, K, D] are the residual streams at sequence
        positions `rows` [B, K]; where `keep` [B, K] is True their keys and values are written into
        the layer's cache kv = (k, v) [B, T, n_kv_heads * head_dim] (in place), then their queries
        attend over the whole cache (every other position keeps its cached K/V). Entries where `keep`
        is False are padding: computed, never written."""
        h = self.attn_norm(x)
        k_new, v_new = self.keys_values(h)
        k, v = kv
        b, j = keep.nonzero(as_tuple=True)
        k[b, rows[b, j]] = k_new[b, j].to(k.dtype)
        v[b, rows[b, j]] = v_new[b, j].to(v.dtype)
        positions = torch.arange(k.shape[1], device=x.device)
        x = x + self.attention(self.q_proj(h), k, v, rows, positions, valid)
        return x + self.mlp(x)


class LLaDA(nn.Module):
    """`transformer.{wte, blocks, ln_f, ff_out}`; the checkpoint's `model.` prefix is stripped on load."""

    def __init__(self, cfg: LLaDAConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.d_model),
                blocks=nn.ModuleList(Block.from_config(cfg) for _ in range(cfg.n_layers)),
                ln_f=RMSNorm(cfg.d_model, cfg.rms_norm_eps),
                ff_out=nn.Linear(cfg.d_model, cfg.vocab_size, bias=False),
            )
        )

    def features(
        self,
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
        kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> torch.Tensor:
        """ids [B, T] (right-padded; `valid` [B, T] marks real tokens) -> feature ln_f(h) [B, T, D].
        With `kv` (an empty list), each layer's keys and values before RoPE are appended to it."""
        t = self.transformer
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = t.wte(ids)
        for block in t.blocks:
            x = block(x, positions, valid, kv)
        return t.ln_f(x)

    def features_rows(
        self,
        ids: torch.Tensor,
        rows: torch.Tensor,
        keep: torch.Tensor,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The features of a subset of positions only (ML-Cache's partial forward): ids [B, K] at
        sequence positions `rows` [B, K] run through every layer against the cached keys / values of
        all positions, `kv` as `features` recorded it; the rows' own K/V are written into it where
        `keep` [B, K] is True (False: padding of rows with fewer positions). Returns ln_f(h) [B, K, D]."""
        t = self.transformer
        x = t.wte(ids)
        for block, layer in zip(t.blocks, kv):
            x = block.forward_rows(x, rows, keep, layer, valid)
        return t.ln_f(x)
