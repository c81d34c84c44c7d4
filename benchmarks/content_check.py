"""What the shard content check (issue 30) costs next to the checksum it follows, per codec.

Dumps a maskgit-digits dataset per codec into a temporary folder, then times, per shard, the sha256
(`TrajectoryDataset.checksum_problem`) and the content check (`store.content.shard_content_problem`)
that `train` and `verify` now run once per shard. Prints a table and JSON.

    python benchmarks/content_check.py [--samples 256] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.store.content import shard_content_problem
from migm.trajectories.store.dataset import open_dataset


def measure(root: Path) -> dict:
    ds = open_dataset(root)
    checksum = content = 0.0
    for k, shard in enumerate(ds.shards):
        t = time.perf_counter()
        assert ds.checksum_problem(k) is None
        checksum += time.perf_counter() - t
        reader = ds.open_shard(k)
        t = time.perf_counter()
        assert shard_content_problem(reader, ds.manifest, shard.rows) is None
        content += time.perf_counter() - t
    return {"rows": len(ds), "checksum_s": checksum, "content_s": content, "ratio": content / checksum}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    base = load_base(BaseSpec("maskgit-digits", device="cpu"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, codec in (("zarr", "lossless"), ("parquet", "lossless"), ("zarr", "quant"), ("zarr", "delta")):
            out = Path(tmp) / f"{fmt}-{codec}"
            cfg = DumpConfig(
                num_samples=args.samples, steps=args.steps, shard_size=64, format=fmt, codec=codec, out=str(out)
            )
            dump_trajectories(cfg, base)
            results[f"{fmt} {codec}"] = measure(out)
    print(f"{'dataset':<18} {'rows':>6} {'sha256 s':>9} {'content s':>10} {'content/sha256':>15}")
    for name, r in results.items():
        print(f"{name:<18} {r['rows']:>6} {r['checksum_s']:>9.3f} {r['content_s']:>10.3f} {r['ratio']:>15.2f}")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
