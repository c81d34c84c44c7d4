"""Temporal codec benchmark: bytes per trajectory and mean cosine, delta vs quant, per backend.

    python benchmarks/temporal.py [--samples 512] [--steps 16] [--samples-512 4] [--steps-512 16] [--codecs SPEC ...]

Two bases, each dumped once losslessly and rewritten with every codec through the project's shard
writers (as `storage.py` does), then read back with `open_dataset`:
- `maskgit-digits`, the shipped trained base: sizes and fidelity (mean / 1st-percentile cosine per
  token against the lossless features, max abs error);
- the 512-px MaskGIT dims (32x32 tokens, D = 768) with random weights and `--depth` layers (default 1)
  so that it runs on a CPU: sizes at those dims only. Random weights are not a trained model: its
  step-to-step smoothness (printed) differs, so its cosines say little about a real checkpoint.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from storage import rewrite  # benchmarks/storage.py: write rows with another backend / codec

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.maskgit import MaskGITConfig, MaskTransformer
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.store.dataset import open_dataset

CODECS = [
    "lossless",
    "quant:bits=8",
    "quant:bits=6",
    "quant:bits=5",
    "delta:bits=8,keyframe=16",
    "delta:bits=6,keyframe=16",
    "delta:bits=5.8,keyframe=16",
    "delta:bits=6,keyframe=4",
    "delta:bits=5,keyframe=16",
]


def smoothness(feats: np.ndarray) -> float:
    """Mean cos(f_s, f_{s+1}) over rows, steps and positions."""
    a, b = feats[:, :-1].astype(np.float32), feats[:, 1:].astype(np.float32)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return float(cos.mean())


def measure(name: str, base, samples: int, steps: int, batch: int, tmp: Path, codecs: list[str]) -> list[dict]:
    src = tmp / f"{name}-source"
    t0 = time.perf_counter()
    manifest = dump_trajectories(
        DumpConfig(num_samples=samples, steps=steps, out=str(src), shard_size=128, batch_size=batch), base
    )
    dump_seconds = time.perf_counter() - t0
    rows = open_dataset(src).rows(0, manifest.rows)
    ref = rows["features"].astype(np.float32)
    raw = rows["features"].nbytes
    smooth = smoothness(rows["features"])
    out = []
    for fmt in ("zarr", "parquet"):
        for spec in codecs:
            folder = tmp / f"{name}-{fmt}-{spec.replace(':', '-').replace('=', '').replace(',', '-')}"
            seconds, m = rewrite(rows, manifest, folder, fmt, spec)
            got = open_dataset(folder).rows(0, m.rows)["features"].astype(np.float32)
            cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1) + 1e-12)
            out.append(
                {
                    "base": name,
                    "backend": fmt,
                    "codec": spec,
                    "bytes_per_trajectory": m.bytes / m.rows,
                    "ratio_to_raw_f16": m.bytes / raw,
                    "mean_cosine": float(cos.mean()),
                    "p01_cosine": float(np.percentile(cos, 1)),
                    "max_abs_error": float(np.abs(got - ref).max()),
                    "write_MBps": raw / 1e6 / seconds,
                    "smoothness": smooth,
                    "dump_seconds": dump_seconds,
                    "dims": {"N": steps, "T": ref.shape[2], "D": ref.shape[3]},
                }
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=512, help="maskgit-digits samples (x 2 CFG branches)")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--samples-512", type=int, default=4, help="512-px samples (x 2 CFG branches); 0 skips")
    p.add_argument("--steps-512", type=int, default=16)
    p.add_argument("--depth", type=int, default=1, help="layers of the random 512-px model")
    p.add_argument("--codecs", nargs="+", default=CODECS, help="codec specs, space-separated")
    args = p.parse_args()
    codecs = args.codecs

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits = load_base(BaseSpec("maskgit-digits", device="cpu"))
        results += measure("maskgit-digits", digits, args.samples, args.steps, 64, tmp, codecs)
        if args.samples_512:
            cfg = MaskGITConfig(
                grid=32, codebook_size=1024, num_classes=1000, hidden_dim=768, depth=args.depth, heads=16, mlp_dim=3072
            )
            ckpt = tmp / "maskgit-512.pth"
            torch.manual_seed(0)
            torch.save({"iter": 0, "model_state_dict": MaskTransformer(cfg).state_dict()}, ckpt)
            base = load_base(BaseSpec("maskgit", checkpoint=str(ckpt), device="cpu"))
            results += measure(
                f"maskgit-512 depth-{args.depth} random", base, args.samples_512, args.steps_512, 2, tmp, codecs
            )

    print(f"temporal codecs, {cpu_name()}, {torch.get_num_threads()} threads")
    for name in dict.fromkeys(r["base"] for r in results):
        first = next(r for r in results if r["base"] == name)
        n = args.samples if name == "maskgit-digits" else args.samples_512
        print(
            f"\n{name}: {n} samples x 2 branches, N = {first['dims']['N']}, T = {first['dims']['T']}, "
            f"D = {first['dims']['D']}; mean cos(f_s, f_s+1) = {first['smoothness']:.4f}"
        )
        print(
            "| backend | codec | bytes / trajectory | ratio to raw f16 | mean cosine | 1% cosine | max abs err | write MB/s |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in (r for r in results if r["base"] == name):
            print(
                f"| {r['backend']} | {r['codec']} | {r['bytes_per_trajectory']:,.0f} | {r['ratio_to_raw_f16']:.3f} | "
                f"{r['mean_cosine']:.6f} | {r['p01_cosine']:.5f} | {r['max_abs_error']:.4f} | {r['write_MBps']:.1f} |"
            )
    print(
        json.dumps(
            {
                "benchmark": "temporal",
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "samples": args.samples,
                "samples_512": args.samples_512,
                "depth_512": args.depth,
                "rows": results,
            }
        )
    )


if __name__ == "__main__":
    main()
