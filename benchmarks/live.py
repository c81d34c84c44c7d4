"""Live vs dataset training throughput on maskgit-digits: the same model, batch and steps trained from a
dumped dataset and with `--live` (rollouts in the same job), pairs per second of each.

    python benchmarks/live.py [--samples 512] [--steps 16] [--train-steps 1000] [--arch tiny-transformer] [--replay 4]

The dataset run trains from a lossless dump of `--samples` samples made first with seed 1 (its dump
time is reported beside it, not counted in its pairs/s); the live run rolls out seed 0 while it
trains, each pair drawn `--replay` times on average, and its pairs/s counts the rollout time. Both
models are then validated on the same held-out trajectories: live samples 0 … 63 of seed 0, which
neither run trained on. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.evaluate import validate
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.live import LiveConfig, MemoryDataset, heldout_rows, live_plan
from migm.trajectories.pairs import PairStream, pair_loader


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=512, help="samples of the dataset run's dump")
    p.add_argument("--steps", type=int, default=16, help="sampling steps N")
    p.add_argument("--train-steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--arch", default="tiny-transformer")
    p.add_argument("--replay", type=float, default=4.0)
    p.add_argument("--buffer", type=int, default=16384)
    p.add_argument("--live-batch", type=int, default=64)
    p.add_argument("--val-samples", type=int, default=64)
    args = p.parse_args()

    spec = BaseSpec("maskgit-digits", device="cpu")
    base = load_base(spec)
    common = dict(arch=args.arch, steps=args.train_steps, batch_size=args.batch, lr=2e-3, save_every=10**9)
    live = LiveConfig(
        steps=args.steps,
        batch_size=args.live_batch,
        buffer=args.buffer,
        replay=args.replay,
        val_samples=args.val_samples,
    )
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        data = tmp / "digits"
        dump_trajectories(DumpConfig(num_samples=args.samples, steps=args.steps, out=str(data), seed=1), base)
        dump_seconds = time.perf_counter() - t0
        runs["dataset"] = train(TrainConfig(data=str(data), out=str(tmp / "zoo-dataset"), **common), spec)
        runs["live"] = train(TrainConfig(data=None, out=str(tmp / "zoo-live"), live=live, **common), spec)

        plan = live_plan(base, live, seed=0)
        held = MemoryDataset(plan, heldout_rows(base, plan, args.live_batch))
        rows = []
        for name, result in runs.items():
            model = load_shortcut(tmp / f"zoo-{name}", base)
            stream = PairStream(held, batch_size=256, shuffle=False)
            m = validate(model, base, pair_loader(stream), args.steps - 1)["overall"]
            t = result["training"]
            row = {
                "source": name,
                "pairs_per_second": t["pairs_per_second"],
                "train_seconds": t["seconds"],
                "heldout_cosine": m["cos"],
                "cache_cosine": m["cache_cos"],
            }
            if name == "dataset":
                row["dump_seconds"] = dump_seconds
                row["samples"] = args.samples
            else:
                a, b = result["dataset"]["live"]["training_samples"]
                row["samples"] = b - a
                row["fresh_pairs_per_second"] = (b - a) * 2 * (args.steps - 1) / t["seconds"]
            rows.append(row)

    print(
        f"live vs dataset training, maskgit-digits N={args.steps}, {args.arch}, {args.train_steps} steps of batch "
        f"{args.batch}, {cpu_name()}, {torch.get_num_threads()} threads"
    )
    print("| source | samples | pairs/s (training) | seconds | + dump seconds | held-out cosine | cache cosine |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['source']} | {r['samples']} | {r['pairs_per_second']:,.0f} | {r['train_seconds']:.1f} | "
            f"{r.get('dump_seconds', 0):.1f} | {r['heldout_cosine']:.4f} | {r['cache_cosine']:.4f} |"
        )
    live_row = rows[1]
    print(
        f"live: each rolled-out pair drawn {args.replay} times on average; "
        f"{live_row['fresh_pairs_per_second']:,.0f} new pairs/s rolled out"
    )
    print(
        json.dumps(
            {"benchmark": "live", "cpu": cpu_name(), "threads": torch.get_num_threads(), **vars(args), "rows": rows}
        )
    )


if __name__ == "__main__":
    main()
