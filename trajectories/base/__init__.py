"""Base models (MIGMs) behind one protocol, resolved by name.

The interface is `protocol.py` (`Base`, `TextBase`, `SamplingRule`, `Predictor`); names map to loaders
in `registry.py` (built-in families, and plugins from the `migm.bases` entry-point group). A `BaseSpec`
is parsed once at the command boundary and `load_base` loads it once; the loaded base is passed down.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import torch

from migm.trajectories.base import hub
from migm.trajectories.base.registry import names, registration
from migm.trajectories.errors import MigmError

PRECISIONS = ("fp32", "bf16", "fp16")
HUB_PATHS = ("checkpoint", "vqgan")  # options that may name a Hub reference (hf://ORG/NAME[/PATH])


@dataclass(frozen=True)
class BaseSpec:
    """A base as named on the command line: parsed once at the command boundary, loaded once by
    `load_base`, and the loaded base is passed down (library code never rebuilds a base by name)."""

    name: str | None = None  # None: the base a dataset or zoo model names (train), else an error
    checkpoint: str | None = None  # local files of real checkpoints, or hf:// references (None: not given)
    vqgan: str | None = None
    heads: int | None = None
    pixels: str | None = None  # MaskGIT image mapping: minmax (published) or clamp
    height: int | None = None  # text-to-image bases: image size in pixels (None: not given)
    width: int | None = None
    precision: str | None = None  # None: the base's default (fp32; DiMOO: bf16 on CUDA, fp32 on CPU)
    device: str = "auto"

    def paths(self) -> dict:
        """The loader's keyword arguments the user set."""
        given = {
            "checkpoint": self.checkpoint,
            "vqgan": self.vqgan,
            "heads": self.heads,
            "pixels": self.pixels,
            "height": self.height,
            "width": self.width,
        }
        return {k: v for k, v in given.items() if v is not None}


def resolve_device(device: str) -> str:
    """auto, cpu, cuda or cuda:K -> a device torch can use, or a one-line error."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cpu"):  # accelerate names a CPU rank's device cpu:K
        return "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # under torchrun / accelerate: this rank's GPU
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise MigmError(f"device must be auto, cpu, cuda or cuda:K, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MigmError(f"--device {device} asked for, but no CUDA GPU is visible")
        index = int(device[5:] or 0)
        if index >= torch.cuda.device_count():
            raise MigmError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return device


def load_base(spec: BaseSpec):
    """Load the base a spec names, on its device and precision (bf16 / fp16 run the transformer
    under autocast); unknown names, options the base does not take and bad values are user errors.
    A loader that takes `device` and `precision` loads its weights straight onto the device in that
    dtype and resolves its own default precision (None); the others load on the CPU and move."""
    if spec.name is None:
        raise MigmError(f"--model is needed; known models: {', '.join(names())}")
    loader = registration(spec.name).loader
    if spec.precision is not None and spec.precision not in PRECISIONS:
        raise MigmError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec.precision!r}")
    if spec.heads is not None and spec.heads < 1:
        raise MigmError(f"--heads must be at least 1, got {spec.heads}")
    device = resolve_device(spec.device)
    if spec.precision == "fp16" and not device.startswith("cuda"):
        raise MigmError("--precision fp16 needs a CUDA device (on CPU use bf16 or fp32)")
    paths = spec.paths()
    params = inspect.signature(loader).parameters
    unknown = sorted(set(paths) - set(params))
    if unknown:
        options = ", ".join("--" + k.replace("_", "-") for k in unknown)
        why = " (it ships its own weights and decoder)" if "checkpoint" not in params else ""
        raise MigmError(f"{options} not used by --model {spec.name}{why}")
    paths = {k: hub.local(v) if k in HUB_PATHS else v for k, v in paths.items()}  # hf:// -> the cached copy
    if "device" in params and "precision" in params:
        return loader(**paths, device=device, precision=spec.precision)
    base = loader(**paths).to(device)
    base.precision = spec.precision or "fp32"
    return base
