"""The taming VQGAN decoder (token grid -> image), key-compatible with the published `last.ckpt`.

Only the decoding path is built: `quantize.embedding`, `post_quant_conv` and `decoder.*`. The
architecture comes from `model.yaml`'s `model.params.ddconfig`; encoder and `loss.*` keys are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from migm.trajectories.base.checkpoints import load_state_dict, load_state_dict_strict
from migm.trajectories.errors import MigmError


@dataclass
class VQGANConfig:
    n_embed: int = 1024  # codebook size
    embed_dim: int = 256
    z_channels: int = 256
    resolution: int = 256  # only decides where attention sits (at `attn_resolutions`)
    out_ch: int = 3
    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def config_from_yaml(path: Path) -> VQGANConfig:
    import yaml

    try:
        params = yaml.safe_load(path.read_text())["model"]["params"]
        dd = params["ddconfig"]
        return VQGANConfig(
            n_embed=int(params["n_embed"]),
            embed_dim=int(params["embed_dim"]),
            z_channels=int(dd["z_channels"]),
            resolution=int(dd["resolution"]),
            out_ch=int(dd["out_ch"]),
            ch=int(dd["ch"]),
            ch_mult=[int(m) for m in dd["ch_mult"]],
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=[int(r) for r in dd.get("attn_resolutions", [])],
        )
    except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise MigmError(
            f"{path}: not a taming VQGAN model.yaml (need model.params.n_embed, embed_dim, ddconfig): {e}"
        ) from None


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, with 1×1 conv projections."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (
            conv(h).flatten(2).transpose(1, 2).unsqueeze(1) for conv in (self.q, self.k, self.v)
        )  # [n, 1, HW, C]
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(n, C, H, W)
        return x + self.proj_out(h)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        levels = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // cfg.downsample
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)
        ups = []
        for level in reversed(range(levels)):  # built coarse to fine, stored fine to coarse (`up.0` is full size)
            up = nn.Module()
            c_out = cfg.ch * cfg.ch_mult[level]
            up.block, up.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                up.block.append(ResnetBlock(c, c_out))
                c = c_out
                if res in cfg.attn_resolutions:
                    up.attn.append(AttnBlock(c))
            if level != 0:
                up.upsample = Upsample(c)
                res *= 2
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = group_norm(c)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for up in reversed(self.up):
            for i, block in enumerate(up.block):
                h = block(h)
                if len(up.attn):
                    h = up.attn[i](h)
            if hasattr(up, "upsample"):
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantize(nn.Module):
    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)


PIXELS = ("minmax", "clamp")


def to_pixels(x: torch.Tensor, pixels: str = "minmax") -> torch.Tensor:
    """Decoder output (about [-1, 1]) -> images [B, 3, H, W] in [0, 1].

    `minmax` (default): each image by its own min and max, as the published MaskGIT-Shortcut sampler
    and its FID evaluation do (`viz` in `infer.py`, `remap_image_torch` in `Metrics/sample_and_eval.py`),
    so that FID here compares with the paper's. `clamp`: clamp to [-1, 1], then (x + 1) / 2."""
    if pixels not in PIXELS:
        raise MigmError(f"pixels must be one of {', '.join(PIXELS)}, got {pixels!r}")
    if pixels == "clamp":
        return (x.clamp(-1, 1) + 1) / 2
    lo, hi = x.amin(dim=(1, 2, 3), keepdim=True), x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)  # a flat image (max = min) maps to 0, not NaN


class VQGANDecoder(nn.Module):
    """Token grid [B, h·w] (row-major, square) -> images [B, 3, 16h, 16w] in [0, 1] (see `to_pixels`)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.quantize = Quantize(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, pixels: str = "minmax") -> torch.Tensor:
        n, L = tokens.shape
        side = int(round(L**0.5))
        if side * side != L:
            raise MigmError(f"VQGAN decoding needs a square token grid, got L={L}")
        z = self.quantize.embedding(tokens.long()).view(n, side, side, -1).permute(0, 3, 1, 2)
        with torch.autocast(z.device.type, enabled=False):  # decode in fp32 whatever the sampling precision
            x = self.decoder(self.post_quant_conv(z.float()))
        return to_pixels(x.float(), pixels)


DECODER_PREFIXES = ("quantize.embedding.", "post_quant_conv.", "decoder.")


def load_vqgan(folder: str | Path) -> VQGANDecoder:
    """A taming VQGAN folder (`model.yaml` + `last.ckpt`) -> its decoder, loaded strictly."""
    folder = Path(folder)
    yaml_path, ckpt_path = folder / "model.yaml", folder / "last.ckpt"
    for p in (yaml_path, ckpt_path):
        if not p.is_file():
            raise MigmError(f"VQGAN folder {str(folder)!r} lacks {p.name} (expected model.yaml and last.ckpt)")
    cfg = config_from_yaml(yaml_path)
    state = load_state_dict(ckpt_path, "state_dict", "VQGAN checkpoint")
    state = {k: v for k, v in state.items() if k.startswith(DECODER_PREFIXES)}
    vq = VQGANDecoder(cfg)
    load_state_dict_strict(vq, state, str(ckpt_path))
    return vq.eval().requires_grad_(False)
