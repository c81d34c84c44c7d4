"""Reading published torch checkpoints safely: `torch.load(weights_only=True)`, never a full unpickle.

Training checkpoints often carry objects beside the weights (PyTorch Lightning callbacks keyed by
their class, argparse namespaces). `weights_only` refuses them; we retry with an inert stand-in class
for each refused name: it has no behaviour, so the file's objects load as empty shells while every
tensor loads exactly. Modules torch blocks (os, sys, …) stay refused.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from migm.trajectories.errors import MigmError

_REFUSED = re.compile(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)")


class _Inert:
    """Stand-in for a class a checkpoint names but we do not need: takes any state, does nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state) -> None:
        pass


def _stand_in(full_path: str) -> type:
    module, _, name = full_path.rpartition(".")
    return type(name, (_Inert,), {"__module__": module, "__qualname__": name})


def load_torch_file(path: str | Path, max_stand_ins: int = 32):
    """`torch.load(path, map_location='cpu', weights_only=True)`, with inert stand-ins for refused classes."""
    path = Path(path)
    if not path.is_file():
        raise MigmError(f"checkpoint {str(path)!r} does not exist")
    stand_ins: list[type] = []
    while True:
        try:
            with torch.serialization.safe_globals(stand_ins):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            m = _REFUSED.search(str(e))
            name = m.group(1) if m else None
            if "Unsupported operand" in str(e) or "could not find MARK" in str(e):
                raise MigmError(f"{path}: not a torch checkpoint (unreadable pickle data)") from None
            if name is None or name.startswith(("torch.", "builtins.")) or len(stand_ins) >= max_stand_ins:
                why = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(e))
                why = (why.group(1) if why else str(e).strip()).split(" was not an allowed")[0][:160]
                raise MigmError(f"{path}: refused by the weights-only loader: {why}") from None
            stand_ins.append(_stand_in(name))
        except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
            why = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
            raise MigmError(f"{path}: not a torch checkpoint ({type(e).__name__}{': ' + why if why else ''})") from None


def load_state_dict(path: str | Path, key: str, what: str) -> dict:
    """The tensors of a checkpoint: `obj[key]` when the file holds a dict with `key`, else the file's
    own dict; all values must be tensors. DDP / compile key prefixes are dropped."""
    obj = load_torch_file(path)
    state = obj.get(key, obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MigmError(f"{path}: not a {what} (expected a dict with {key!r}, or a state dict of tensors)")
    return strip_prefixes(state)


def strip_prefixes(state: dict, prefixes: tuple[str, ...] = ("module.", "_orig_mod.")) -> dict:
    """Keys saved from DDP (`module.`) or `torch.compile` (`_orig_mod.`) models, made plain."""
    out = {}
    for key, value in state.items():
        for p in prefixes:
            if key.startswith(p):
                key = key[len(p) :]
        out[key] = value
    return out


def key_problems(own: dict[str, tuple], found: dict[str, tuple]) -> list[str]:
    """The missing, unexpected and mis-shaped keys of `found` against `own` (name -> shape), as one
    line each (at most 8 names a line); empty when they match."""
    missing = sorted(set(own) - set(found))
    extra = sorted(set(found) - set(own))
    shapes = [f"{k} {found[k]} != {own[k]}" for k in own if k in found and found[k] != own[k]]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:8]) + (" …" if len(missing) > 8 else ""))
    if extra:
        problems.append("unexpected keys: " + ", ".join(extra[:8]) + (" …" if len(extra) > 8 else ""))
    if shapes:
        problems.append("wrong shapes: " + ", ".join(shapes[:8]))
    return problems


def load_state_dict_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Strict load whose error names the missing, unexpected or mis-shaped keys."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = key_problems(own, {k: tuple(v.shape) for k, v in state.items()})
    if problems:
        raise MigmError(f"{what}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def fingerprint(config: dict, state: dict[str, torch.Tensor]) -> str:
    """sha256 over the config (sorted JSON) and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
