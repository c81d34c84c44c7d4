"""Zoo benchmark: every arch trained on the same digits dataset, compared with the cache predictor.

    python benchmarks/zoo.py [--samples 2048] [--train-steps 5000] [--archs tiny-transformer,mlp,gru]

Dumps `--samples` digits trajectories (N = 16) losslessly and with `--lossy`, trains each arch on
the lossless dump, and tiny-transformer also on the lossy one; every model is validated on the same
held-out lossless trajectories. Prints a table and a JSON line. With `--out`, a rerun reuses the dumps
and the zoo folders already there (a zoo folder only when trained on the same data, arch and schedule).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.evaluate import validate
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.train import TrainConfig, split_rows, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.pairs import PairStream, pair_loader
from migm.trajectories.store.manifest import read_manifest

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")  # train: the base the dataset names, on the CPU


SAME = ("arch", "arch_config", "steps", "batch_size", "lr", "rollout", "seed")


def trained(cfg: TrainConfig) -> dict:
    """Train, or reuse the zoo folder already at cfg.out when it was trained on the same data with the
    same arch and schedule (so a rerun continues, and a model trained elsewhere on the same dump counts)."""
    done = Path(cfg.out) / "config.json"
    if not done.exists():
        return train(cfg, CPU)
    config = json.loads(done.read_text())
    before = config["training"]
    if any(before.get(k) != asdict(cfg)[k] for k in SAME) or Path(before["data"]).resolve() != Path(cfg.data).resolve():
        raise SystemExit(f"error: {cfg.out} holds a model trained otherwise; remove it or choose another --out")
    print(f"reusing {cfg.out} (trained on {before['data']})", flush=True)
    return config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--steps", type=int, default=16, help="sampling steps N of the dump")
    p.add_argument("--train-steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--archs",
        default="tiny-transformer,tiny-transformer:bottleneck=1,mlp,gru",
        help="comma-separated arch[:key=value;key=value] specs",
    )
    p.add_argument("--lossy", default="quant:bits=6", help="codec of the lossy dump ('' to skip)")
    p.add_argument("--out", default=None, help="keep datasets and zoo folders here (default: a temp folder)")
    args = p.parse_args()

    tmp = tempfile.TemporaryDirectory()
    root = Path(args.out or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    dumps = {"lossless": root / "digits-lossless"}
    if args.lossy:
        dumps[args.lossy] = root / f"digits-{args.lossy.replace(':', '-').replace('=', '')}"
    for codec, path in dumps.items():
        dump_trajectories(DumpConfig(num_samples=args.samples, steps=args.steps, out=str(path), codec=codec), DIGITS)

    base = load_base(BaseSpec("maskgit-digits"))
    manifest = read_manifest(dumps["lossless"])
    _, val_rows = split_rows(manifest, 0.05, 0)

    def heldout(zoo: Path) -> dict:
        """Validation on the lossless held-out rows, whatever the model was trained on."""
        model = load_shortcut(zoo, base)
        batches = pair_loader(PairStream(dumps["lossless"], batch_size=256, rows=val_rows, shuffle=False))
        return validate(model, base, batches, args.steps - 1)["overall"]

    runs = [(spec, "lossless") for spec in args.archs.split(",")]
    if args.lossy:
        runs.append(("tiny-transformer", args.lossy))
    rows = []
    for spec, codec in runs:
        arch, _, options = spec.partition(":")  # e.g. tiny-transformer:bottleneck=1
        arch_config = {k: int(v) for k, v in (kv.split("=") for kv in options.split(";") if kv)}
        out = root / f"zoo-{spec.replace(':', '-').replace('=', '').replace(';', '-')}-{codec.split(':')[0]}"
        cfg = TrainConfig(
            data=str(dumps[codec]),
            arch=arch,
            out=str(out),
            steps=args.train_steps,
            batch_size=args.batch,
            lr=args.lr,
            save_every=10**9,
            arch_config=arch_config,
        )
        result = trained(cfg)
        minutes = result["training"]["seconds"] / 60
        m = heldout(out)
        rows.append(
            {
                "arch": spec,
                "data": codec,
                "parameters": result["cost"]["parameters"],
                "relative_cost": result["cost"]["relative_cost"],
                "val_cosine": m["cos"],
                "cache_cosine": m["cache_cos"],
                "mse_ratio_to_cache": m["mse_ratio_to_cache"],
                "token_agreement": m["agree"],
                "cache_token_agreement": m["cache_agree"],
                "train_pairs_per_s": result["training"]["pairs_per_second"],
                "minutes": minutes,
            }
        )

    print(
        f"zoo, maskgit-digits, {args.samples} samples, N={args.steps}, {args.train_steps} steps of batch {args.batch}, "
        f"lr {args.lr}, {cpu_name()}, {torch.get_num_threads()} threads; validated on held-out lossless trajectories"
    )
    print(
        "| arch | trained on | params | cost vs base forward | val cosine | cache cosine | MSE / cache | "
        "token agreement | cache agreement | train pairs/s | minutes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arch']} | {r['data']} | {r['parameters']:,} | {r['relative_cost']:.3f} | {r['val_cosine']:.4f} | "
            f"{r['cache_cosine']:.4f} | {r['mse_ratio_to_cache']:.3f} | {r['token_agreement']:.4f} | "
            f"{r['cache_token_agreement']:.4f} | {r['train_pairs_per_s']:,.0f} | {r['minutes']:.1f} |"
        )
    if args.lossy:
        a = next(r for r in rows if r["arch"] == "tiny-transformer" and r["data"] == "lossless")
        b = rows[-1]
        print(
            f"tiny-transformer held-out cosine, lossless vs {args.lossy} training data: "
            f"{a['val_cosine']:.4f} vs {b['val_cosine']:.4f} (difference {abs(a['val_cosine'] - b['val_cosine']):.4f})"
        )
    print(
        json.dumps(
            {
                "benchmark": "zoo",
                "samples": args.samples,
                "steps": args.steps,
                "train_steps": args.train_steps,
                "batch": args.batch,
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
