"""Base models (MIGMs) behind one protocol, resolved by name.

A base has `name`, `fingerprint`, `L`, `C`, `D`, `V`, `mask_id`, `num_classes`, `sampler_defaults`
and `forward(tokens, cond) -> (logits, feature)`, `head(feature)`, `embed(ids, positions)`,
`null_cond(batch)`, `decode(tokens)` (see DESIGN.md, Contracts).
"""

from __future__ import annotations

from typing import Callable

from trajectories.base.digits import load_maskgit_digits
from trajectories.errors import MigmError

# name -> (loader, one-line description)
BASES: dict[str, tuple[Callable, str]] = {
    "maskgit-digits": (
        load_maskgit_digits,
        "class-conditional MaskGIT on scikit-learn's 8x8 digits (L=64, V=17), shipped in the package",
    ),
}


def get_base(name: str, device: str = "cpu", **paths):
    """Load a base model by name; `paths` are the local files or folders a real checkpoint needs."""
    if name not in BASES:
        raise MigmError(f"unknown model {name!r}; known models: {', '.join(sorted(BASES))}")
    return BASES[name][0](**paths).to(device)
