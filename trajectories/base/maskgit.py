"""The MaskGIT bidirectional transformer, key-compatible with the published MaskGIT v1.0 checkpoints.

Token ids: image codes 0…V−1, mask V, classes V+1…V+num_classes, null class V+num_classes+1.
Sequence: L image tokens, then 1 class token. The feature is the output of `last_layer`; logits are
`feature @ tok_emb.weight.T + bias`, sliced to the L image positions and the V codes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from migm.trajectories.base.checkpoints import fingerprint, load_state_dict_strict
from migm.trajectories.base.protocol import same_new_tokens_per_branch
from migm.trajectories.base.rules import MASKGIT_RULE


@dataclass
class MaskGITConfig:
    grid: int = 16  # tokens per side: L = grid * grid
    codebook_size: int = 1024  # V
    num_classes: int = 1000
    hidden_dim: int = 768  # D
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 3072
    dropout: float = 0.1

    @property
    def L(self) -> int:
        return self.grid * self.grid

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1 + self.num_classes + 1


# --- blocks (names follow the published state dict) ---------------------------------------------


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x), *args)


class Attention(nn.Module):
    """Multi-head attention with a packed in-projection (`mha.in_proj_weight`)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True, bias=True)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, pad: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Self-attention, or cross-attention to `context` whose `pad` positions are ignored."""
        kv = x if context is None else context
        return self.mha(x, kv, kv, key_padding_mask=pad, need_weights=False)[0]


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [PreNorm(dim, Attention(dim, heads, dropout)), PreNorm(dim, FeedForward(dim, mlp_dim, dropout))]
            )
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = encoder_layer(attn, ff, x)
        return x


# Under torch.compile (--compile) the layers are one region compiled once and stamped out for every layer;
# a no-op in eager mode.
@torch.compiler.nested_compile_region
def encoder_layer(attn: nn.Module, ff: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x + attn(x)
    return x + ff(x)


class MaskTransformer(nn.Module):
    def __init__(self, cfg: MaskGITConfig):
        super().__init__()
        self.cfg = cfg
        D, p = cfg.hidden_dim, cfg.dropout
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.L + 1, D))
        self.first_layer = nn.Sequential(
            nn.LayerNorm(D, eps=1e-12),
            nn.Dropout(p),
            nn.Linear(D, D),
            nn.GELU(),
            nn.LayerNorm(D, eps=1e-12),
            nn.Dropout(p),
            nn.Linear(D, D),
        )
        self.transformer = TransformerEncoder(D, cfg.depth, cfg.heads, cfg.mlp_dim, p)
        self.last_layer = nn.Sequential(
            nn.LayerNorm(D, eps=1e-12), nn.Dropout(p), nn.Linear(D, D), nn.GELU(), nn.LayerNorm(D, eps=1e-12)
        )
        self.bias = nn.Parameter(torch.zeros(cfg.L + 1, cfg.vocab_size))
        # Small embedding init: with N(0, 1) the class token is drowned out and conditioning is weak.
        nn.init.trunc_normal_(self.tok_emb.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_emb, std=0.02)

    def input_ids(self, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """[B, L] image tokens + [B] class ids (num_classes = null) -> [B, L+1] sequence ids."""
        cls = cond.long().view(-1, 1) + self.cfg.codebook_size + 1
        return torch.cat([tokens.long(), cls], dim=1)

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(ids) + self.pos_emb
        x = self.first_layer(x)
        x = self.transformer(x)
        return self.last_layer(x)

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        """Feature [B, L+1, D] -> logits [B, L, V] over image codes (mask and class rows skipped)."""
        L, V = self.cfg.L, self.cfg.codebook_size
        return feature[:, :L] @ self.tok_emb.weight[:V].T + self.bias[:L, :V]


class MaskGIT:
    """A class-conditional MaskGIT as a `BaseModel` (see DESIGN.md, Contracts)."""

    C = 1  # one class token after the L image tokens
    text = False  # class-conditional: cond is class ids [B]
    rule = MASKGIT_RULE
    shortcut_arch = "tiny-transformer"
    scorer = score_statistics = None  # the shipped digits base sets its classifier's

    def __init__(
        self,
        name: str,
        cfg: MaskGITConfig,
        net: MaskTransformer,
        decoder: Callable[[torch.Tensor], torch.Tensor],
        sampler_defaults: dict | None = None,
        extra_config: dict | None = None,
    ):
        self.name = name
        self.cfg = cfg
        self.net = net.eval().requires_grad_(False)
        self.decoder = decoder
        self.sampler_defaults = dict(sampler_defaults or {})
        self._extra_config = dict(extra_config or {})
        self._fingerprint: str | None = None
        self.precision = "fp32"  # bf16 / fp16: the rollout runs the transformer under autocast

    # dims
    L = property(lambda self: self.cfg.L)
    D = property(lambda self: self.cfg.hidden_dim)
    V = property(lambda self: self.cfg.codebook_size)
    mask_id = property(lambda self: self.cfg.codebook_size)
    num_classes = property(lambda self: self.cfg.num_classes)
    device = property(lambda self: self.net.bias.device)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            config = {"name": self.name, **asdict(self.cfg), **self._extra_config}
            self._fingerprint = fingerprint(config, self.net.state_dict())
        return self._fingerprint

    def to(self, device: str | torch.device) -> MaskGIT:
        self.net.to(device)
        return self

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.net.features(self.net.input_ids(tokens, cond))
        return self.head(feature), feature  # self.head: the compiled head under --compile

    def head(self, feature: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        # no `no_grad` here: a shortcut's KL loss trains through the (frozen) head; every row has the
        # same layout, so `cond` is not needed to find the image cells
        return self.net.head(feature)

    def feature_valid(self, cond: torch.Tensor) -> None:
        return None  # no padding: every row is L image tokens + the class token

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.net.tok_emb(ids.long()) + self.net.pos_emb[0, positions.long()]

    def new_tokens(
        self, new_ids: torch.Tensor, new_pos: torch.Tensor, cond: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return same_new_tokens_per_branch(self, new_ids, new_pos, cond)

    def null_cond(self, batch: int) -> torch.Tensor:
        return torch.full((batch,), self.cfg.num_classes, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens)


def masked_token_loss(
    net: MaskTransformer, tokens: torch.Tensor, cond: torch.Tensor, masked: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the true codes at masked positions (the MaskGIT training objective)."""
    inp = tokens.masked_fill(masked, net.cfg.codebook_size)
    logits = net.head(net.features(net.input_ids(inp, cond)))
    return F.cross_entropy(logits[masked], tokens[masked])


# --- published checkpoints ----------------------------------------------------------------------


def infer_config(state: dict[str, torch.Tensor], heads: int = 16, codebook_size: int | None = None) -> MaskGITConfig:
    """Dims from tensor shapes. The vocabulary is V codes + mask + classes + null; V is the VQGAN's
    codebook size when known, else the largest power of two that leaves at least one class."""
    from migm.trajectories.errors import MigmError

    need = ("pos_emb", "tok_emb.weight", "transformer.layers.0.1.fn.net.0.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise MigmError("not a MaskGIT state dict: missing keys: " + ", ".join(missing))
    _, seq, D = state["pos_emb"].shape
    L, vocab = seq - 1, state["tok_emb.weight"].shape[0]
    grid = int(round(L**0.5))
    if grid * grid != L:
        raise MigmError(f"MaskGIT token grid must be square, got L={L} image positions")
    depth = len({k.split(".")[2] for k in state if k.startswith("transformer.layers.")})
    V = codebook_size or 2 ** ((vocab - 3).bit_length() - 1)
    classes = vocab - V - 2
    if classes < 1:
        raise MigmError(f"vocabulary of {vocab} tokens leaves no class tokens for a codebook of {V}")
    if heads < 1 or D % heads:
        raise MigmError(f"--heads must divide the hidden size {D}, got {heads}")
    mlp = state["transformer.layers.0.1.fn.net.0.weight"].shape[0]
    return MaskGITConfig(
        grid=grid, codebook_size=V, num_classes=classes, hidden_dim=D, depth=depth, heads=heads, mlp_dim=mlp
    )


def read_maskgit_state(path: str) -> dict[str, torch.Tensor]:
    """A published checkpoint (a dict holding `model_state_dict`, optimizer entries ignored) or a bare state dict."""
    from migm.trajectories.base.checkpoints import load_state_dict

    return load_state_dict(path, "model_state_dict", "MaskGIT checkpoint")


def load_maskgit(
    checkpoint: str | None = None, vqgan: str | None = None, heads: int | None = None, pixels: str | None = None
) -> MaskGIT:
    """A published MaskGIT ImageNet checkpoint, with the taming VQGAN folder for decoding (optional
    for commands that never decode, such as dump-trajectories). `pixels` maps decoded images to
    [0, 1]: `minmax` (default, per image, as the published sampler and FID evaluation) or `clamp`."""
    from migm.trajectories.base.vqgan import PIXELS, load_vqgan
    from migm.trajectories.errors import MigmError

    if checkpoint is None:
        raise MigmError("--model maskgit needs --checkpoint FILE (a published MaskGIT checkpoint)")
    pixels = pixels or "minmax"
    if pixels not in PIXELS:
        raise MigmError(f"--pixels must be one of {', '.join(PIXELS)}, got {pixels!r}")
    state = read_maskgit_state(checkpoint)
    vq = load_vqgan(vqgan) if vqgan else None
    cfg = infer_config(state, heads=heads or 16, codebook_size=vq.cfg.n_embed if vq else None)
    net = MaskTransformer(cfg)
    load_state_dict_strict(net, state, str(checkpoint))

    def decode(tokens: torch.Tensor) -> torch.Tensor:
        if vq is None:
            raise MigmError("decoding images needs the VQGAN: add --vqgan DIR (model.yaml + last.ckpt)")
        return vq.to(tokens.device)(tokens, pixels)

    return MaskGIT("maskgit", cfg, net, decode, extra_config={"family": "halton-maskgit-v1"})
