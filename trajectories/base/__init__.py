"""Base models (MIGMs) behind one protocol, resolved by name.

A base has `name`, `fingerprint`, `L`, `C`, `D`, `V`, `mask_id`, `num_classes`, `sampler_defaults`,
`precision` and `forward(tokens, cond) -> (logits, feature)`, `head(feature)`, `embed(ids, positions)`,
`null_cond(batch)`, `decode(tokens)` (see DESIGN.md, Contracts).
"""

from __future__ import annotations

import inspect
from typing import Callable

from trajectories.base.digits import load_maskgit_digits
from trajectories.base.maskgit import load_maskgit
from trajectories.errors import MigmError

# name -> (loader, one-line description); a loader's keyword arguments are the local paths it takes
BASES: dict[str, tuple[Callable, str]] = {
    "maskgit-digits": (
        load_maskgit_digits,
        "class-conditional MaskGIT on scikit-learn's 8x8 digits (L=64, V=17), shipped in the package",
    ),
    "maskgit": (
        load_maskgit,
        "published MaskGIT ImageNet checkpoint: --checkpoint FILE [--vqgan DIR to decode] [--heads 16]",
    ),
}

PRECISIONS = ("fp32", "bf16", "fp16")


def get_base(name: str, device: str = "cpu", precision: str = "fp32", **paths):
    """Load a base model by name; `paths` are the local files or folders a real checkpoint needs
    (None values are ignored). `precision` bf16/fp16 runs the transformer under autocast."""
    if name not in BASES:
        raise MigmError(f"unknown model {name!r}; known models: {', '.join(sorted(BASES))}")
    if precision not in PRECISIONS:
        raise MigmError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and str(device) != "cuda":
        raise MigmError("--precision fp16 needs --device cuda (on CPU use bf16 or fp32)")
    loader = BASES[name][0]
    paths = {k: v for k, v in paths.items() if v is not None}
    unknown = sorted(set(paths) - set(inspect.signature(loader).parameters))
    if unknown:
        options = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise MigmError(f"{options} not used by --model {name} (it ships its own weights)" if name == "maskgit-digits"
                        else f"{options} not used by --model {name}")  # fmt: skip
    base = loader(**paths).to(device)
    base.precision = precision
    return base
