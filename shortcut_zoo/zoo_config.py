"""The zoo folder's `config.json`, typed: every field a reader uses has its kind checked before use.

`read_zoo_config` (export.py) reads the file through the safe loader (size, UTF-8, depth, integer
limits); this module checks what the values are, so that `zoo list`, `zoo show`, `sample` and `push`
never meet a list where an object belongs or a string where a number belongs. Every problem is one
`MigmError` line naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path

from migm.trajectories.errors import MigmError


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scalar(v) -> bool:  # an arch option: a number, a switch, a name or unset
    return v is None or isinstance(v, (bool, str)) or _number(v)


# field -> (check, what it must be); absent optional fields are allowed, present ones checked
REQUIRED = {
    "arch": (lambda v: isinstance(v, str), "a string"),
    "arch_config": (lambda v: isinstance(v, dict) and all(map(_scalar, v.values())), "an object of plain values"),
    "base": (
        lambda v: isinstance(v, dict) and isinstance(v.get("name"), str) and isinstance(v.get("fingerprint"), str),
        "an object with a name and a fingerprint",
    ),
}
OPTIONAL = {
    "metrics": (lambda v: isinstance(v, dict) and isinstance(v.get("overall", {}), dict), "an object"),
    "cost": (lambda v: isinstance(v, dict), "an object"),
    "dataset": (lambda v: isinstance(v, dict), "an object"),
    "sampler": (lambda v: isinstance(v, dict), "an object"),
    "training": (lambda v: isinstance(v, dict), "an object"),
    "origin": (lambda v: isinstance(v, dict), "an object"),
    "step_errors": (lambda v: isinstance(v, dict), "an object"),
    "version": (lambda v: isinstance(v, str), "a string"),
}
# the figures `zoo list` and the card show: a number, or null (not measured)
FIGURES = {
    "metrics.overall": ("cos", "cache_cos", "mse_ratio_to_cache", "agree", "cache_agree"),
    "cost": ("parameters", "relative_cost"),
}


def check_zoo_config(config, where: str | Path) -> dict:
    """`config` (parsed JSON) is a zoo config whose fields are of the kinds readers use."""
    if not isinstance(config, dict):
        raise MigmError(f"{where}: must be a JSON object, got a JSON {type(config).__name__}")
    for key, (ok, want) in REQUIRED.items():
        if key not in config or not ok(config[key]):
            raise MigmError(f"{where}: field {key!r} is missing or not {want}")
    for key, (ok, want) in OPTIONAL.items():
        if key in config and not ok(config[key]):
            raise MigmError(f"{where}: field {key!r} is not {want}")
    for path, keys in FIGURES.items():
        section = config
        for part in path.split("."):
            section = section.get(part, {}) if isinstance(section, dict) else {}
        for key in keys:
            v = section.get(key)
            if v is not None and not _number(v):
                raise MigmError(f"{where}: field '{path}.{key}' must be a finite number or null, got {v!r:.40}")
    return config
