"""Storage benchmark: bytes, write speed, read speed and fidelity per codec and backend.

    python benchmarks/storage.py [--samples 512] [--steps 16] [--rss]

Dumps `--samples` digits trajectories once (both CFG branches), then writes the same rows with every
(backend, codec) and reads them back as training pairs with 2 DataLoader workers. In the same run it
times a 1-block tiny-transformer training step on those pairs, to compare the read rate with the
rate training consumes pairs. `--rss` also measures the peak RSS of dumps of 512 and 2048 samples.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import WRITERS, DumpConfig, dump_trajectories, finish, record_checksum
from migm.trajectories.pairs import PairStream, pair_loader
from migm.trajectories.store.codecs import parse_codec
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.manifest import SUBDIR, Manifest
from migm.trajectories.store.schema import sha256_path

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))

CODECS = ["lossless", "quant:bits=8", "quant:bits=6", "quant:bits=5"]


def rewrite(rows: dict, manifest: Manifest, out: Path, fmt: str, codec_spec: str) -> tuple[float, Manifest]:
    """Write `rows` as a dataset with another backend / codec; returns seconds spent writing."""
    codec = parse_codec(codec_spec)
    plan = replace(manifest.plan(), format=fmt, codec=codec)
    per_shard = plan.shard_size * plan.branches
    (out / SUBDIR[fmt]).mkdir(parents=True)
    t0 = time.perf_counter()
    for k in range(plan.num_shards):
        lo, hi = k * per_shard, min((k + 1) * per_shard, len(rows["tokens"]))
        writer = WRITERS[fmt](out / plan.shard_name(k), hi - lo, plan.dims, codec)
        for start in range(lo, hi, 128):  # batches of 64 samples, as a dump writes them
            stop = min(start + 128, hi)
            fields = {k2: v[start:stop] for k2, v in rows.items() if k2 != "features"}
            writer.write(start - lo, {**codec.encode(rows["features"][start:stop]), **fields})
        writer.commit()
    seconds = time.perf_counter() - t0
    for k in range(plan.num_shards):
        record_checksum(out / plan.shard_name(k), sha256_path(out / plan.shard_name(k)))
    return seconds, finish(out, plan, processes=1)


def read_rate(root: Path, workers: int, batch: int) -> tuple[float, int]:
    """Steady-state pairs/s of one epoch: the clock starts at the first batch (after worker start-up)."""
    stream = PairStream(root, batch_size=batch, seed=0)
    t0, n = None, 0
    for b in pair_loader(stream, workers=workers):
        if t0 is None:
            t0 = time.perf_counter()
            continue
        n += len(b["step"])
    return n / (time.perf_counter() - t0), n


def train_rate(root: Path, batch: int, steps: int = 60) -> float:
    """Pairs per second a 1-block tiny-transformer training step consumes (data already in memory):
    batch size over the median step time, after 3 warm-up steps."""
    from migm.shortcut_zoo.archs import ARCHS

    base = load_base(BaseSpec("maskgit-digits"))
    cls, config = ARCHS["tiny-transformer"]
    model = cls(config(dim=base.D, heads=4, blocks=1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = [b for _, b in zip(range(steps + 3), pair_loader(PairStream(root, batch_size=batch, seed=1)))]
    times = []
    for b in batches:
        t0 = time.perf_counter()
        new_emb = base.embed(b["new_ids"], b["new_pos"])
        pred = model(b["feature"], new_emb, b["new_pos"], b["new_valid"], b["mask_ratio"])
        keep = torch.cat([b["still_masked"], torch.ones_like(b["still_masked"][:, :1])], 1)  # + condition position
        loss = ((pred - b["target"]) ** 2).mean(-1)[keep].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times[3:])


def dump_rss(samples: int, steps: int) -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report our own peak
    code = (
        "import tempfile\n"
        "from migm.trajectories.dump import DumpConfig, dump_trajectories\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        f"    dump_trajectories(DumpConfig(num_samples={samples}, steps={steps}, out=d + '/ds'), load_base(BaseSpec('maskgit-digits', device='cpu')))\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) / 1024  # MiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=64, help="pairs per training / loading batch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rss", action="store_true", help="also measure dump peak RSS at 512 and 2048 samples")
    args = p.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        src = tmp / "source"
        manifest = dump_trajectories(
            DumpConfig(num_samples=args.samples, steps=args.steps, out=str(src), shard_size=128), DIGITS
        )
        dump_seconds = time.perf_counter() - t0
        rows = open_dataset(src).rows(0, manifest.rows)
        raw = rows["features"].nbytes
        ref = rows["features"].astype(np.float32)
        consume = train_rate(src, args.batch)
        for fmt in ("zarr", "parquet"):
            for spec in CODECS:
                out = tmp / f"{fmt}-{spec.replace(':', '-').replace('=', '')}"
                seconds, m = rewrite(rows, manifest, out, fmt, spec)
                size = m.bytes
                got = open_dataset(out).rows(0, m.rows)["features"].astype(np.float32)
                cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-12)
                rate, n = read_rate(out, args.workers, args.batch)
                results.append(
                    {
                        "backend": fmt,
                        "codec": spec,
                        "bytes_per_trajectory": size / m.rows,
                        "ratio_to_raw_f16": size / raw,
                        "write_MBps": raw / 1e6 / seconds,
                        "read_pairs_per_s": rate,
                        "read_over_train": rate / consume,
                        "max_abs_error": float(np.abs(got - ref).max()),
                        "mean_cosine": float(cos.mean()),
                    }
                )

    rss = {}
    if args.rss:
        rss = {n: dump_rss(n, args.steps) for n in (512, 2048)}

    print(
        f"storage, maskgit-digits, {args.samples} samples x 2 branches, N={args.steps}, "
        f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    print(f"dump (rollout + lossless zarr write): {dump_seconds:.1f} s, {args.samples / dump_seconds:.1f} samples/s")
    print(f"1-block tiny-transformer training step consumes {consume:.0f} pairs/s (batch {args.batch})")
    print(
        "| backend | codec | bytes / trajectory | ratio to raw f16 | write MB/s | read pairs/s "
        f"({args.workers} workers) | read / train | max abs err | mean cosine |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['backend']} | {r['codec']} | {r['bytes_per_trajectory']:,.0f} | {r['ratio_to_raw_f16']:.3f} | "
            f"{r['write_MBps']:.1f} | {r['read_pairs_per_s']:,.0f} | {r['read_over_train']:.1f}x | "
            f"{r['max_abs_error']:.4f} | {r['mean_cosine']:.6f} |"
        )
    if rss:
        print("peak RSS of a dump: " + ", ".join(f"{n} samples {v:.0f} MiB" for n, v in rss.items()))
    print(
        json.dumps(
            {
                "benchmark": "storage",
                "samples": args.samples,
                "steps": args.steps,
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "dump_seconds": dump_seconds,
                "train_pairs_per_s": consume,
                "rows": results,
                "dump_peak_rss_mib": rss,
            }
        )
    )


if __name__ == "__main__":
    main()
