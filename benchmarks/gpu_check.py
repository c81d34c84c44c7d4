"""GPU check: the 512-px MaskGIT (32x32 tokens, depth 24, hidden 768) and the published-size shortcut,
random weights. Checks bf16 / fp16 against fp32 logits and times vanilla N15 / N32 against shortcut
N15B7 / N32B12 per batch of 10, with the ratios and the ideal ratio set by the shortcut's cost.

    bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
    bash benchmarks/gpu_check.sh --smoke    # tiny sizes on CPU (what the tests run)

Prints a table and a JSON line. Published target (H100-class): N32B12 / N32 <= 0.44.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from migm.shortcut_zoo.archs import build
from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.cost import relative_cost
from migm.shortcut_zoo.predictors import make_predictor
from migm.trajectories.base import resolve_device
from migm.trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds

FULL = dict(
    base=MaskGITConfig(grid=32, codebook_size=1024, num_classes=1000, hidden_dim=768, depth=24, heads=16, mlp_dim=3072),
    shortcut=dict(dim=768, bottleneck=2, blocks=1, heads=16, time_hidden=314),
)
SMOKE = dict(
    base=MaskGITConfig(grid=6, codebook_size=16, num_classes=10, hidden_dim=32, depth=2, heads=4, mlp_dim=64),
    shortcut=dict(dim=32, bottleneck=2, blocks=1, heads=4, time_hidden=30),
)
CONFIGS = [(15, None), (32, None), (15, 7), (32, 12)]


def random_models(sizes: dict, device: str, seed: int = 0):
    torch.manual_seed(seed)
    net = MaskTransformer(sizes["base"])
    base = MaskGIT("maskgit-random", sizes["base"], net, decoder=lambda t: t).to(device)
    shortcut = build("tiny-transformer", **sizes["shortcut"])
    with torch.no_grad():  # the zero init makes it the identity; random outputs exercise the same kernels
        for p in (*shortcut.adaLN_modulation.parameters(), *shortcut.proj_out.parameters()):
            p.normal_(0, 0.02)
    return base, shortcut.to(device).eval().requires_grad_(False)


@torch.no_grad()
def logits_error(base: MaskGIT, precision: str, batch: int) -> float:
    """Relative L2 error of the logits under autocast vs fp32, on half-masked random grids."""
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, base.V, (batch, base.L), generator=g)
    tokens[torch.rand(batch, base.L, generator=g) < 0.5] = base.mask_id
    cond = torch.randint(0, base.num_classes, (batch,), generator=g)
    tokens, cond = tokens.to(base.device), cond.to(base.device)
    ref = base.forward(tokens, cond)[0].float()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    with torch.autocast(base.device.type, dtype=dtype):
        low = base.forward(tokens, cond)[0].float()
    return ((low - ref).norm() / ref.norm()).item()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_rollout(base, config: SamplerConfig, predictor, batch: int, repeats: int) -> tuple[float, float, float]:
    cond = torch.arange(batch) % base.num_classes
    seeds = sample_seeds(0, 0, batch)
    times = []
    for r in range(repeats + 1):  # the first run is warm-up
        sync(base.device.type)
        t0 = time.perf_counter()
        rollout(base, cond, seeds, config, predictor=predictor)
        sync(base.device.type)
        if r:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (the test suite runs this)")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--precision", default=None, help="fp32, bf16 or fp16 for the timings (default: bf16 on cuda, fp32 on cpu)"
    )
    args = p.parse_args()

    device = "cpu" if args.smoke else resolve_device("auto")
    if device != "cuda" and not args.smoke:
        print("note: no CUDA GPU visible; timing the full-size models on CPU (slow). Use --smoke for a quick check.")
    precision = args.precision or ("bf16" if device == "cuda" else "fp32")
    base, shortcut = random_models(SMOKE if args.smoke else FULL, device)
    checks = {"bf16": logits_error(base, "bf16", args.batch)}
    if device == "cuda":
        checks["fp16"] = logits_error(base, "fp16", args.batch)

    cost = relative_cost(shortcut, base, 32)
    base.precision = precision
    rows = {}
    for N, B in CONFIGS:
        config = SamplerConfig(steps=N, budget=B)
        predictor = make_predictor("shortcut", shortcut) if B else None
        rows[f"N{N}" + (f"B{B}" if B else "")] = time_rollout(base, config, predictor, args.batch, args.repeats)
    ratio = lambda a, b: rows[a][0] / rows[b][0]  # noqa: E731
    # ideal: B full forwards plus (N - B) shortcut calls, in counted FLOPs, as a fraction of N forwards
    ideal = lambda N, B: (B + (N - B) * (cost["shortcut_flops"] + cost["head_flops"]) / cost["base_flops"]) / N  # noqa: E731
    ratios = {
        "N32B12 / N32": (ratio("N32B12", "N32"), ideal(32, 12)),
        "N15B7 / N15": (ratio("N15B7", "N15"), ideal(15, 7)),
        "N32B12 / N15": (ratio("N32B12", "N15"), None),
    }

    gpu = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    c = base.cfg
    print(
        f"gpu_check{' --smoke' if args.smoke else ''}: {gpu}, torch {torch.__version__}, precision {precision}, batch {args.batch}"
    )
    print(
        f"base: {c.grid}x{c.grid} tokens, depth {c.depth}, hidden {c.hidden_dim}, heads {c.heads}; shortcut: "
        f"{cost['parameters']:,} parameters, {cost['relative_cost']:.3f} x a base forward (counted FLOPs)"
    )
    for name, err in checks.items():
        print(f"logits {name} vs fp32: relative error {err:.2e}")
    print("| config | ms / batch (median) | min-max |")
    print("|---|---|---|")
    for name, (med, lo, hi) in rows.items():
        print(f"| {name} | {1000 * med:.1f} | {1000 * lo:.1f}-{1000 * hi:.1f} |")
    print("| ratio | measured | ideal (counted FLOPs) |")
    print("|---|---|---|")
    for name, (measured, ideal_r) in ratios.items():
        print(f"| {name} | {measured:.3f} | {'-' if ideal_r is None else f'{ideal_r:.3f}'} |")
    print(
        json.dumps(
            {
                "benchmark": "gpu_check",
                "smoke": args.smoke,
                "device": gpu,
                "torch": torch.__version__,
                "precision": precision,
                "batch": args.batch,
                "logits_relative_error": checks,
                "cost": cost,
                "ms_per_batch": {k: 1000 * v[0] for k, v in rows.items()},
                "ratios": {k: {"measured": m, "ideal": i} for k, (m, i) in ratios.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
