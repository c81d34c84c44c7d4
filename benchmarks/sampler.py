"""Latency of vanilla sampling on the embedded base: N in {4, 8, 16, 32} at batch 64.

    python benchmarks/sampler.py [--model maskgit-digits] [--batch 64] [--repeats 5] [--device auto]

Prints a table and a JSON line. Each point: one warm-up batch, then `repeats` timed batches;
median and spread (min-max) of the rollout wall time per image.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base import BaseSpec, load_base, resolve_device
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="maskgit-digits")
    p.add_argument("--steps", default="4,8,16,32")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    device = resolve_device(args.device)
    base = load_base(BaseSpec(args.model, device=device))
    cond = torch.arange(args.batch) % base.num_classes
    rows = []
    for N in (int(x) for x in args.steps.split(",")):
        config = SamplerConfig.for_base(base, N)
        times = []
        for r in range(args.repeats + 1):  # the first run is warm-up
            result = rollout(base, cond, sample_seeds(r, 0, args.batch), config)
            if r:
                times.append(result.total_time / args.batch)
        rows.append(
            {
                "steps": N,
                "ms_per_image": 1000 * statistics.median(times),
                "ms_min": 1000 * min(times),
                "ms_max": 1000 * max(times),
                "ms_per_step_per_image": 1000 * statistics.median(times) / N,
            }
        )

    where = {
        "device": device,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "batch": args.batch,
        "model": args.model,
        "guidance": config.guidance,
    }
    print(f"vanilla sampling, {args.model}, batch {args.batch}, {device}, {where['threads']} threads")
    print("| N | ms / image (median) | min-max | ms / step / image |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['steps']} | {r['ms_per_image']:.3f} | {r['ms_min']:.3f}-{r['ms_max']:.3f} | {r['ms_per_step_per_image']:.3f} |"
        )
    print(json.dumps({"benchmark": "sampler", **where, "rows": rows}))


if __name__ == "__main__":
    main()
