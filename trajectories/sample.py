"""Generation and scoring on top of the rollout: what `migm generate` and `migm score` call."""

from __future__ import annotations

import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trajectories.base import get_base
from trajectories.base.digits import score_digits
from trajectories.errors import MigmError
from trajectories.rollout import Predictor, SamplerConfig, rollout, sample_seeds
from trajectories.schedule import full_steps, token_schedule


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise MigmError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise MigmError("--device cuda asked for, but no CUDA GPU is visible")
    return device


def load_base(model: str, device: str = "auto", base_args: dict | None = None):
    """The base by name on the resolved device; `base_args`: checkpoint / vqgan / heads / precision."""
    return get_base(model, device=resolve_device(device), **(base_args or {}))


def cpu_name() -> str:
    """The CPU model, for benchmark tables."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sampler_config(base, steps: int, budget: int | None = None, **overrides: float | None) -> SamplerConfig:
    """The base's own sampler defaults, overridden by what the user set; validated against L."""
    token_schedule(base.L, steps)
    if budget is not None:
        full_steps(steps, budget)
    values = {**base.sampler_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    return SamplerConfig(steps=steps, budget=budget, **values)


def check_out_path(out: str | Path) -> Path:
    out = Path(out)
    if not out.parent.is_dir():
        raise MigmError(f"output directory {str(out.parent)!r} does not exist")
    return out


def parse_classes(spec: str) -> list[int]:
    """'0-9', '3', '1,4,7' or '0-2,5' -> sorted class ids (checked against the base later)."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise MigmError(f"classes must look like '0-9' or '1,4,7', got {spec!r}") from None
    if not out:
        raise MigmError(f"no classes in {spec!r}")
    return sorted(out)


@dataclass
class Samples:
    tokens: torch.Tensor  # [n, L]
    labels: torch.Tensor  # [n]
    seconds: float  # rollout wall time, all batches
    step_seconds: list[float]  # per step, summed over batches

    @property
    def latency_per_image(self) -> float:
        return self.seconds / len(self.labels)


def sample_many(
    base, labels: torch.Tensor, config: SamplerConfig, seed: int, batch_size: int = 250,
    predictor: Predictor | None = None, progress: Callable[[int], None] | None = None,
) -> Samples:  # fmt: skip
    """Roll out `labels` in batches; sample i always gets the seed derived from (seed, i)."""
    seeds = sample_seeds(seed, 0, len(labels))
    tokens, seconds, step_seconds = [], 0.0, [0.0] * config.steps
    for i in range(0, len(labels), batch_size):
        r = rollout(base, labels[i : i + batch_size], seeds[i : i + batch_size], config, predictor=predictor)
        tokens.append(r.tokens.cpu())
        seconds += r.total_time
        step_seconds = [a + b for a, b in zip(step_seconds, r.step_times)]
        if progress is not None:
            progress(len(r.tokens))
    return Samples(torch.cat(tokens), labels.cpu(), seconds, step_seconds)


def save_grid(images: torch.Tensor, rows: int, path: Path, scale: int | None = None, pad: int = 1) -> None:
    """Images [n, 3, H, W] in [0, 1] as a PNG grid with `rows` rows, small images upscaled (to >= 32 px)."""
    from PIL import Image

    n, _, H, W = images.shape
    scale = scale or max(1, 32 // H)
    cols = -(-n // rows)
    canvas = np.ones((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), dtype=np.float32)
    for i, img in enumerate(images.cpu().float().numpy()):
        r, c = divmod(i, cols)
        y, x = pad + r * (H + pad), pad + c * (W + pad)
        canvas[y : y + H, x : x + W] = img.transpose(1, 2, 0)
    canvas = np.kron(canvas, np.ones((scale, scale, 1), dtype=np.float32))
    Image.fromarray((canvas * 255).round().astype(np.uint8)).save(path)


def generate(
    model: str, classes: list[int], per_class: int, steps: int, seed: int, out: str | Path,
    budget: int | None = None, device: str = "auto", batch_size: int = 250,
    progress: Callable[[int], None] | None = None, predictor_for: Callable | None = None,
    base_args: dict | None = None, **overrides: float | None,
) -> dict:  # fmt: skip
    """Sample `per_class` images of each class and write them as a PNG grid, one row per class.

    `predictor_for(base)` gives the predictor for the shortcut steps (none: vanilla sampling)."""
    out = check_out_path(out)
    if per_class < 1:
        raise MigmError(f"per-class must be at least 1, got {per_class}")
    base = load_base(model, device, base_args)
    bad = [c for c in classes if not 0 <= c < base.num_classes]
    if bad:
        raise MigmError(f"classes must be in 0-{base.num_classes - 1}, got {bad}")
    config = sampler_config(base, steps, budget, **overrides)
    predictor = predictor_for(base) if predictor_for is not None else None
    labels = torch.tensor(classes).repeat_interleave(per_class)
    s = sample_many(base, labels, config, seed, batch_size, predictor=predictor, progress=progress)
    # decode a few at a time: a 512-px VQGAN decode holds GiBs of activations per dozen images
    images = torch.cat([base.decode(t.to(base.device)).cpu() for t in s.tokens.split(8)])
    save_grid(images, rows=len(classes), path=out)
    return {"out": str(out), "images": len(labels), "latency_per_image_s": s.latency_per_image, "sampler": config.to_dict()}


def score(
    model: str, samples: int, steps: int, seed: int, budget: int | None = None, device: str = "auto",
    batch_size: int = 250, progress: Callable[[int], None] | None = None, base_args: dict | None = None,
    **overrides: float | None,
) -> dict:  # fmt: skip
    """Sample `samples` images with classes spread evenly and score them with the base's scorer."""
    if samples < 2:
        raise MigmError(f"samples must be at least 2 (the Fréchet distance needs a covariance), got {samples}")
    base = load_base(model, device, base_args)
    if base.name not in SCORERS:
        raise MigmError(f"no scorer for {base.name!r}; scoring works for: {', '.join(SCORERS)}")
    config = sampler_config(base, steps, budget, **overrides)
    labels = torch.arange(samples) % base.num_classes
    s = sample_many(base, labels, config, seed, batch_size, progress=progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = SCORERS[base.name](s.tokens, s.labels)
    return {"model": base.name, **metrics, "latency_per_image_s": s.latency_per_image, "sampler": config.to_dict()}


# base name -> scorer(tokens [n, L], labels [n]) -> metrics
SCORERS = {"maskgit-digits": score_digits}
