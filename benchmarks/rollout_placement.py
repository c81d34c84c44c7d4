"""Rollout training and placed full steps at high acceleration, on maskgit-digits (issue 15).

    .venv/bin/python benchmarks/rollout_placement.py [--out bench-rollout]   # full size: hours on 2 cores
    .venv/bin/python benchmarks/rollout_placement.py --smoke                 # tiny sizes: checks it runs

Dumps a digits dataset (N = 16, 2,048 samples), trains two tiny-transformers of the same size, steps and
batch: one-step (K = 1) and rollout (K = 3, windows of 3 steps), then runs one `migm bench` over both with
uniform and auto placement beside cache and taylor at low budgets (B/N <= 0.25), 2,000 samples per point:
bootstrap 95% intervals on every quality column, rollout fidelity. Prints what the issue asks, either way:
shortcut vs cache / taylor at N32B6 and N16B4 (token agreement and fidelity, intervals apart or not), K = 3
vs K = 1 at B/N <= 0.25, auto vs uniform; writes OUT/summary.json beside the bench's results.json,
results.md and pareto.png. A dataset or zoo folder already in OUT is reused (a rerun continues).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from migm.shortcut_zoo.bench import BenchConfig, results_table, run_bench
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories

FULL = {
    "samples": 2048,
    "dump_steps": 16,
    "train_steps": 6000,
    "batch": 128,
    "bench_samples": 2000,
    "configs": "N16,N32,N32B6,N32B4,N16B4,N16B3",
    "bootstrap": 1000,
    "repeats": 5,
}
SMOKE = {
    "samples": 48,
    "dump_steps": 8,
    "train_steps": 20,
    "batch": 32,
    "bench_samples": 40,
    "configs": "N8,N16,N16B3,N8B2",
    "bootstrap": 50,
    "repeats": 1,
}


def apart(a: dict, b: dict, key: str) -> bool | None:
    """Whether row a's interval of `key` lies wholly above row b's (None: an interval is missing)."""
    ca, cb = a.get(f"{key}_ci"), b.get(f"{key}_ci")
    return None if not ca or not cb else ca[0] > cb[1]


def cell(row: dict, key: str) -> str:
    ci = row.get(f"{key}_ci")
    return f"{row[key]:.4f} ({ci[0]:.4f}-{ci[1]:.4f})" if ci else f"{row[key]:.4f}"


def compare(rows: list[dict], k1: str, k3: str) -> dict:
    """The three comparisons of the issue, read off the bench rows."""
    by = {(r["config"], r["method"]): r for r in rows}
    low = [r["config"] for r in rows if r["method"] == "cache" and r["B"] / r["N"] <= 0.25]
    out: dict = {"shortcut_vs_peers": [], "k3_vs_k1": [], "auto_vs_uniform": []}
    for config in low:
        for name in (k1, k3):
            sc = by[(config, f"shortcut:{name}")]
            for peer in ("cache", "taylor"):
                p = by[(config, peer)]
                out["shortcut_vs_peers"].append(
                    {
                        "config": config,
                        "shortcut": name,
                        "peer": peer,
                        **{f"{key}_above": apart(sc, p, key) for key in ("token_agreement", "fidelity")},
                        **{key: [sc[key], p[key]] for key in ("token_agreement", "fidelity")},
                    }
                )
        for placement in ("", "@auto"):
            a, b = by.get((config, f"shortcut:{k3}{placement}")), by.get((config, f"shortcut:{k1}{placement}"))
            if a and b:
                out["k3_vs_k1"].append(
                    {
                        "config": config,
                        "placement": placement[1:] or "uniform",
                        **{key: {"k3": cell(a, key), "k1": cell(b, key), "k3_above": apart(a, b, key)}
                           for key in ("token_agreement", "fidelity")},
                    }
                )  # fmt: skip
        for name in (k1, k3):
            u, a = by.get((config, f"shortcut:{name}")), by.get((config, f"shortcut:{name}@auto"))
            if u and a:
                out["auto_vs_uniform"].append(
                    {
                        "config": config,
                        "shortcut": name,
                        "full_steps": {"uniform": u["full_steps"], "auto": a["full_steps"]},
                        **{key: {"auto": cell(a, key), "uniform": cell(u, key)}
                           for key in ("token_agreement", "fidelity", "frechet", "accuracy")},
                    }
                )  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-rollout", help="datasets, zoo folders and bench results go here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a few minutes, checks that it runs")
    p.add_argument("--rollout", type=int, default=3, help="K of the rollout-trained shortcut")
    p.add_argument("--configs", default=None, help="bench configs, comma-separated (default: the size's list)")
    args = p.parse_args()
    size = dict(SMOKE if args.smoke else FULL)
    if args.configs:
        size["configs"] = args.configs
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    base = load_base(BaseSpec("maskgit-digits", device="cpu"))

    data = root / f"digits-n{size['dump_steps']}"
    if not (data / "dataset.json").exists():  # a killed dump continues where it stopped
        dump_trajectories(DumpConfig(num_samples=size["samples"], steps=size["dump_steps"], out=str(data)), base)
    names = {1: "tt-k1", args.rollout: f"tt-k{args.rollout}"}
    for K, name in names.items():
        out = root / name
        if not (out / "config.json").exists():
            resume = (out / "checkpoint").is_dir()
            cfg = TrainConfig(
                data=str(data),
                arch="tiny-transformer",
                out=str(out),
                steps=size["train_steps"],
                batch_size=size["batch"],
                lr=2e-3,
                rollout=K,
                save_every=500,
            )
            train(cfg, BaseSpec(device="cpu"), resume=resume)

    cfg = BenchConfig(
        shortcuts=[str(root / n) for n in names.values()],
        configs=size["configs"].split(","),
        predictors=["shortcut", "cache", "taylor"],
        samples=size["bench_samples"],
        repeats=size["repeats"],
        out=str(root / "bench"),
        placements=["uniform", "auto"],
        bootstrap=size["bootstrap"],
    )
    result = run_bench(cfg, base, progress=lambda what: print(f"  {what}", flush=True))
    print(results_table(result))
    summary = {"size": size, "rollout": args.rollout, **compare(result["rows"], names[1], names[args.rollout])}
    for key in ("shortcut_vs_peers", "k3_vs_k1", "auto_vs_uniform"):
        print(f"\n{key}:")
        for item in summary[key]:
            print(" ", json.dumps(item))
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {root / 'summary.json'} and {', '.join(result['files'])}")


if __name__ == "__main__":
    main()
