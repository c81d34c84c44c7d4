"""Zoo folders: `model.safetensors` (weights only), `config.json`, `README.md` (model card).

`load_shortcut(path, base)` rebuilds the arch from `config.json`, loads the weights strictly and
refuses a base whose fingerprint differs (unless `force`), pickles, and malformed configs.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shortcut_zoo.archs import ARCHS, build
from trajectories import __version__
from trajectories.base.maskgit import load_state_dict_strict
from trajectories.errors import MigmError
from trajectories.store.codecs import codec_from_dict
from trajectories.store.schema import dataset_fingerprint, write_json_atomic

ZOO_FORMAT = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def export_shortcut(out: str | Path, model: torch.nn.Module, arch: str, base, manifest: dict, metrics: dict,
                    cost: dict, training: dict) -> dict:  # fmt: skip
    """Write a zoo folder for a trained shortcut; returns its config."""
    config = {
        "zoo_format": ZOO_FORMAT,
        "arch": arch,
        "arch_config": asdict(model.cfg),
        "base": {"name": base.name, "fingerprint": base.fingerprint},
        "dataset": {"fingerprint": dataset_fingerprint(manifest), "num_samples": manifest["num_samples"],
                    "codec": codec_from_dict(manifest["codec"]).spec, "dims": manifest["dims"]},  # fmt: skip
        "sampler": manifest["sampler"],
        "metrics": metrics,
        "cost": cost,
        "training": training,
        "version": __version__,
    }
    return write_zoo_folder(Path(out), model, config)


def write_zoo_folder(out: Path, model: torch.nn.Module, config: dict) -> dict:
    """Weights (safetensors), model card, then `config.json` last."""
    from cards import render_model_card

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    (out / "README.md").write_text(render_model_card(config, str(out)))
    write_json_atomic(out / CONFIG, config)
    return config


def import_published(file: str | Path, out: str | Path, model: str = "maskgit", base_args: dict | None = None,
                     heads: int = 16, bottleneck: int | None = None, blocks: int | None = None,
                     steps: int = 32) -> dict:  # fmt: skip
    """Wrap a published MIGM-Shortcut state dict (a torch pickle, read weights-only) into a zoo folder
    bound to the base `model` (loaded from `base_args`): tiny-transformer arch, dims read off the
    tensor shapes (`bottleneck` / `blocks`, when given, are checked against them), safetensors weights."""
    from shortcut_zoo.evaluate import relative_cost
    from trajectories.base.checkpoints import load_state_dict
    from trajectories.sample import load_base, sampler_config
    from trajectories.store.schema import sha256_path

    file, out = Path(file), Path(out)
    if not out.parent.is_dir():
        raise MigmError(f"output directory {str(out.parent)!r} does not exist")
    if out.exists() and any(out.iterdir()):
        raise MigmError(f"{out} is not empty; choose a new zoo folder")
    state = load_state_dict(file, "state_dict", "shortcut state dict")
    base = load_base(model, "cpu", base_args)
    if "proj_in.weight" not in state or "time_embedder.mlp.0.weight" not in state:
        raise MigmError(f"{file}: not a MIGM-Shortcut state dict (no proj_in.weight / time_embedder.mlp.0.weight)")
    H, D = state["proj_in.weight"].shape
    found = {"bottleneck": D // H, "blocks": len({k.split(".")[1] for k in state if k.startswith("blocks.")})}
    for name, given in (("bottleneck", bottleneck), ("blocks", blocks)):
        if given is not None and given != found[name]:
            raise MigmError(f"{file} has {name} {found[name]}, not the --{name} {given} asked for")
    if D != base.D or D % H:
        raise MigmError(f"{file} has width {D} (hidden {H}); the base has D = {base.D}")
    if heads < 1 or H % heads:
        raise MigmError(f"--heads must divide the shortcut's hidden width {H}, got {heads}")
    arch_config = {"dim": D, "bottleneck": found["bottleneck"], "blocks": found["blocks"], "heads": heads,
                   "time_hidden": state["time_embedder.mlp.0.weight"].shape[0],
                   "time_freq": state["time_embedder.mlp.0.weight"].shape[1]}  # fmt: skip
    shortcut = build("tiny-transformer", **arch_config)
    load_state_dict_strict(shortcut, state, str(file))
    shortcut = shortcut.to(base.device).eval()
    config = {
        "zoo_format": ZOO_FORMAT,
        "arch": "tiny-transformer",
        "arch_config": asdict(shortcut.cfg),
        "base": {"name": base.name, "fingerprint": base.fingerprint},
        "origin": {"published": file.name, "sha256": sha256_path(file)},
        "sampler": sampler_config(base, steps).to_dict(),
        "metrics": {"overall": {}},
        "cost": relative_cost(shortcut, base, steps),
        "version": __version__,
    }
    return write_zoo_folder(out, shortcut, config)


def read_zoo_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise MigmError(f"{str(path)!r} is not a zoo folder")
    if not (path / CONFIG).exists():
        raise MigmError(f"{str(path)!r} has no {CONFIG}: not a zoo folder")
    try:
        config = json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise MigmError(f"{path / CONFIG} is not valid JSON ({e.msg})") from None
    if config.get("zoo_format") != ZOO_FORMAT:
        raise MigmError(f"{path / CONFIG}: zoo format {config.get('zoo_format')!r} is not supported (this migm reads {ZOO_FORMAT})")
    for key, kind in (("arch", str), ("arch_config", dict), ("base", dict)):
        if not isinstance(config.get(key), kind):
            raise MigmError(f"{path / CONFIG}: field {key!r} is missing or not a {kind.__name__}")
    if config["arch"] not in ARCHS:
        raise MigmError(f"{path / CONFIG}: unknown arch {config['arch']!r}; known archs: {', '.join(sorted(ARCHS))}")
    if not isinstance(config["base"].get("fingerprint"), str) or not isinstance(config["base"].get("name"), str):
        raise MigmError(f"{path / CONFIG}: field 'base' needs a name and a fingerprint")
    return config


def load_shortcut(path: str | Path, base, force: bool = False) -> torch.nn.Module:
    """The shortcut in zoo folder `path`, on the base's device, in eval mode."""
    path = Path(path)
    config = read_zoo_config(path)
    weights = path / WEIGHTS
    if not weights.exists():
        pickles = [p.name for pattern in PICKLES for p in path.glob(pattern)]
        if pickles:
            raise MigmError(f"{path} holds {', '.join(pickles)} but no {WEIGHTS}; pickled weights are never loaded")
        raise MigmError(f"{path} has no {WEIGHTS}")
    if config["base"]["fingerprint"] != base.fingerprint and not force:
        raise MigmError(f"shortcut {path} was trained for base {config['base']['name']} "
                        f"({config['base']['fingerprint'][:12]}), not this {base.name} ({base.fingerprint[:12]}); "
                        "use --force to load it anyway")  # fmt: skip
    if config["arch_config"].get("dim") != base.D:
        raise MigmError(f"shortcut {path} has width {config['arch_config'].get('dim')}, the base has D = {base.D}")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise MigmError(f"{weights} is not a safetensors file ({e}); pickled weights are never loaded") from None
    model = build(config["arch"], **config["arch_config"])
    load_state_dict_strict(model, state, str(weights))
    return model.to(base.device).eval().requires_grad_(False)


def list_zoo(root: str | Path) -> list[dict]:
    """One summary row per zoo folder under `root` (the folder itself may be one)."""
    root = Path(root)
    if not root.is_dir():
        raise MigmError(f"{str(root)!r} is not a folder")
    rows = []
    for config_path in sorted([root / CONFIG] if (root / CONFIG).exists() else root.glob(f"*/{CONFIG}")):
        c = read_zoo_config(config_path.parent)
        m, cost = c.get("metrics", {}).get("overall", {}), c.get("cost", {})
        rows.append({"path": str(config_path.parent), "arch": c["arch"], "base": c["base"]["name"],
                     "parameters": cost.get("parameters", 0), "relative_cost": cost.get("relative_cost", float("nan")),
                     "cos": m.get("cos", float("nan")), "mse_ratio_to_cache": m.get("mse_ratio_to_cache", float("nan")),
                     "agree": m.get("agree", float("nan"))})  # fmt: skip
    return rows


def push(path: str | Path, repo_id: str, private: bool = False, dry_run: bool = False) -> dict:
    """Upload a dataset folder (as a Hub dataset) or a zoo folder (as a Hub model, without its checkpoint)."""
    from trajectories.store.hub import push_dataset, upload_folder

    path = Path(path)
    if (path / CONFIG).exists():
        read_zoo_config(path)
        if not (path / WEIGHTS).exists():
            raise MigmError(f"{path} has no {WEIGHTS}")
        return upload_folder(path, repo_id, "model", private, dry_run, ignore=("checkpoint/*",))
    return push_dataset(path, repo_id, private, dry_run)
