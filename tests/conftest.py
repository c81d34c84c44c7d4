"""Shared fixtures and the published checkpoint layouts the tests build at tiny sizes (key names
carried by the tests, from the published formats notes). The published code's reference outputs live in
`tests/fixtures/published/` (see its README), so a clone runs every test on its own."""

import argparse
import sys
import types
from pathlib import Path

import pytest
import torch

from migm.trajectories.base.digits import decode_digits
from migm.trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer


@pytest.fixture(scope="session")
def tiny_base() -> MaskGIT:
    """A random-weight MaskGIT at tiny dims: fast, and enough to exercise the sampling loop."""
    torch.manual_seed(0)
    cfg = MaskGITConfig(
        grid=4, codebook_size=9, num_classes=3, hidden_dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.0
    )
    net = MaskTransformer(cfg)
    with torch.no_grad():  # larger logits than the init gives, so sampling choices depend on the input
        net.tok_emb.weight.normal_(0, 1)
    return MaskGIT("tiny", cfg, net, decode_digits, sampler_defaults={"guidance": 2.0, "r_temp": 2.0})


# --- published layouts ----------------------------------------------------------------------------


def published_layout(D: int, depth: int, mlp: int, vocab: int, L: int) -> dict[str, tuple]:
    """Key names and shapes of the published checkpoint's `model_state_dict`, at any size."""
    keys = {
        "pos_emb": (1, L + 1, D),
        "bias": (L + 1, vocab),
        "tok_emb.weight": (vocab, D),
        "first_layer.0.weight": (D,),
        "first_layer.0.bias": (D,),
        "first_layer.2.weight": (D, D),
        "first_layer.2.bias": (D,),
        "first_layer.4.weight": (D,),
        "first_layer.4.bias": (D,),
        "first_layer.6.weight": (D, D),
        "first_layer.6.bias": (D,),
        "last_layer.0.weight": (D,),
        "last_layer.0.bias": (D,),
        "last_layer.2.weight": (D, D),
        "last_layer.2.bias": (D,),
        "last_layer.4.weight": (D,),
        "last_layer.4.bias": (D,),
    }
    for i in range(depth):
        p = f"transformer.layers.{i}"
        keys |= {
            f"{p}.0.norm.weight": (D,),
            f"{p}.0.norm.bias": (D,),
            f"{p}.0.fn.mha.in_proj_weight": (3 * D, D),
            f"{p}.0.fn.mha.in_proj_bias": (3 * D,),
            f"{p}.0.fn.mha.out_proj.weight": (D, D),
            f"{p}.0.fn.mha.out_proj.bias": (D,),
            f"{p}.1.norm.weight": (D,),
            f"{p}.1.norm.bias": (D,),
            f"{p}.1.fn.net.0.weight": (mlp, D),
            f"{p}.1.fn.net.0.bias": (mlp,),
            f"{p}.1.fn.net.3.weight": (D, mlp),
            f"{p}.1.fn.net.3.bias": (D,),
        }
    return keys


def published_shortcut_layout(D: int, H: int, blocks: int, time_hidden: int) -> dict[str, tuple]:
    """Key names and shapes of the published MIGM-Shortcut state dict, at any size."""
    keys = {
        "proj_in.weight": (H, D),
        "proj_in.bias": (H,),
        "proj_out.weight": (D, H),
        "proj_out.bias": (D,),
        "new_token_proj_in.weight": (H, D),
        "new_token_proj_in.bias": (H,),
        "last_layer.0.weight": (H,),
        "last_layer.0.bias": (H,),
        "last_layer.1.weight": (H, H),
        "last_layer.1.bias": (H,),
        "last_layer.3.weight": (H,),
        "last_layer.3.bias": (H,),
        "time_embedder.mlp.0.weight": (time_hidden, 256),
        "time_embedder.mlp.0.bias": (time_hidden,),
        "time_embedder.mlp.2.weight": (H, time_hidden),
        "time_embedder.mlp.2.bias": (H,),
        "adaLN_modulation.weight": (2 * H, H),
        "adaLN_modulation.bias": (2 * H,),
    }
    for i in range(blocks):
        for attn in ("cross_attn", "self_attn"):
            p = f"blocks.{i}.{attn}"
            keys |= {
                f"{p}.norm.weight": (H,),
                f"{p}.norm.bias": (H,),
                f"{p}.fn.mha.in_proj_weight": (3 * H, H),
                f"{p}.fn.mha.in_proj_bias": (3 * H,),
                f"{p}.fn.mha.out_proj.weight": (H, H),
                f"{p}.fn.mha.out_proj.bias": (H,),
                f"{p}_ff.norm.weight": (H,),
                f"{p}_ff.norm.bias": (H,),
                f"{p}_ff.fn.net.0.weight": (4 * H, H),
                f"{p}_ff.fn.net.0.bias": (4 * H,),
                f"{p}_ff.fn.net.3.weight": (H, 4 * H),
                f"{p}_ff.fn.net.3.bias": (H,),
            }
    return keys


# tiny MaskGIT: 6x6 tokens, codebook 16, 10 classes, hidden 32, depth 2, mlp 64, 4 heads
GRID, V, CLASSES, D, DEPTH, MLP, HEADS = 6, 16, 10, 32, 2, 64, 4

MODEL_YAML = """model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 16
    ddconfig:
      double_z: false
      z_channels: 16
      resolution: 16
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult:
      - 1
      - 2
      num_res_blocks: 1
      attn_resolutions:
      - 8
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 250001
        disc_weight: 0.8
        codebook_weight: 1.0
"""


def vqgan_layout(
    ch: int, ch_mult: list[int], blocks: int, attn_levels: set[int], z: int, embed_dim: int, n_embed: int
) -> dict:
    """Key names and shapes of the taming VQGAN's decoding path (`decoder.*`, codebook, post_quant_conv)."""

    def resnet(p, c_in, c_out):
        keys = {
            f"{p}.norm1.weight": (c_in,),
            f"{p}.norm1.bias": (c_in,),
            f"{p}.conv1.weight": (c_out, c_in, 3, 3),
            f"{p}.conv1.bias": (c_out,),
            f"{p}.norm2.weight": (c_out,),
            f"{p}.norm2.bias": (c_out,),
            f"{p}.conv2.weight": (c_out, c_out, 3, 3),
            f"{p}.conv2.bias": (c_out,),
        }
        if c_in != c_out:
            keys |= {f"{p}.nin_shortcut.weight": (c_out, c_in, 1, 1), f"{p}.nin_shortcut.bias": (c_out,)}
        return keys

    def attn(p, c):
        keys = {f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,)}
        for name in ("q", "k", "v", "proj_out"):
            keys |= {f"{p}.{name}.weight": (c, c, 1, 1), f"{p}.{name}.bias": (c,)}
        return keys

    c = ch * ch_mult[-1]
    keys = {
        "quantize.embedding.weight": (n_embed, embed_dim),
        "post_quant_conv.weight": (z, embed_dim, 1, 1),
        "post_quant_conv.bias": (z,),
        "decoder.conv_in.weight": (c, z, 3, 3),
        "decoder.conv_in.bias": (c,),
    }
    keys |= resnet("decoder.mid.block_1", c, c) | attn("decoder.mid.attn_1", c) | resnet("decoder.mid.block_2", c, c)
    for level in reversed(range(len(ch_mult))):
        c_out = ch * ch_mult[level]
        for j in range(blocks + 1):
            keys |= resnet(f"decoder.up.{level}.block.{j}", c, c_out)
            c = c_out
            if level in attn_levels:
                keys |= attn(f"decoder.up.{level}.attn.{j}", c)
        if level:
            keys |= {
                f"decoder.up.{level}.upsample.conv.weight": (c, c, 3, 3),
                f"decoder.up.{level}.upsample.conv.bias": (c,),
            }
    return keys | {
        "decoder.norm_out.weight": (c,),
        "decoder.norm_out.bias": (c,),
        "decoder.conv_out.weight": (3, c, 3, 3),
        "decoder.conv_out.bias": (3,),
    }


def randn_state(layout: dict, seed: int, scale: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(shape, generator=g) for k, shape in layout.items()}


def _lightning_callback_class():
    """A class pickled under PyTorch Lightning's module name, as taming's last.ckpt carries one."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    return module, ModelCheckpoint


def maskgit_state() -> dict:
    return randn_state(published_layout(D=D, depth=DEPTH, mlp=MLP, vocab=V + 1 + CLASSES + 1, L=GRID * GRID), seed=0)


def write_maskgit(path: Path, state: dict | None = None) -> Path:
    state = maskgit_state() if state is None else state
    torch.save(
        {
            "iter": 1000,
            "global_epoch": 3,
            "model_state_dict": state,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
            "args": argparse.Namespace(img_size=GRID * 16, bsize=256),
        },
        path,
    )
    return path


def write_vqgan(folder: Path, drop: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.yaml").write_text(MODEL_YAML)
    state = randn_state(vqgan_layout(32, [1, 2], 1, {1}, z=16, embed_dim=8, n_embed=16), seed=1, scale=0.2)
    state |= {
        "encoder.conv_in.weight": torch.randn(32, 3, 3, 3),
        "quant_conv.weight": torch.randn(8, 8, 1, 1),
        "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4),
        "loss.logvar": torch.zeros(()),
    }
    if drop:
        state.pop(drop)
    module, callback = _lightning_callback_class()
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", module.__name__]
    for name in names:  # only while saving: loading never imports them
        sys.modules[name] = module if name == module.__name__ else types.ModuleType(name)
    try:
        torch.save(
            {
                "epoch": 5,
                "global_step": 100,
                "pytorch-lightning_version": "1.0.8",
                "state_dict": state,
                "callbacks": {callback: {"best_model_score": None}},
                "optimizer_states": [],
            },
            folder / "last.ckpt",
        )
    finally:
        for name in names:
            del sys.modules[name]
    return folder


# --- tiny Lumina-DiMOO folders --------------------------------------------------------------------

PUBLISHED = Path(__file__).resolve().parent / "fixtures" / "published"
DIMOO_FIXTURE = PUBLISHED / "dimoo"


def write_tiny_dimoo(
    folder: Path,
    d_model: int = 32,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    mlp: int = 64,
    shards: int = 2,
    seed: int = 0,
) -> Path:
    """A Lumina-DiMOO folder in the released layout with random LLaDA weights (keys `model.transformer.*`,
    split into `shards` safetensors files with an index), the published fixture's tokenizer files,
    special_tokens.json (vocabulary 256 text ids + 32 image codes) and vqvae/."""
    import json
    import shutil

    from safetensors.torch import save_file

    from migm.trajectories.base.dimoo_loading import VQ_WEIGHTS

    source = DIMOO_FIXTURE / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vqvae").mkdir(exist_ok=True)
    # copyfile, not copy: the fixture is read-only and tests remove pieces of their copy
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens.json", "vqvae/config.json"):
        shutil.copyfile(source / name, folder / name)
    shutil.copyfile(source / "vqvae" / VQ_WEIGHTS, folder / "vqvae" / VQ_WEIGHTS)
    vocab = 288
    hf = json.loads((source / "config.json").read_text())
    hf |= {
        "d_model": d_model,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "mlp_hidden_size": mlp,
        "vocab_size": vocab,
        "embedding_size": vocab,
    }
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    g = torch.Generator().manual_seed(seed)
    kv = d_model // n_heads * n_kv_heads

    def linear(out_dim: int, in_dim: int) -> torch.Tensor:
        return torch.randn(out_dim, in_dim, generator=g) / in_dim**0.5

    state = {"transformer.wte.weight": torch.randn(vocab, d_model, generator=g)}
    for i in range(n_layers):
        p = f"transformer.blocks.{i}"
        state |= {
            f"{p}.attn_norm.weight": 1 + 0.1 * torch.randn(d_model, generator=g),
            f"{p}.q_proj.weight": linear(d_model, d_model),
            f"{p}.k_proj.weight": linear(kv, d_model),
            f"{p}.v_proj.weight": linear(kv, d_model),
            f"{p}.attn_out.weight": linear(d_model, d_model),
            f"{p}.ff_norm.weight": 1 + 0.1 * torch.randn(d_model, generator=g),
            f"{p}.ff_proj.weight": linear(mlp, d_model),
            f"{p}.up_proj.weight": linear(mlp, d_model),
            f"{p}.ff_out.weight": linear(d_model, mlp),
        }
    state |= {
        "transformer.ln_f.weight": 1 + 0.1 * torch.randn(d_model, generator=g),
        "transformer.ff_out.weight": linear(vocab, d_model),
    }
    state = {"model." + k: v for k, v in state.items()}
    keys = sorted(state)
    weight_map = {}
    for s in range(shards):
        name = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = keys[s::shards]
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
        weight_map |= {k: name for k in part}
    index = {"metadata": {"total_size": sum(v.numel() * 4 for v in state.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
