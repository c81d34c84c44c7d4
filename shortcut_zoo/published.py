"""The published MIGM-Shortcut files of both families (MaskGIT's `MaskGITShortcut`, DiMOO's `MDMShortcut`):
their arch configs read off the keys and shapes, and their import into a zoo folder bound to a base."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from migm.shortcut_zoo.archs import build, build_for_base
from migm.shortcut_zoo.export import ZOO_FORMAT, check_finite_weights, write_zoo_folder
from migm.trajectories import __version__
from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.checks import check_outside_data, writable_dir
from migm.trajectories.errors import MigmError


def published_arch_config(state: dict[str, torch.Tensor], what: str) -> dict:
    """tiny-transformer config fields read off a published MIGM-Shortcut state dict's keys and shapes:
    width and bottleneck (no `proj_in`: bottleneck 1, identity projections), blocks, MLP ratio, and
    mask-ratio conditioning (`time_embedder` / `adaLN_modulation` present) with its time-MLP dims."""
    need = (
        "last_layer.1.weight",
        "blocks.0.cross_attn.fn.mha.in_proj_weight",
        "blocks.0.cross_attn_ff.fn.net.0.weight",
    )
    missing = [k for k in need if k not in state]
    if missing:
        raise MigmError(f"{what}: not a MIGM-Shortcut state dict (missing {', '.join(missing)})")
    H = state["last_layer.1.weight"].shape[0]
    D = state["proj_in.weight"].shape[1] if "proj_in.weight" in state else H
    if D % H:
        raise MigmError(f"{what}: width {D} is not a multiple of the hidden width {H}")
    config = {
        "dim": D,
        "bottleneck": D // H,
        "blocks": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        "mlp_ratio": state["blocks.0.cross_attn_ff.fn.net.0.weight"].shape[0] // H,
        "time": "time_embedder.mlp.0.weight" in state,
    }
    if config["time"]:
        config["time_hidden"], config["time_freq"] = state["time_embedder.mlp.0.weight"].shape
    return config


def published_dimoo_arch_config(state: dict[str, torch.Tensor], what: str) -> dict:
    """dimoo-transformer config fields read off a published `MDMShortcut` state dict's keys and shapes:
    width and bottleneck (no `proj_in`: bottleneck 1, identity projections), blocks, and mask-ratio
    conditioning (`time_embedder` present) with its frequencies. The block shape comes from the base."""
    need = ("ln_f.weight", "blocks.0.cross_attn.q_proj.weight", "blocks.0.self_attn.q_proj.weight")
    missing = [k for k in need if k not in state]
    if missing:
        raise MigmError(f"{what}: not a DiMOO MDMShortcut state dict (missing {', '.join(missing)})")
    H = state["ln_f.weight"].shape[0]
    D = state["proj_in.weight"].shape[1] if "proj_in.weight" in state else H
    bottleneck = max(1, round(D / H))
    if round(D / bottleneck) != H:  # the published hidden width is round(D / bottleneck_ratio)
        raise MigmError(f"{what}: hidden width {H} is not round({D} / k) for any whole bottleneck k")
    config = {
        "dim": D,
        "bottleneck": bottleneck,
        "blocks": len({k.split(".")[1] for k in state if k.startswith("blocks.")}),
        "time": "time_embedder.mlp.0.weight" in state,
    }
    if config["time"]:
        config["time_freq"] = state["time_embedder.mlp.0.weight"].shape[1]
    return config


def import_published(
    file: str | Path,
    out: str | Path,
    base,
    shortcut_heads: int = 16,
    bottleneck: int | None = None,
    blocks: int | None = None,
    steps: int = 32,
) -> dict:
    """Wrap a published MIGM-Shortcut state dict (a torch pickle, read weights-only) into a zoo folder
    bound to the loaded `base`: bottleneck, blocks and time conditioning read off the keys and shapes
    (`bottleneck` / `blocks`, when given, are checked against them), safetensors weights. A MaskGIT
    base takes a `MaskGITShortcut` as tiny-transformer with `shortcut_heads` heads (not in the file;
    16 as released); a DiMOO base takes an `MDMShortcut` as dimoo-transformer, its block shape
    (heads included) the base's."""
    from migm.shortcut_zoo.cost import relative_cost
    from migm.trajectories.base.checkpoints import load_state_dict
    from migm.trajectories.rollout import SamplerConfig
    from migm.trajectories.store.schema import sha256_path

    file, out = Path(file), Path(out)
    check_outside_data(out, "--out")
    writable_dir(out.parent, "folder")
    if out.exists() and any(out.iterdir()):
        raise MigmError(f"{out} is not empty; choose a new zoo folder")
    state = load_state_dict(file, "state_dict", "shortcut state dict")
    check_finite_weights(state, str(file))  # a NaN shortcut would sample NaN features without a word
    arch = base.shortcut_arch
    if arch not in ("tiny-transformer", "dimoo-transformer"):
        raise MigmError(f"--model {base.name} has no published shortcut layout to import (its arch is {arch})")
    dimoo = arch == "dimoo-transformer"
    if not dimoo and "ln_f.weight" in state:
        raise MigmError(f"{file} is a DiMOO shortcut (MDMShortcut); import it with --base dimoo")
    found = published_dimoo_arch_config(state, str(file)) if dimoo else published_arch_config(state, str(file))
    for name, given in (("bottleneck", bottleneck), ("blocks", blocks)):
        if given is not None and given != found[name]:
            raise MigmError(f"{file} has {name} {found[name]}, not the --{name} {given} asked for")
    if found["dim"] != base.D:
        raise MigmError(f"{file} has width {found['dim']}; the base has D = {base.D}")
    if dimoo:
        shortcut = build_for_base(arch, base, **found)
    else:
        H = found["dim"] // found["bottleneck"]
        if shortcut_heads < 1 or H % shortcut_heads:
            raise MigmError(f"--shortcut-heads must divide the shortcut's hidden width {H}, got {shortcut_heads}")
        shortcut = build(arch, **found, heads=shortcut_heads)
    load_state_dict_strict(shortcut, state, str(file))
    shortcut = shortcut.to(base.device).eval()
    config = {
        "zoo_format": ZOO_FORMAT,
        "arch": arch,
        "arch_config": asdict(shortcut.cfg),
        "base": {"name": base.name, "fingerprint": base.fingerprint},
        "origin": {"published": file.name, "sha256": sha256_path(file)},
        "sampler": SamplerConfig.for_base(base, steps).to_dict(),
        "metrics": {"overall": {}},
        "cost": relative_cost(shortcut, base, steps),
        "version": __version__,
    }
    return write_zoo_folder(out, shortcut, config)
