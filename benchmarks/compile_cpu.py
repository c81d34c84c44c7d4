"""Eager vs `--compile` on the CPU: maskgit-digits and dimoo-digits, vanilla N16 and shortcut N16B6, ms per
image in one run, and whether the compiled run drew the eager run's tokens.

    python benchmarks/compile_cpu.py [--batch 16] [--repeats 5] [--threads 1] [--out benchmarks/results/compile-cpu.json]

The shortcut is the base's default arch (tiny-transformer / dimoo-transformer, published sizes) with
random weights: its cost does not depend on its weights. Each point: one warm-up rollout (compiled: the
compile, reported in seconds), then `--repeats` timed rollouts, median per image. The machine's load
average is recorded at the start and the end: other jobs may share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from migm.shortcut_zoo.archs import build_for_base
from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.predictors import ShortcutPredictor
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.compile import compile_shortcut
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds

BASES = {"maskgit-digits": "tiny-transformer", "dimoo-digits": "dimoo-transformer"}
CONFIGS = [(16, None), (16, 6)]
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def shortcut_for(base, arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_for_base(arch, base)
    with torch.no_grad():  # the zero init makes it the identity; random outputs exercise the same kernels
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def conditions(base, batch: int) -> torch.Tensor:
    if base.text:
        return base.encode_prompts([f"the digit {WORDS[i % 10]}" for i in range(batch)])
    return torch.arange(batch) % base.num_classes


def measure(base, model, batch: int, repeats: int) -> dict:
    """Per config: warm-up seconds, median / min / max ms per image, and the final tokens."""
    cond, seeds = conditions(base, batch), sample_seeds(0, 0, batch)
    out = {}
    for N, B in CONFIGS:
        config = SamplerConfig.for_base(base, N, B)
        predictor = ShortcutPredictor(model) if B else None
        t = time.perf_counter()
        tokens = rollout(base, cond, seeds, config, predictor=predictor).tokens
        warmup = time.perf_counter() - t
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            rollout(base, cond, seeds, config, predictor=predictor)
            times.append((time.perf_counter() - t) / batch)
        out[f"N{N}" + (f"B{B}" if B else "")] = {
            "warmup_s": warmup,
            "ms_per_image": 1000 * statistics.median(times),
            "min_max_ms_per_image": [1000 * min(times), 1000 * max(times)],
            "tokens": tokens,
        }
    return out


def run(name: str, batch: int, repeats: int) -> dict:
    eager_base = load_base(BaseSpec(name, device="cpu"))
    eager = measure(eager_base, shortcut_for(eager_base, BASES[name]), batch, repeats)
    torch._dynamo.reset()
    base = load_base(BaseSpec(name, device="cpu", compile=True))
    compiled = measure(base, compile_shortcut(shortcut_for(base, BASES[name]), "cpu"), batch, repeats)
    rows = []
    for config in eager:
        e, c = eager[config], compiled[config]
        rows.append(
            {
                "base": name,
                "config": config,
                "eager_ms_per_image": e["ms_per_image"],
                "eager_min_max": e["min_max_ms_per_image"],
                "compiled_ms_per_image": c["ms_per_image"],
                "compiled_min_max": c["min_max_ms_per_image"],
                "compile_warmup_s": c["warmup_s"],
                "speedup": e["ms_per_image"] / c["ms_per_image"],
                "same_tokens": bool(torch.equal(e["tokens"], c["tokens"])),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on shared cores)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rows = [row for name in BASES for row in run(name, args.batch, args.repeats)]
    where = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "repeats": args.repeats,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"eager vs --compile, cpu ({where['cpu']}, {where['cores']} cores, {where['threads']} thread), torch "
        f"{where['torch']}, batch {args.batch}, fp32; load average {where['load_average_start'][0]} at the start, "
        f"{where['load_average_end'][0]} at the end"
    )
    print("| base | config | eager ms / image | compiled ms / image | eager / compiled | compile s | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['base']} | {r['config']} | {r['eager_ms_per_image']:.2f} | {r['compiled_ms_per_image']:.2f} | "
            f"{r['speedup']:.2f}x | {r['compile_warmup_s']:.0f} | {'yes' if r['same_tokens'] else 'NO'} |"
        )
    result = {"benchmark": "compile_cpu", **where, "rows": rows}
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
