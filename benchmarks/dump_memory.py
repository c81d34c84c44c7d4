"""Peak host memory of dumping 512-px MaskGIT trajectories (1025 x 768 float16 per step per branch).

    python benchmarks/dump_memory.py [--samples 4,16] [--batch 2] [--steps 4] [--depth 1]

Writes a random-weight checkpoint in the published layout at 512-px dims (32x32 tokens, hidden 768;
`--depth` layers so that it runs on a CPU), then runs `migm dump-trajectories --model maskgit` once per
dataset size in a fresh process and reads that process's peak RSS (VmHWM). Bounded memory means the
peak follows --batch-size, not --num-samples. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base.maskgit import MaskGITConfig, MaskTransformer

CHILD = """
import sys
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.base import BaseSpec, load_base

out, ckpt, n, batch, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
base = load_base(BaseSpec("maskgit", checkpoint=ckpt, device="cpu"))
m = dump_trajectories(DumpConfig(num_samples=n, steps=steps, out=out, shard_size=n, batch_size=batch), base)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(peak, sum(s.bytes for s in m.shards))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", default="4,16")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--depth", type=int, default=1)
    args = p.parse_args()

    cfg = MaskGITConfig(
        grid=32, codebook_size=1024, num_classes=1000, hidden_dim=768, depth=args.depth, heads=16, mlp_dim=3072
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "maskgit-512.pth"
        torch.manual_seed(0)
        torch.save({"iter": 0, "model_state_dict": MaskTransformer(cfg).state_dict()}, ckpt)
        for n in (int(x) for x in args.samples.split(",")):
            out = Path(tmp) / f"ds-{n}"
            r = subprocess.run(
                [sys.executable, "-c", CHILD, str(out), str(ckpt), str(n), str(args.batch), str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            peak_kib, size = (int(x) for x in r.stdout.split()[-2:])
            raw = n * 2 * args.steps * (cfg.L + 1) * cfg.hidden_dim * 2
            rows.append(
                {
                    "samples": n,
                    "raw_feature_mb": raw / 2**20,
                    "dataset_mb": size / 2**20,
                    "peak_rss_mb": peak_kib / 1024,
                }
            )

    where = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch": args.batch,
        "steps": args.steps,
        "depth": args.depth,
    }
    print(
        f"dump memory, 512-px MaskGIT dims (32x32 tokens, D=768, depth {args.depth}, random weights), N={args.steps}, "
        f"batch {args.batch}, 2 CFG branches, lossless zarr, {where['cpu']}"
    )
    print("| samples | raw features (MiB) | dataset on disk (MiB) | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['samples']} | {r['raw_feature_mb']:.0f} | {r['dataset_mb']:.0f} | {r['peak_rss_mb']:.0f} |")
    print(json.dumps({"benchmark": "dump_memory", **where, "rows": rows}))


if __name__ == "__main__":
    main()
