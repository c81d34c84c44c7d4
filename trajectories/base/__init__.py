"""Base models (MIGMs) behind one protocol, resolved by name.

A base has `name`, `fingerprint`, `L`, `C`, `D`, `V`, `mask_id`, `num_classes`, `sampler_defaults`,
`precision` and `forward(tokens, cond) -> (logits, feature)`, `head(feature)`, `embed(ids, positions)`,
`null_cond(batch)`, `decode(tokens)` (see DESIGN.md, Contracts). Text bases (`text = True`, DiMOO) take
prompt ids as `cond` and add `feature_valid(cond)` and `new_tokens(new_ids, new_pos, cond, branch)`.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from migm.trajectories.base.digits import digit_statistics, load_maskgit_digits, score_digits
from migm.trajectories.base.dimoo import load_dimoo
from migm.trajectories.base.dimoo_digits import load_dimoo_digits
from migm.trajectories.base.maskgit import load_maskgit
from migm.trajectories.compile import compile_base
from migm.trajectories.errors import MigmError

# name -> (loader, one-line description); a loader's keyword arguments are the local paths it takes
BASES: dict[str, tuple[Callable, str]] = {
    "maskgit-digits": (
        load_maskgit_digits,
        "class-conditional MaskGIT on scikit-learn's 8x8 digits (L=64, V=17), shipped in the package",
    ),
    "dimoo-digits": (
        load_dimoo_digits,
        "text-to-image Lumina-DiMOO (LLaDA) on scikit-learn's 8x8 digits, prompts naming the digit "
        '("a handwritten seven", "the digit 7"); shipped in the package',
    ),
    "maskgit": (
        load_maskgit,
        "published MaskGIT ImageNet checkpoint: --checkpoint FILE [--vqgan DIR to decode] [--heads 16]",
    ),
    "dimoo": (
        load_dimoo,
        "Lumina-DiMOO text-to-image (LLaDA): --checkpoint DIR (its Hugging Face folder) [--height/--width 1024]",
    ),
}

PRECISIONS = ("fp32", "bf16", "fp16")

# base name -> scorer(tokens [n, L], labels [n]) -> metrics; bases without one report token agreement only
SCORERS: dict[str, Callable] = {"maskgit-digits": score_digits, "dimoo-digits": score_digits}
# base name -> (tokens, labels) -> {metric: statistic(sample indices) -> float}: the scorer's metrics per
# subset of the samples, which `migm bench` resamples for bootstrap intervals
SCORE_STATISTICS: dict[str, Callable] = {"maskgit-digits": digit_statistics, "dimoo-digits": digit_statistics}


@dataclass(frozen=True)
class BaseSpec:
    """A base as named on the command line: parsed once at the command boundary, loaded once by
    `load_base`, and the loaded base is passed down (library code never rebuilds a base by name)."""

    name: str | None = None  # None: the base a dataset or zoo model names (train), else an error
    checkpoint: str | None = None  # local files of real checkpoints (None: not given)
    vqgan: str | None = None
    heads: int | None = None
    pixels: str | None = None  # MaskGIT image mapping: minmax (published) or clamp
    height: int | None = None  # text-to-image bases: image size in pixels (None: not given)
    width: int | None = None
    precision: str | None = None  # None: the base's default (fp32; DiMOO: bf16 on CUDA, fp32 on CPU)
    device: str = "auto"
    compile: bool = False  # torch.compile the transformer and head (and the shortcuts loaded for it)

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
        raise MigmError(f"--model is needed; known models: {', '.join(sorted(BASES))}")
    if spec.name not in BASES:
        raise MigmError(f"unknown model {spec.name!r}; known models: {', '.join(sorted(BASES))}")
    if spec.precision is not None and spec.precision not in PRECISIONS:
        raise MigmError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec.precision!r}")
    if spec.heads is not None and spec.heads < 1:
        raise MigmError(f"--heads must be at least 1, got {spec.heads}")
    device = resolve_device(spec.device)
    if spec.precision == "fp16" and not device.startswith("cuda"):
        raise MigmError("--precision fp16 needs a CUDA device (on CPU use bf16 or fp32)")
    loader = BASES[spec.name][0]
    paths = spec.paths()
    params = inspect.signature(loader).parameters
    unknown = sorted(set(paths) - set(params))
    if unknown:
        options = ", ".join("--" + k.replace("_", "-") for k in unknown)
        why = " (it ships its own weights and decoder)" if spec.name in ("maskgit-digits", "dimoo-digits") else ""
        raise MigmError(f"{options} not used by --model {spec.name}{why}")
    if "device" in params and "precision" in params:
        base = loader(**paths, device=device, precision=spec.precision)
    else:
        base = loader(**paths).to(device)
        base.precision = spec.precision or "fp32"
    if spec.compile:
        compile_base(base)
    return base
