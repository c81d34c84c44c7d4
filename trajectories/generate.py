"""Generation on top of the rollout: batches of samples, PNG grids, and what `migm generate` and
`migm sample` call (`migm score` is `shortcut_zoo.score`). Every function takes a loaded base."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from migm.trajectories.checks import IMAGE_EXTENSIONS, check_int, check_seed, output_file, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import Predictor, SamplerConfig, rollout, sample_seeds


@dataclass
class Samples:
    tokens: torch.Tensor  # [n, L]
    labels: torch.Tensor  # [n]
    seconds: float  # rollout wall time, all batches
    step_seconds: list[float]  # per step, summed over batches
    full: list[int]  # the steps that ran the base model

    @property
    def latency_per_image(self) -> float:
        return self.seconds / len(self.labels)


def conditions(base, classes: list[int] | None = None, prompts: list[str] | None = None) -> tuple[list, torch.Tensor]:
    """What a command samples from: the names (class ids or prompts) and the base's `cond` of each
    (class ids [n], or prompt ids [n, P] right-padded with -1 for text bases)."""
    if base.text:
        if not prompts:
            raise MigmError(f"--model {base.name} is text-to-image: give --prompt TEXT or --prompts FILE")
        return list(prompts), base.encode_prompts(list(prompts)).cpu()
    if prompts:
        raise MigmError(f"--model {base.name} is class-conditional: give --classes, not prompts")
    classes = list(range(base.num_classes)) if classes is None else list(classes)
    bad = [c for c in classes if not 0 <= c < base.num_classes]
    if bad:
        raise MigmError(f"classes must be in 0-{base.num_classes - 1}, got {bad}")
    return classes, torch.tensor(classes)


def cycled_conditions(base, samples: int, prompts: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`samples` labels cycling over every class (or prompt), and the cond of each. A text base's
    prompts default to its `default_prompts`; its labels are the classes its `label_of` reads from
    the prompts (a scorer needs them), else the prompt indices."""
    default = getattr(base, "default_prompts", None)
    names, cond = conditions(base, prompts=prompts or default)
    index = torch.arange(samples) % len(names)
    label_of = getattr(base, "label_of", None)
    if base.text and label_of is not None:
        named = [label_of(p) for p in names]
        unnamed = [p for p, c in zip(names, named) if c < 0]
        if unnamed:
            raise MigmError(f"prompt {unnamed[0]!r} names no class of --model {base.name} (it labels samples by that)")
        labels = torch.tensor(named)[index]
    else:
        labels = index if base.text else cond[index]
    return labels, cond[index]


def cycled_prompts(base, samples: int, prompts: list[str] | None = None) -> list[str] | None:
    """The prompt of each of `samples` samples of a text base, cycling as `cycled_conditions` does (None: class base)."""
    if not base.text:
        return None
    names = list(prompts or getattr(base, "default_prompts", None) or [])
    return [names[i % len(names)] for i in range(samples)] if names else None


def sample_many(
    base,
    labels: torch.Tensor,
    config: SamplerConfig,
    seed: int,
    batch_size: int = 250,
    predictor: Predictor | None = None,
    progress: Callable[[int], None] | None = None,
    cond: torch.Tensor | None = None,
) -> Samples:
    """Roll out `labels` in batches (conditioned on `cond`, default the labels themselves: class ids);
    sample i always gets the seed derived from (seed, i)."""
    cond = labels if cond is None else cond
    seeds = sample_seeds(seed, 0, len(labels))
    tokens, seconds, step_seconds, full = [], 0.0, [0.0] * config.steps, list(range(config.steps))
    for i in range(0, len(labels), batch_size):
        r = rollout(base, cond[i : i + batch_size], seeds[i : i + batch_size], config, predictor=predictor)
        tokens.append(r.tokens.cpu())
        seconds += r.total_time
        step_seconds = [a + b for a, b in zip(step_seconds, r.step_times)]
        full = r.full
        if progress is not None:
            progress(len(r.tokens))
    return Samples(torch.cat(tokens), labels.cpu(), seconds, step_seconds, full)


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
    base,
    classes: list[int] | None,
    per_class: int,
    config: SamplerConfig,
    seed: int,
    out: str | Path,
    batch_size: int = 250,
    predictor: Predictor | None = None,
    progress: Callable[[int], None] | None = None,
    prompts: list[str] | None = None,
) -> dict:
    """Sample `per_class` images of each class (or prompt, for text bases) and write them as a PNG
    grid, one row each; a text base's prompts are written beside it (OUT.txt, one line per row).
    `predictor` runs the shortcut steps (None: vanilla sampling, every step full)."""
    out = output_file(out, IMAGE_EXTENSIONS, "--out")
    check_int("--per-class", per_class)
    check_int("--batch-size", batch_size)
    check_seed(seed)
    names, cond = conditions(base, classes, prompts)
    base.decode(torch.zeros(1, base.L, dtype=torch.long, device=base.device))  # no decoder: fail before sampling
    index = torch.arange(len(names)).repeat_interleave(per_class)
    labels = index if base.text else cond[index]
    s = sample_many(base, labels, config, seed, batch_size, predictor=predictor, progress=progress, cond=cond[index])
    # decode a few at a time: a 512-px VQGAN decode holds GiBs of activations per dozen images
    images = torch.cat([base.decode(t.to(base.device)).cpu() for t in s.tokens.split(8)])
    writable_dir(out.parent, "folder")
    save_grid(images, rows=len(names), path=out)
    result = {
        "out": str(out),
        "images": len(labels),
        "full_steps": s.full,
        "latency_per_image_s": s.latency_per_image,
        "sampler": config.to_dict(),
    }
    if base.text:
        captions = out.with_suffix(".txt")
        try:
            captions.write_text("".join(f"row {i + 1}: {p}\n" for i, p in enumerate(names)))
        except OSError as e:
            raise MigmError(f"cannot write {captions}: {e.strerror or e}") from None
        result["prompts"] = str(captions)
    return result
