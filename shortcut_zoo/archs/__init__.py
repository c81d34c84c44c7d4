"""Shortcut architectures, registered by name. Every one has the same forward contract:

    forward(feat [B, T, D], new_emb [B, K, D], new_pos [B, K], new_valid [B, K], mask_ratio [B],
            feat_valid [B, T] | None = None) -> next_feat

T = L + C positions (text bases: the longest row). K varies by step; padded new tokens have
`new_valid = False`. `new_pos` are positions in the feature's sequence. Rows are right-padded;
`feat_valid` marks their real positions (None: all real; archs without token mixing ignore it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

ARCHS: dict[str, tuple[type, type]] = {}  # name -> (module class, config dataclass)


def register(name: str, config_cls: type) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        ARCHS[name] = (cls, config_cls)
        return cls

    return wrap


# Size bounds, checked before anything is allocated: generous for a shortcut (the published ones have
# one or two blocks and widths up to 4096), far below what would exhaust memory or hang the build.
MAX_LAYERS = 256  # fields that repeat a layer: blocks, depth
LAYER_FIELDS = ("blocks", "depth")
MAX_SIZE = 65536  # any other integer field: widths, ratios, frequencies, heads
MAX_PARAMETERS = 2 * 10**9


def build(name: str, **config):
    """An arch by name with its config fields; unknown names and fields are user errors, and so are
    integers out of bounds (at least 1, or 0 where 0 is the field's "choose for me" default; at most
    MAX_LAYERS / MAX_SIZE) and more than MAX_PARAMETERS parameters (counted on the meta device), all
    refused before any weight is allocated."""
    import torch

    from migm.trajectories.errors import MigmError

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
        if value is not None and kind is int:
            low, high = 0 if f.default == 0 else 1, MAX_LAYERS if f.name in LAYER_FIELDS else MAX_SIZE
            if not low <= value <= high:
                raise MigmError(f"bad config for arch {name!r}: {f.name} must be in {low}..{high}, got {value}")
    try:
        cfg = config_cls(**config)
        if getattr(cfg, "hidden", 1) < 1:
            raise ValueError(f"the hidden width dim // bottleneck is {cfg.hidden}; use a smaller bottleneck")
        with torch.device("meta"):  # count the parameters without allocating them
            parameters = sum(p.numel() for p in cls(cfg).parameters())
        if parameters > MAX_PARAMETERS:
            raise MigmError(
                f"bad config for arch {name!r}: {parameters:,} parameters, more than the "
                f"{MAX_PARAMETERS:,} a shortcut may have; use fewer blocks or a larger bottleneck"
            )
        return cls(cfg)
    except (TypeError, ValueError, RuntimeError, AssertionError, ZeroDivisionError) as e:
        raise MigmError(f"bad config for arch {name!r}: {e}") from None


def build_for_base(name: str, base, **config):
    """`build` for a loaded base: `dim` is the base's D, and an arch whose config class has a
    classmethod `base_fields(base) -> dict` takes those fields from the base (the DiMOO shortcut's block
    shape), where the user gave none (or 0, "from the base"); the user's other fields win."""
    from migm.trajectories.errors import MigmError

    if name not in ARCHS:
        raise MigmError(f"unknown arch {name!r}; known archs: {', '.join(sorted(ARCHS))}")
    if config.get("dim", base.D) != base.D:
        raise MigmError(f"arch {name!r}: dim {config['dim']} given, but the base has D = {base.D}")
    fields = {"dim": base.D}
    config_cls = ARCHS[name][1]
    if hasattr(config_cls, "base_fields"):
        fields.update(config_cls.base_fields(base))
    unset = [k for k in fields if config.get(k) is None or (config[k] == 0 and not isinstance(config[k], bool))]
    return build(name, **{**config, **{k: fields[k] for k in unset}})


from migm.shortcut_zoo.archs import dimoo_transformer, gru, mlp, tiny_transformer  # noqa: E402,F401  (each registers itself)
