"""Shortcut architectures, registered by name. Every one has the same forward contract:

    forward(feat [B, L+C, D], new_emb [B, K, D], new_pos [B, K], new_valid [B, K], mask_ratio [B]) -> next_feat

K varies by step; padded new tokens have `new_valid = False`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

ARCHS: dict[str, tuple[type, type]] = {}  # name -> (module class, config dataclass)


def register(name: str, config_cls: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        ARCHS[name] = (cls, config_cls)
        return cls

    return wrap


def build(name: str, **config):
    """An arch by name with its config fields; unknown names and fields are user errors."""
    from trajectories.errors import MigmError

    if name not in ARCHS:
        raise MigmError(f"unknown arch {name!r}; known archs: {', '.join(sorted(ARCHS))}")
    cls, config_cls = ARCHS[name]
    kinds = {"int": int, "float": (int, float), "str": str}
    switches = {"on": True, "true": True, "off": False, "false": False}
    for f in dataclasses.fields(config_cls):
        value = config.get(f.name)
        if str(f.type) == "bool" and value is not None:
            if not isinstance(value, bool) and str(value).lower() not in switches:
                raise MigmError(f"bad config for arch {name!r}: {f.name} must be on or off, got {value!r}")
            config = {**config, f.name: value if isinstance(value, bool) else switches[str(value).lower()]}
            continue
        kind = kinds.get(str(f.type))
        if value is not None and kind and (isinstance(value, bool) or not isinstance(value, kind)):
            raise MigmError(f"bad config for arch {name!r}: {f.name} must be {f.type}, got {value!r}")
    try:
        return cls(config_cls(**config))
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:
        raise MigmError(f"bad config for arch {name!r}: {e}") from None


from shortcut_zoo.archs import gru, mlp, tiny_transformer  # noqa: E402,F401  (each registers itself)
