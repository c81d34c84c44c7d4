"""Pairs/s read from a dataset on a local S3 server vs a local folder, beside training; peak memory
and cache disk while training from a store on a dataset 4x larger than --cache-size.

    python benchmarks/object_store.py [--samples 256] [--steps 16] [--shard-size 16] [--train-steps 60]

Dumps `maskgit-digits` trajectories to a local folder, starts moto's S3 server in its own process on
localhost, uploads the folder to a bucket (the same bytes a dump to s3:// writes; the manifest says
so), then measures:
- the pair loader (`PairStream` + DataLoader, one epoch, batches of 128) from the folder and from
  the store, at 0 and 2 workers, straight from the store (`--cache-size 0`) and through the cache;
- `migm train` from the folder and from the store with --cache-size a quarter of the dataset, each
  in a fresh process that reports its peak RSS (VmHWM) and training pairs/s; the cache folder's
  largest size is sampled while it runs.
Prints a table and writes benchmarks/results/object-store.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.pairs import PairStream, pair_loader
from migm.trajectories.store.cache import CacheConfig
from migm.trajectories.store.dataset import open_dataset

RESULTS = Path(__file__).resolve().parent / "results" / "object-store.json"
CHILD = """
import json, sys
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.store.cache import cache_config
data, out, steps, endpoint, cache_dir, cache_size = sys.argv[1:7]
opts = {"endpoint_url": endpoint} if data.startswith("s3://") else None
cfg = TrainConfig(data=data, out=out, steps=int(steps), batch_size=128, warmup=5, save_every=10**9,
                  storage_options=opts, cache=cache_config(cache_dir, cache_size))
result = train(cfg)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"pairs_per_second": result["training"]["pairs_per_second"], "peak_rss_kb": peak}))
"""


def start_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def loader_rate(url: str, opts: dict | None, cache: CacheConfig | None, workers: int) -> dict:
    t0 = time.perf_counter()
    stream = PairStream(open_dataset(url, storage_options=opts, cache=cache), batch_size=128, seed=0)
    opened = time.perf_counter() - t0
    pairs, t0 = 0, time.perf_counter()
    for batch in pair_loader(stream, workers):
        pairs += len(batch["step"])
    seconds = time.perf_counter() - t0
    return {"open_s": opened, "pairs": pairs, "pairs_per_second": pairs / seconds}


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def train_run(data: str, out: Path, steps: int, endpoint: str, cache_dir: Path, cache_size: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, data, str(out), str(steps), endpoint, str(cache_dir), cache_size]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak_disk = 0

    def watch() -> None:
        nonlocal peak_disk
        while proc.poll() is None:
            try:
                peak_disk = max(peak_disk, dir_size(cache_dir))
            except OSError:  # a shard evicted while it was being summed
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout, stderr = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"train failed: {stderr[-2000:]}")
    return {**json.loads(stdout.strip().splitlines()[-1]), "peak_cache_bytes": peak_disk}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=60)
    args = p.parse_args()
    os.environ.update(
        {k: os.environ.get(k, v) for k, v in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"))}
    )
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    work = Path(tempfile.mkdtemp(prefix="migm-object-store-"))
    local = work / "ds"
    base = load_base(BaseSpec("maskgit-digits", device="cpu"))
    cfg = DumpConfig(num_samples=args.samples, steps=args.steps, shard_size=args.shard_size, out=str(local), seed=0)
    manifest = dump_trajectories(cfg, base)
    server, endpoint = start_server()
    try:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=endpoint)
        fs.mkdir("bench")
        fs.put(str(local) + "/", "bench/ds/", recursive=True)
        url, opts = "s3://bench/ds", {"endpoint_url": endpoint}
        assert open_dataset(url, storage_options=opts).manifest.to_dict() == manifest.to_dict()
        t0 = time.perf_counter()  # the server's own rate: every object of the dataset, fetched once
        fs.get("bench/ds/", str(work / "raw") + "/", recursive=True)
        raw_mb_s = manifest.bytes / 1e6 / (time.perf_counter() - t0)
        cache = CacheConfig(dir=str(work / "cache"), size=1 << 30)
        rows = []
        for source, u, o, c in (
            ("local folder", str(local), None, None),
            ("s3, no cache", url, opts, None),
            ("s3, cache", url, opts, cache),
        ):
            for workers in (0, 2):
                rows.append({"source": source, "workers": workers, **loader_rate(u, o, c, workers)})
        quarter = str(manifest.bytes // 4)
        train_local = train_run(str(local), work / "zoo-l", args.train_steps, endpoint, work / "c-l", "0")
        train_s3 = train_run(url, work / "zoo-s", args.train_steps, endpoint, work / "c-s", quarter)
    finally:
        server.kill()
        server.wait()
    result = {
        "machine": f"{os.uname().nodename}, {cpu_name()}, {os.cpu_count()} cores (shared with other jobs)",
        "dataset": {
            "samples": args.samples,
            "rows": manifest.rows,
            "shards": len(manifest.shards),
            "bytes": manifest.bytes,
        },
        "server_get_mb_per_second": raw_mb_s,
        "loader": rows,
        "train": {
            "local folder": train_local,
            "s3, cache a quarter of the dataset": {**train_s3, "cache_size": int(quarter)},
        },
    }
    print(f"dataset: {manifest.rows} rows, {len(manifest.shards)} shards, {manifest.bytes / 1e6:.1f} MB")
    print(f"local S3 server, whole dataset fetched once: {raw_mb_s:.1f} MB/s")
    print(f"{'source':<16} {'workers':>7} {'open s':>7} {'pairs/s':>9}")
    for r in rows:
        print(f"{r['source']:<16} {r['workers']:>7} {r['open_s']:>7.2f} {r['pairs_per_second']:>9.0f}")
    print(f"{'train from':<36} {'pairs/s':>8} {'peak RSS MB':>12} {'peak cache MB':>14}")
    for name, r in result["train"].items():
        print(
            f"{name:<36} {r['pairs_per_second']:>8.0f} {r['peak_rss_kb'] / 1024:>12.0f} {r['peak_cache_bytes'] / 1e6:>14.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
