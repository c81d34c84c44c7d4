"""Zoo folders: `model.safetensors` (weights only), `config.json`, `README.md` (model card).

`load_shortcut(path, base)` rebuilds the arch from `config.json`, loads the weights strictly and
refuses a base whose fingerprint differs (unless `force`), pickles, and malformed configs.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from migm.shortcut_zoo.archs import ARCHS, build, build_for_base
from migm.shortcut_zoo.zoo_config import check_zoo_config
from migm.trajectories import __version__
from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.errors import MigmError, write_error
from migm.trajectories.safe_load import load_json, read_bytes
from migm.trajectories.store.manifest import Manifest
from migm.trajectories.store.schema import write_json_atomic

# 2: `tiny-transformer` computes the published MIGM-Shortcut forward (query-only attention norm, adaLN
# `scale, shift` without SiLU, eps 1e-12, published time-MLP width); 1 had its own variant of it.
ZOO_FORMAT = 2
# The zoo format from which an arch's saved weights fit the forward computed now. An older folder of
# that arch holds weights trained for another forward: loading it asks for a retrain.
FORWARD_SINCE = {"tiny-transformer": 2}
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
ZOO_FILES = (WEIGHTS, CONFIG, CARD)  # a zoo folder is these files; `push` uploads exactly them
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
MAX_CARD_BYTES = 256 << 10  # `zoo show` renders at most this much card (ours are a few kilobytes)


def export_shortcut(
    out: str | Path,
    model: torch.nn.Module,
    arch: str,
    base,
    manifest: Manifest,
    metrics: dict,
    cost: dict,
    training: dict,
    step_errors: dict | None = None,
    live: dict | None = None,
) -> dict:
    """Write a zoo folder for a trained shortcut; returns its config. `step_errors` (held-out error of
    the chained shortcut per full step and chain length, `evaluate.chained_errors`) is what
    `--placement auto` places the full steps by. `live` (trained from live rollouts: fingerprint, seed,
    training and validation sample ids [start, stop)) replaces the dataset's record; `manifest` is
    then the plan the samples were rolled out by."""
    dataset = {
        "fingerprint": manifest.fingerprint() if live is None else live["fingerprint"],
        "num_samples": manifest.num_samples
        if live is None
        else live["training_samples"][1] - live["training_samples"][0],
        "codec": manifest.codec.spec if live is None else "none (live rollouts)",
        "dims": asdict(manifest.dims),
    }
    if live is not None:
        dataset["live"] = {k: v for k, v in live.items() if k != "fingerprint"}
    config = {
        "zoo_format": ZOO_FORMAT,
        "arch": arch,
        "arch_config": asdict(model.cfg),
        "base": {"name": base.name, "fingerprint": base.fingerprint},
        "dataset": dataset,
        "sampler": manifest.sampler.to_dict(),
        "metrics": metrics,
        "cost": cost,
        "training": training,
        "version": __version__,
    }
    if step_errors is not None:
        config["step_errors"] = step_errors
    return write_zoo_folder(Path(out), model, config)


def write_zoo_folder(out: Path, model: torch.nn.Module, config: dict) -> dict:
    """Weights (safetensors), model card, then `config.json` last. A write error (disk full,
    read-only) is one line naming the folder."""
    from migm.cards import render_model_card

    try:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
        card = render_model_card(config, str(out))
        # a path that is not UTF-8 (bytes kept as surrogate escapes) is shown escaped, not a crash
        (out / CARD).write_text(card.encode("utf-8", "backslashreplace").decode("utf-8"), encoding="utf-8")
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        raise MigmError(f"cannot write zoo folder {out}: {write_error(e)}") from None
    write_json_atomic(out / CONFIG, config)
    return config


def read_zoo_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_dir():
        raise MigmError(f"{str(path)!r} is not a zoo folder")
    if not (path / CONFIG).exists():
        raise MigmError(f"{str(path)!r} has no {CONFIG}: not a zoo folder")
    config = load_json(path / CONFIG)  # size, UTF-8, depth and integer limits
    if not isinstance(config, dict):
        raise MigmError(f"{path / CONFIG}: must be a JSON object, got a JSON {type(config).__name__}")
    fmt = config.get("zoo_format", 0)  # none: written before zoo formats were numbered
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt > ZOO_FORMAT:
        raise MigmError(f"{path / CONFIG}: zoo format {fmt!r} is not supported (this migm reads up to {ZOO_FORMAT})")
    arch = config.get("arch")
    if fmt < (FORWARD_SINCE.get(arch, 1) if isinstance(arch, str) else 1):
        raise MigmError(
            f"{path}: zoo format {fmt} holds weights trained for the old {config.get('arch')} forward "
            f"(this migm computes the published one); retrain it with migm train, or re-import the published file"
        )
    check_zoo_config(config, path / CONFIG)  # every field's kind, before any reader uses it
    if config["arch"] not in ARCHS:
        raise MigmError(f"{path / CONFIG}: unknown arch {config['arch']!r}; known archs: {', '.join(sorted(ARCHS))}")
    return config


def read_step_errors(path: str | Path) -> dict:
    """The held-out chained-shortcut errors stored with zoo folder `path` (for `--placement auto`), checked."""
    path = Path(path)
    config = read_zoo_config(path)
    table = config.get("step_errors")
    if table is None:
        raise MigmError(
            f"shortcut {path} has no stored step errors (trained before they were measured, imported, or "
            "trained with --val-fraction 0), so --placement auto cannot place its full steps; retrain it with "
            "migm train, or use --placement uniform"
        )
    N, error = (table.get("N"), table.get("error")) if isinstance(table, dict) else (None, None)
    ok = isinstance(N, int) and N >= 2 and isinstance(error, list) and len(error) == N - 1
    ok = ok and all(
        isinstance(row, list)
        and len(row) == N - 1 - s
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in row)
        for s, row in enumerate(error)
    )
    if not ok:
        raise MigmError(f"{path / CONFIG}: field 'step_errors' is malformed; retrain the shortcut")
    return table


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
        raise MigmError(
            f"shortcut {path} was trained for base {config['base']['name']} "
            f"({config['base']['fingerprint'][:12]}), not this {base.name} ({base.fingerprint[:12]}); "
            "use --force to load it anyway"
        )
    if config["arch_config"].get("dim") != base.D:
        raise MigmError(f"shortcut {path} has width {config['arch_config'].get('dim')}, the base has D = {base.D}")
    state = read_weights(weights)
    model = build_for_base(config["arch"], base, **config["arch_config"])
    load_state_dict_strict(model, state, str(weights))
    return model.to(base.device).eval().requires_grad_(False)


def check_finite_weights(state: dict[str, torch.Tensor], what: str) -> None:
    """Every floating-point tensor of a state dict finite; else one line naming the first bad one."""
    for key, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise MigmError(f"{what}: weight {key!r} holds NaN or infinite values; refusing a broken shortcut")


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """A zoo folder's safetensors weights (header and offsets checked by safetensors), all finite."""
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise MigmError(f"{weights} is not a safetensors file ({e}); pickled weights are never loaded") from None
    check_finite_weights(state, str(weights))
    return state


def check_zoo_folder(path: str | Path) -> dict:
    """A zoo folder as `push` may upload it: config readable and typed, weights a sane safetensors
    file with finite values that load strictly into the arch the config names. Returns the config."""
    path = Path(path)
    config = read_zoo_config(path)
    weights = path / WEIGHTS
    if weights.is_symlink() or not weights.is_file():
        raise MigmError(f"{path} has no {WEIGHTS} (a plain file)")
    model = build(config["arch"], **config["arch_config"])
    load_state_dict_strict(model, read_weights(weights), str(weights))
    return config


def read_model_card(path: str | Path) -> str:
    """The model card of zoo folder `path`, as Markdown without its Hub metadata header."""
    path = Path(path)
    read_zoo_config(path)
    card = path / CARD
    if not card.is_file():
        raise MigmError(f"{path} has no {CARD} (model card); `migm zoo list {path}` shows its figures")
    # bounded: rich's Markdown renderer takes minutes on megabytes; invalid UTF-8 is shown replaced
    text = read_bytes(card, MAX_CARD_BYTES, "model card").decode("utf-8", errors="replace")
    if text.startswith("---\n"):  # YAML front matter: metadata for the Hub, not for reading
        end = text.find("\n---\n", 4)
        text = text[end + 5 :] if end >= 0 else text
    return text.lstrip("\n")


def list_zoo(root: str | Path) -> list[dict]:
    """One summary row per zoo folder under `root` (the folder itself may be one)."""
    root = Path(root)
    if not root.is_dir():
        raise MigmError(f"{str(root)!r} is not a folder")
    rows = []
    for config_path in sorted([root / CONFIG] if (root / CONFIG).exists() else root.glob(f"*/{CONFIG}")):
        c = read_zoo_config(config_path.parent)
        m, cost = c.get("metrics", {}).get("overall", {}), c.get("cost", {})
        # a figure the folder does not have (an imported shortcut, too few held-out samples) is None: "n/a"
        rows.append(
            {
                "path": str(config_path.parent),
                "arch": c["arch"],
                "base": c["base"]["name"],
                "parameters": cost.get("parameters"),
                "relative_cost": cost.get("relative_cost"),
                "cos": m.get("cos"),
                "mse_ratio_to_cache": m.get("mse_ratio_to_cache"),
                "agree": m.get("agree"),
            }
        )
    return rows


def push(path: str | Path, repo_id: str, private: bool = True, dry_run: bool = False) -> dict:
    """Upload a dataset folder (as a Hub dataset) or a zoo folder (as a Hub model: exactly its
    weights, config and card, never its checkpoint or anything else), private unless asked."""
    from migm.trajectories.checks import check_repo_id
    from migm.trajectories.store.hub import push_dataset, upload_files

    path = Path(path)
    check_repo_id(repo_id)
    if (path / CONFIG).exists() or (path / CONFIG).is_symlink():
        check_zoo_folder(path)  # never upload weights that do not load, or that hold NaN
        return upload_files(path, list(ZOO_FILES), repo_id, "model", private, dry_run)
    return push_dataset(path, repo_id, private, dry_run)
