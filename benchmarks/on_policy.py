"""Training on the states the shortcut will meet, at B/N <= 0.125 on maskgit-digits (issue 31).

    .venv/bin/python benchmarks/on_policy.py [--out bench-on-policy] [--samples 2000] [--train-steps 6000]
    .venv/bin/python benchmarks/on_policy.py --smoke      # tiny sizes: checks that it runs

Trains tiny-transformers of the same size, steps, batch and seed from live rollouts at N = 16 (or, with
`--data DIR`, a dumped dataset for the teacher-forced variants): teacher-forced K = 1, on-policy
(`--on-policy 0.5 --on-policy-budget 2,3,4` from a quarter of the steps on), budget-aware
(`--chain-budget 2`, the MSE and KL at every chained step) and both together (`--variants` adds
`--rollout 3`, two more on-policy settings and deeper shortcuts), then runs one `migm bench` at N32B4, N16B2, N32B6, N16B3
beside vanilla N16 / N32, cache and taylor: bootstrap 95% intervals, rollout fidelity.
`--model dimoo-digits` trains the DiMOO shortcut and benches N8B2, N16B4 against ML-Cache at the same
refresh steps (token agreement and fidelity intervals in `ml_cache_checks`).
Prints and writes (OUT/summary.json) the issue's checks at N32B4 and N16B2: Fréchet inside vanilla's
seed-to-seed interval (vanilla ± |seed 0 − seed 1|), accuracy within 0.01, cache / taylor outside,
the best variant's fidelity interval above K = 1's. Zoo folders already in OUT are reused.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from migm.shortcut_zoo.bench import BenchConfig, results_table, run_bench
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.live import LiveConfig
from migm.trajectories.on_policy import OnPolicyConfig

FULL = {"train_steps": 6000, "batch": 128, "samples": 2000, "live_batch": 64, "bootstrap": 1000}
SMOKE = {"train_steps": 24, "batch": 16, "samples": 24, "live_batch": 4, "bootstrap": 50}
DEFAULT_VARIANTS = ["tf-k1", "on-policy", "chain-b2", "on-policy+chain-b2"]  # the issue-size run's
TARGETS = {"N32B4": "N32", "N16B2": "N16"}  # the B/N = 0.125 points and their vanilla rows
ML_CACHE = "ml-cache:warmup=0,period=4"  # refresh steps 0, 4, 8, …: the shortcut's uniform placement at B/N = 0.25
# per base: the shortcut trained, the bench's configs and peers (dimoo-digits: the bottleneck-1 one-block
# shortcut of docs/embedded-bases.md, against ML-Cache at the same B/N = 0.25 placement)
MODELS = {
    "maskgit-digits": {
        "train": {"arch": "tiny-transformer", "lr": 2e-3},
        "configs": "N16,N32,N32B4,N16B2,N32B6,N16B3",
        "predictors": ["shortcut", "cache", "taylor"],
    },
    "dimoo-digits": {
        "train": {"arch": "dimoo-transformer", "arch_config": {"bottleneck": 1}, "lr": 5e-3},
        "configs": "N8,N16,N8B2,N16B4",
        "predictors": ["shortcut", "cache", "taylor", ML_CACHE],
    },
}


def variants(steps: int, batch: int) -> dict[str, dict]:
    """TrainConfig options of each variant (beside the shared ones). The budget-aware chains of N16B2
    are 7 steps long: a quarter of the windows per batch keeps its predicted pairs per step (7/4 of
    K = 1's) below K = 3's."""

    def on_policy(**options) -> dict:  # the on-policy settings: shares of each batch from budgets 2, 3, 4
        return {"on_policy": OnPolicyConfig(**{"fraction": 0.5, "budgets": [2, 3, 4], "start": steps // 4, **options})}

    chains = {"chain_budget": 2, "loss": "mse+kl", "batch_size": max(1, batch // 4)}
    # every on-policy rollout at the hardest target budget, most of each batch, KL on
    b2 = {**on_policy(fraction=0.75, budgets=[2], start=steps // 8), "loss": "mse+kl"}
    # deeper shortcuts (maskgit-digits' tiny-transformer): 3 blocks of width 16, 0.18 of a base forward
    # (cheaper than the default 1 block of width 32, 0.23); 2 blocks of width 32, 0.41
    deep3, deep2 = {"arch_config": {"blocks": 3, "bottleneck": 4}}, {"arch_config": {"blocks": 2, "bottleneck": 2}}
    return {
        "tf-k1": {},
        "tf-k3": {"rollout": 3},
        "on-policy": on_policy(),
        "chain-b2": chains,
        "on-policy-b2": b2,
        "on-policy-kl1": {**on_policy(), "loss": "mse+kl", "kl_weight": 1.0},  # the KL weighted as the MSE
        "on-policy+chain-b2": {**on_policy(), **chains},
        "on-policy-deep3": {**on_policy(), **deep3},
        "on-policy-deep2": {**on_policy(), **deep2},
        "on-policy-b2-deep2": {**b2, **deep2},
    }


def apart(a: dict, b: dict, key: str) -> bool | None:
    """Whether row a's interval of `key` lies wholly above row b's (None: an interval is missing)."""
    ca, cb = a.get(f"{key}_ci"), b.get(f"{key}_ci")
    return None if not ca or not cb else ca[0] > cb[1]


def checks(rows: list[dict], names: list[str]) -> dict:
    """The issue's must-hold items at each target config, read off the bench rows; `miss` is how far
    outside (Fréchet, accuracy) a target was (0: held)."""
    by = {(r["config"], r["method"]): r for r in rows}
    out = {}
    for config, vanilla_config in TARGETS.items():
        v = by.get((vanilla_config, "vanilla"))
        if v is None or (config, "cache") not in by:
            continue
        spread = v.get("frechet_spread") or 0.0
        lo, hi = v["frechet"] - spread, v["frechet"] + spread
        shortcuts = {n: by[(config, f"shortcut:{n}")] for n in names}
        best = max(shortcuts, key=lambda n: shortcuts[n]["fidelity"])
        item = {"vanilla_frechet_interval": [lo, hi], "vanilla_accuracy": v["accuracy"], "best": best, "variants": {}}
        for name, r in shortcuts.items():
            item["variants"][name] = {
                "frechet": r["frechet"],
                "frechet_inside": lo <= r["frechet"] <= hi,
                "frechet_miss": max(0.0, lo - r["frechet"], r["frechet"] - hi),
                "accuracy": r["accuracy"],
                "accuracy_within_0.01": abs(r["accuracy"] - v["accuracy"]) <= 0.01,
                "accuracy_miss": max(0.0, abs(r["accuracy"] - v["accuracy"]) - 0.01),
                "fidelity": r["fidelity"],
                "fidelity_ci": r.get("fidelity_ci"),
                "fidelity_above_k1": apart(r, shortcuts["tf-k1"], "fidelity") if name != "tf-k1" else None,
            }
        for peer in ("cache", "taylor"):
            item[peer] = {
                "frechet": by[(config, peer)]["frechet"],
                "outside": not lo <= by[(config, peer)]["frechet"] <= hi,
            }
        out[config] = item
    return out


def ml_cache_checks(rows: list[dict], names: list[str]) -> dict:
    """dimoo-digits: at each shortcut config, each variant's token agreement and fidelity intervals
    against ML-Cache's at the same N and B (its refresh steps), and whether they lie wholly above."""
    out = {}
    for r in rows:
        if r["method"] != f"shortcut:{names[0]}":
            continue
        peer = next((m for m in rows if m["method"] == ML_CACHE and m["N"] == r["N"] and m["B"] == r["B"]), None)
        if peer is None:
            continue
        by = {m["method"]: m for m in rows if m["config"] == r["config"]}
        item = {
            "ml-cache": {k: peer.get(k) for k in ("token_agreement", "token_agreement_ci", "fidelity", "fidelity_ci")}
        }
        for name in names:
            v = by[f"shortcut:{name}"]
            item[name] = {k: v.get(k) for k in ("token_agreement", "token_agreement_ci", "fidelity", "fidelity_ci")}
            item[name] |= {f"{k}_above_ml_cache": apart(v, peer, k) for k in ("token_agreement", "fidelity")}
        out[r["config"]] = item
    return out


def train_variants(
    root: Path, size: dict, data: str | None, seed: int, names: list[str], model: str
) -> dict[str, float]:
    """Train (or reuse) the variants `names`; minutes of each training run."""
    live = LiveConfig(steps=16, batch_size=size["live_batch"], val_samples=64 if size["samples"] > 100 else 8)
    minutes = {}
    for name, options in variants(size["train_steps"], size["batch"]).items():
        if name not in names:
            continue
        out = root / name
        if (out / "config.json").exists():
            continue
        dataset = data if data is not None and not set(options) & {"on_policy", "chain_budget"} else None
        shared = dict(MODELS[model]["train"], steps=size["train_steps"], batch_size=size["batch"])
        shared |= dict(save_every=500, seed=seed, warmup=min(100, size["train_steps"] // 10))
        cfg = TrainConfig(data=dataset, live=None if dataset else live, out=str(out), **{**shared, **options})
        t0 = time.perf_counter()
        spec = BaseSpec(model, device="cpu")
        train(cfg, spec, resume=(out / "checkpoint").is_dir())
        minutes[name] = (time.perf_counter() - t0) / 60
        print(f"trained {name} in {minutes[name]:.1f} min", flush=True)
    return minutes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-on-policy", help="zoo folders and bench results go here")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--samples", type=int, default=None, help="bench samples per point (default 2,000)")
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps of every variant (default 6,000)")
    p.add_argument(
        "--data", default=None, help="a dumped N = 16 dataset for the teacher-forced variants (default: live)"
    )
    p.add_argument("--model", default="maskgit-digits", choices=sorted(MODELS), help="the base")
    p.add_argument("--configs", default=None, help="bench configs, comma-separated (default: the base's)")
    p.add_argument("--repeats", type=int, default=1, help="latency repeats of the bench")
    p.add_argument("--batch", type=int, default=None, help="training batch (default 128)")
    p.add_argument("--live-batch", type=int, default=None, help="samples per live rollout batch (default 64)")
    p.add_argument("--bench-batch", type=int, default=250, help="bench sampling batch (also the latency batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=None, help="train and bench only these, comma-separated (tf-k1 always)")
    p.add_argument("--train-only", action="store_true", help="train exactly --variants (no bench): one job per core")
    p.add_argument("--part", default=None, help="bench into OUT/bench-PART, summary OUT/summary-PART.json")
    args = p.parse_args()
    size = dict(SMOKE if args.smoke else FULL)
    given = {
        "samples": args.samples,
        "train_steps": args.train_steps,
        "batch": args.batch,
        "live_batch": args.live_batch,
    }
    size |= {k: v for k, v in given.items() if v is not None}
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    names = list(DEFAULT_VARIANTS)
    if args.variants:
        known = variants(size["train_steps"], size["batch"])
        given_names = args.variants.split(",")
        if unknown := [n for n in given_names if n not in known]:
            p.error(f"unknown variants {unknown}; known: {', '.join(known)}")
        names = given_names if args.train_only else ["tf-k1", *(n for n in given_names if n != "tf-k1")]
    minutes = train_variants(root, size, args.data, args.seed, names, args.model)
    if args.train_only:
        return
    part = f"-{args.part}" if args.part else ""
    base = load_base(BaseSpec(args.model, device="cpu"))
    cfg = BenchConfig(
        shortcuts=[str(root / n) for n in names],
        configs=(args.configs or MODELS[args.model]["configs"]).split(","),
        predictors=MODELS[args.model]["predictors"],
        samples=size["samples"],
        repeats=args.repeats,
        batch_size=args.bench_batch,
        out=str(root / f"bench{part}"),
        bootstrap=size["bootstrap"],
    )
    result = run_bench(cfg, base, progress=lambda what: print(f"  {what}", flush=True))
    print(results_table(result))
    summary = {
        "benchmark": "on-policy",
        "size": size,
        "source": "dataset " + args.data if args.data else "live",
        "train_minutes": minutes,
        "wall_minutes": (time.perf_counter() - t0) / 60,
        "model": args.model,
        "checks": checks(result["rows"], names),
        "ml_cache_checks": ml_cache_checks(result["rows"], names),
    }
    print(json.dumps({k: summary[k] for k in ("checks", "ml_cache_checks")}, indent=1))
    (root / f"summary{part}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {root / f'summary{part}.json'} and {', '.join(result['files'])}")


if __name__ == "__main__":
    main()
