"""Shortcut architectures, registered by name. Every one has the same forward contract:

    forward(feat [B, L+C, D], new_emb [B, K, D], new_pos [B, K], new_valid [B, K], mask_ratio [B]) -> next_feat

K varies by step; padded new tokens have `new_valid = False`.
"""

from __future__ import annotations

from typing import Callable

ARCHS: dict[str, tuple[type, type]] = {}  # name -> (module class, config dataclass)


def register(name: str, config_cls: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        ARCHS[name] = (cls, config_cls)
        return cls

    return wrap


from shortcut_zoo.archs import tiny_transformer  # noqa: E402,F401  (registers itself)
