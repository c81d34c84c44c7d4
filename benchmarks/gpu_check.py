"""GPU check: the 512-px MaskGIT (32x32 tokens, depth 24, hidden 768) and the published-size shortcut,
random weights. Checks bf16 / fp16 against fp32 logits, which fused attention kernels the base and the
shortcut can run on (flash, memory-efficient; why not where not), then times vanilla N32 against shortcut
N32B12 at batch 1, 10 and 64, eager and with `--compile` (trajectories/compile.py): ms per image, achieved
TFLOP/s from counted FLOPs (both CFG branches), MFU against the card's bf16 dense peak (blank for a card
not in shortcut_zoo/gpu.py's table), peak memory, the measured vs ideal N32B12 / N32 ratio, and how far
the compiled rows' tokens agree with the eager rows' (same seeds; bf16 kernels that round differently can
flip a close draw).

    bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU (this check, then DiMOO's)
    bash benchmarks/gpu_check.sh --smoke    # tiny sizes on CPU (what the tests run)

Time guard: no run starts past `--max-seconds` (default 170, or $MASKGIT_GPU_CHECK_SECONDS); the
compiled rows' first run per batch is their warm-up (it compiles) and its seconds are reported; batch 64
runs first (the targets), then 10, then 1. Prints tables and a JSON line. Targets (issue 28): N32 at
batch 64 >= 40% MFU; N32B12 / N32 <= 0.41 at batch 10 and 64 (published: <= 0.44).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from migm.shortcut_zoo.archs import build
from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.cost import relative_cost
from migm.shortcut_zoo.gpu import peak_tflops, sdpa_backends, token_agreement, utilisation
from migm.shortcut_zoo.predictors import make_predictor
from migm.trajectories.base import resolve_device
from migm.trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer
from migm.trajectories.compile import compile_base, compile_shortcut
from migm.trajectories.rollout import SamplerConfig, autocast, rollout, sample_seeds

FULL = dict(
    base=MaskGITConfig(grid=32, codebook_size=1024, num_classes=1000, hidden_dim=768, depth=24, heads=16, mlp_dim=3072),
    shortcut=dict(dim=768, bottleneck=2, blocks=1, heads=16, time_hidden=314),
)
SMOKE = dict(
    base=MaskGITConfig(grid=6, codebook_size=16, num_classes=10, hidden_dim=32, depth=2, heads=4, mlp_dim=64),
    shortcut=dict(dim=32, bottleneck=2, blocks=1, heads=4, time_hidden=30),
)
CONFIGS = [(32, None), (32, 12)]  # (N, B): vanilla N32 and shortcut N32B12


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


def attention_backends(base: MaskGIT, shortcut: torch.nn.Module, batch: int) -> dict:
    """The fused SDPA kernels the base forward and the shortcut run on, under the rollout's autocast."""
    device = base.device
    cond = torch.arange(batch, device=device) % base.num_classes
    tokens = torch.full((batch, base.L), base.mask_id, device=device)
    k = max(1, base.L // 32)  # the new tokens of a step of N32
    with autocast(base), torch.no_grad():
        feature = base.forward(tokens, cond)[1]
        new = base.new_tokens(
            torch.zeros(batch, k, dtype=torch.long, device=device),
            torch.arange(k, device=device).expand(batch, k),
            cond,
            torch.zeros(batch, dtype=torch.long, device=device),
        )
        ratio = torch.full((batch,), 0.5, device=device)
        return {
            "base": sdpa_backends(base.forward, tokens, cond),
            "shortcut": sdpa_backends(shortcut, feature, *new, ratio),
        }


def time_rollout(base, config: SamplerConfig, predictor, batch: int, repeats: int, deadline: float) -> tuple:
    """A warm-up rollout (under --compile: the compile), then up to `repeats` timed ones, none started
    when its predicted end is past `deadline`: (the row, the last run's tokens or None)."""
    cond = torch.arange(batch) % base.num_classes
    seeds = sample_seeds(0, 0, batch)
    cuda = base.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    tokens = None

    def run() -> float:
        nonlocal tokens
        sync(base.device.type)
        t0 = time.perf_counter()
        tokens = rollout(base, cond, seeds, config, predictor=predictor).tokens
        sync(base.device.type)
        return time.perf_counter() - t0

    if time.perf_counter() >= deadline:  # not even the warm-up (under --compile it may take minutes)
        skipped = {"warmup_s": None, "runs": 0, "ms_per_image": None, "min_max_ms_per_image": None, "peak_gib": None}
        return skipped, None
    warmup = run()
    times: list[float] = []
    while len(times) < repeats and time.perf_counter() + (times[-1] if times else warmup) < deadline:
        times.append(run())
    med = statistics.median(times) if times else None
    row = {
        "warmup_s": warmup,
        "runs": len(times),
        "ms_per_image": 1000 * med / batch if times else None,
        "min_max_ms_per_image": [1000 * min(times) / batch, 1000 * max(times) / batch] if times else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }
    return row, tokens


def flops_per_image(cost: dict, N: int, B: int | None, branches: int = 2) -> float:
    """Counted FLOPs of one image: B base forwards and N - B shortcut + head calls, per CFG branch."""
    B = B or N
    return branches * (B * cost["base_flops"] + (N - B) * (cost["shortcut_flops"] + cost["head_flops"]))


def time_rows(base, shortcut, cost: dict, args, deadline: float, peak: float | None) -> tuple[dict, dict]:
    """Eager rows, then (unless --no-compile) the same rows compiled: mode -> batch -> config -> row; and
    how far the compiled tokens agree with the eager ones (same seeds): "batch B config" -> agreement."""
    rows: dict = {}
    tokens: dict = {}  # (mode, batch, config) -> the last run's tokens
    for mode in ("eager", "compile") if args.compile else ("eager",):
        if mode == "compile":
            compile_base(base)
            compile_shortcut(shortcut, base.device)
        for batch in sorted(args.batches, reverse=True):  # batch 64 first: the MFU and ratio targets
            for N, B in CONFIGS:
                name = f"N{N}" + (f"B{B}" if B else "")
                predictor = make_predictor("shortcut", shortcut) if B else None
                config = SamplerConfig(steps=N, budget=B)
                row, tokens[mode, batch, name] = time_rollout(base, config, predictor, batch, args.repeats, deadline)
                if row["ms_per_image"]:
                    row["tflops"], row["mfu"] = utilisation(
                        flops_per_image(cost, N, B), row["ms_per_image"] / 1000, peak
                    )
                rows.setdefault(mode, {}).setdefault(batch, {})[name] = row
                warm = "skipped (past --max-seconds)" if row["warmup_s"] is None else f"warm-up {row['warmup_s']:.1f} s"
                print(f"  {mode} batch {batch} {name}: {row['runs']} run(s), {warm}", flush=True)
    return rows, compiled_vs_eager(tokens)


def compiled_vs_eager(tokens: dict) -> dict:
    """Token agreement of each compiled row with its eager row, where both ran."""
    out = {}
    for (mode, batch, name), compiled in tokens.items():
        eager = tokens.get(("eager", batch, name))
        if mode == "compile" and compiled is not None and eager is not None:
            out[f"batch {batch} {name}"] = token_agreement(compiled, eager)
    return out


def ratios(rows: dict, cost: dict) -> dict:
    """N32B12 / N32 per mode and batch: measured, and ideal (counted FLOPs)."""
    per_call = (cost["shortcut_flops"] + cost["head_flops"]) / cost["base_flops"]
    ideal = (12 + 20 * per_call) / 32
    out = {}
    for mode, batches in rows.items():
        for batch, r in batches.items():
            fast, slow = r["N32B12"]["ms_per_image"], r["N32"]["ms_per_image"]
            out[f"{mode} batch {batch}"] = {"measured": fast / slow if fast and slow else None, "ideal": ideal}
    return out


def num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_tables(rows: dict, gains: dict, agreement: dict) -> None:
    print("| mode | batch | config | ms / image | min-max | TFLOP/s | MFU | peak GiB | runs | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode, batches in rows.items():
        for batch, configs in batches.items():
            for name, r in configs.items():
                span = "-" if not r["runs"] else "-".join(f"{x:.2f}" for x in r["min_max_ms_per_image"])
                cells = [mode, batch, name, num(r["ms_per_image"], ".2f"), span, num(r.get("tflops"), ".1f")]
                cells += [num(r.get("mfu") and 100 * r["mfu"], ".1f") + ("%" if r.get("mfu") else "")]
                cells += [num(r["peak_gib"], ".2f"), r["runs"], num(r["warmup_s"], ".1f")]
                print("| " + " | ".join(map(str, cells)) + " |")
    print("| N32B12 / N32 | measured | ideal (counted FLOPs) |")
    print("|---|---|---|")
    for name, g in gains.items():
        print(f"| {name} | {num(g['measured'], '.3f')} | {g['ideal']:.3f} |")
    if "compile" in rows:
        print("| batch | config | eager / compiled ms per image | same tokens (compiled vs eager) | same images |")
        print("|---|---|---|---|---|")
        for batch, configs in rows["compile"].items():
            for name, r in configs.items():
                eager = rows["eager"][batch][name]["ms_per_image"]
                speedup = eager / r["ms_per_image"] if eager and r["ms_per_image"] else None
                same = agreement.get(f"batch {batch} {name}", {})
                cells = [num(same.get("tokens"), ".4f"), num(same.get("images"), ".3f")]
                print(f"| {batch} | {name} | {num(speedup, '.2f')}x | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (the test suite runs this)")
    p.add_argument("--batch", default="1,10,64", help="comma-separated batch sizes to time (default 1,10,64)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--precision", default=None, help="fp32, bf16 or fp16 for the timings (default: bf16 on cuda, fp32 on cpu)"
    )
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager rows only")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=float(os.environ.get("MASKGIT_GPU_CHECK_SECONDS", 170)),
        help="no run starts that would end past this many seconds from the start (default 170)",
    )
    args, _ = p.parse_known_args()  # gpu_check.sh passes the DiMOO check's options too
    args.batches = sorted({int(b) for b in args.batch.split(",") if b.strip()})
    start = time.perf_counter()

    device = "cpu" if args.smoke else resolve_device("auto")
    if device != "cuda" and not args.smoke:
        print("note: no CUDA GPU visible; timing the full-size models on CPU (slow). Use --smoke for a quick check.")
    if args.smoke:  # tiny ops: OpenMP threads cost more than they give, and the suite may share the cores
        torch.set_num_threads(1)
    precision = args.precision or ("bf16" if device == "cuda" else "fp32")
    base, shortcut = random_models(SMOKE if args.smoke else FULL, device)
    checks = {"bf16": logits_error(base, "bf16", 4)}
    if device == "cuda":
        checks["fp16"] = logits_error(base, "fp16", 4)

    cost = relative_cost(shortcut, base, 32)
    base.precision = precision
    attention = attention_backends(base, shortcut, 2)
    gpu = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    peak = peak_tflops(gpu) if device == "cuda" else None
    rows, agreement = time_rows(base, shortcut, cost, args, start + args.max_seconds, peak)
    gains = ratios(rows, cost)

    c = base.cfg
    print(
        f"gpu_check{' --smoke' if args.smoke else ''}: {gpu}, torch {torch.__version__}, precision {precision}, "
        f"bf16 dense peak {num(peak, '.0f')} TFLOP/s"
    )
    print(
        f"base: {c.grid}x{c.grid} tokens, depth {c.depth}, hidden {c.hidden_dim}, heads {c.heads}, "
        f"{cost['base_flops'] / 1e9:.1f} GFLOP per forward of one row; shortcut: {cost['parameters']:,} parameters, "
        f"{cost['relative_cost']:.3f} x a base forward (counted FLOPs)"
    )
    for name, err in checks.items():
        print(f"logits {name} vs fp32: relative error {err:.2e}")
    for part, backends in attention.items():
        print(f"attention ({precision}) {part}: " + "; ".join(f"{k}: {v}" for k, v in backends.items()))
    print_tables(rows, gains, agreement)
    print(
        json.dumps(
            {
                "benchmark": "gpu_check",
                "smoke": args.smoke,
                "device": gpu,
                "torch": torch.__version__,
                "precision": precision,
                "batches": args.batches,
                "peak_bf16_tflops": peak,
                "logits_relative_error": checks,
                "attention": attention,
                "cost": cost,
                "rows": {mode: {str(b): r for b, r in batches.items()} for mode, batches in rows.items()},
                "ratios": gains,
                "compiled_vs_eager": agreement,
                "elapsed_s": time.perf_counter() - start,
            }
        )
    )


if __name__ == "__main__":
    main()
