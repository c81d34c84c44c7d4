"""GPU check of the DiMOO base: Lumina-DiMOO at its released widths (LLaDA-8B, 32 layers, d_model 4096,
vocabulary 134656, 8192 image codes) at 1024x1024 (a 64x64 grid), random bf16 weights made on the GPU,
and a random `dimoo-transformer` shortcut (bottleneck 2, 1 block). Three phases:

1. logits of the bf16 model (bf16 weights under autocast, as `--precision bf16` runs) against fp32, on a
   2-layer model of the same widths (32 fp32 layers would be slow and 32 GB);
2. a padded batch of two prompts of different lengths (both CFG branches right-padded together) against
   each prompt alone, in bf16: feature relative error, and token agreement of N8 and N8B4 rollouts;
3. latency per image at batch 1 (as published) and batch 4 (`--batch`), eager and with `--compile`
   (trajectories/compile.py; `--no-compile`: eager only): vanilla N64 against shortcut N64B11 and N64B14,
   CUDA-synchronised; one warm-up rollout per batch and mode (eager: N8B4, the same kernels at the same
   sequence lengths; compiled: N64B11, its shapes, the compile included), then `--repeats` timed runs
   each, median; achieved TFLOP/s (counted FLOPs of both CFG branches) and MFU against the card's bf16
   dense peak (shortcut_zoo/gpu.py; blank for a card not in its table), peak memory per config;
   speedups measured, ideal (counted FLOPs) and published (over 4x at N64B11; the paper reports 4-6x);
   how far the compiled configs' tokens agree with the eager ones' (same seeds). Order: eager batch 1, compiled batch 1, eager batch 4, compiled batch 4 (the published batch first).

Before phase 2: which fused attention kernels (flash, memory-efficient) the base and the shortcut run on
under the rollout's autocast, and why not where not (torch's own reasons).

    bash benchmarks/gpu_check.sh            # the MaskGIT check, then this one
    python benchmarks/dimoo_gpu_check.py --smoke   # tiny widths on CPU, same code path (the tests run this)

Time guard: each timed config is predicted from the warm-up's per-step times and runs only as many
repeats as fit before `--max-seconds` (default 240, or $DIMOO_GPU_CHECK_SECONDS; skipped when none
fits). A phase that fails is reported and the others still run (exit status 1). Prints each phase's
elapsed time as it goes, a table, and a JSON line (peak GPU memory per phase included). The smoke
times fp32 (bf16 matmuls are slow on most CPUs); its phase 1 still checks bf16.
Prompt ids come from the tokenizer of the tiny published fixture in tests/fixtures (one id per word, so
realistic lengths); without it, from a stand-in that hashes each word to an id.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
import traceback
import zlib
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn

from migm.shortcut_zoo.archs import build_for_base
from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.cost import relative_cost
from migm.shortcut_zoo.gpu import peak_tflops, sdpa_backends, token_agreement, utilisation
from migm.shortcut_zoo.predictors import make_predictor
from migm.trajectories.base import resolve_device
from migm.trajectories.base.dimoo import DiMOO
from migm.trajectories.base.dimoo_layout import SpecialTokens
from migm.trajectories.base.dimoo_loading import DTYPES, load_tokenizer
from migm.trajectories.base.llada import LLaDA, LLaDAConfig, RMSNorm
from migm.trajectories.compile import compile_base, compile_shortcut
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import RolloutResult, SamplerConfig, autocast, rollout, sample_seeds, stack_cond

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "published" / "dimoo" / "checkpoint"

# Released widths (n_kv_heads 32 assumed, as in benchmarks/dimoo_memory.py); text ids stay below the
# special ids (126084 and up).
FULL = dict(
    llada=LLaDAConfig(),  # its defaults are the released LLaDA-8B widths
    special=SpecialTokens(),
    V=8192,
    grid=(64, 64),
    text_vocab=126000,
)
SMOKE = dict(
    llada=LLaDAConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=288),
    special=SpecialTokens(mask=255, newline=254, boa=253, eoa=252, boi=251, eoi=250, image_offset=256),
    V=32,
    grid=(8, 8),
    text_vocab=250,
)
SHORTCUT = dict(bottleneck=2, blocks=1)
PROMPTS = [
    "A serene mountain lake at sunrise, mist drifting over the water, pine trees on the shore, photorealistic",
    "a red cat",
    "An old lighthouse on a rocky cliff during a storm, waves crashing, dramatic clouds",
    "a bowl of ramen with a soft-boiled egg, studio lighting",
]
STEPS, BUDGETS, PUBLISHED = 64, (11, 14), "over 4x at N64B11 (paper: 4-6x)"


class WordIds:
    """Stand-in tokenizer when the fixture is absent: one id per word, markup tag or punctuation mark,
    hashed below `vocab` (the fixture's tokenizer is word level too, so lengths are alike)."""

    def __init__(self, vocab: int):
        self.vocab = vocab

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        words = re.findall(r"</?\w+>|\w+|[^\w\s]", text.lower())
        return {"input_ids": [zlib.crc32(w.encode()) % self.vocab for w in words]}


def prompt_tokenizer(sizes: dict):
    """The fixture's tokenizer, or the stand-in where the fixture (or transformers) is missing."""
    if FIXTURE.is_dir():
        try:
            return load_tokenizer(FIXTURE), "fixture tokenizer"
        except MigmError as e:  # a one-shot GPU run goes on with the stand-in
            print(f"note: {e}")
    return WordIds(sizes["text_vocab"]), "word-hash stand-in (no fixture tokenizer)"


def random_llada(cfg: LLaDAConfig, device: str, dtype: torch.dtype, seed: int) -> LLaDA:
    """A LLaDA with random weights made in place on `device` in `dtype` (built on the meta device, so
    no full-size fp32 copy ever exists): normal(0, 0.02) weights, norms one."""
    with torch.device("meta"):
        net = LLaDA(cfg)
    net = net.to(dtype).to_empty(device=device)
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, RMSNorm):
                m.weight.fill_(1.0)
            elif isinstance(m, nn.Linear | nn.Embedding):
                m.weight.normal_(0, 0.02)
    return net.eval().requires_grad_(False)


def make_base(sizes: dict, net: LLaDA, tokenizer, precision: str) -> DiMOO:
    """The DiMOO base around `net` (decode is never used: vq_folder is only named)."""
    return DiMOO(
        net,
        tokenizer,
        sizes["special"],
        sizes["grid"],
        sizes["V"],
        FIXTURE / "vqvae",
        8,
        fingerprint="random-weights",
        precision=precision,
    )


def random_shortcut(base: DiMOO, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_for_base("dimoo-transformer", base, **SHORTCUT)
    with torch.no_grad():  # the zero init makes it the identity; random outputs exercise the same kernels
        for p in (*model.adaLN_modulation.parameters(), *model.proj_out.parameters()):
            p.normal_(0, 0.02)
    # fp32 weights under the rollout's autocast, as `load_shortcut` gives them
    return model.to(base.device).eval().requires_grad_(False)


def half_masked(base: DiMOO, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, base.V, (batch, base.L), generator=g)
    tokens[torch.rand(batch, base.L, generator=g) < 0.5] = base.mask_id
    return tokens.to(base.device)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def trim(cond: torch.Tensor, i: int) -> torch.Tensor:
    """Row i of padded prompt ids, without its padding."""
    return cond[i : i + 1, : int((cond[i] >= 0).sum())]


# --- the phases ------------------------------------------------------------------------------------


@torch.no_grad()
def logits_error(sizes: dict, tokenizer, device: str, low: str) -> float:
    """Relative L2 error of the image-code logits of a 2-layer model at the same widths: `low` weights
    under autocast (the rollout's path) vs fp32, on a half-masked grid under a prompt, both branches."""
    net = random_llada(replace(sizes["llada"], n_layers=2), device, torch.float32, seed=1)
    base = make_base(sizes, net, tokenizer, "fp32")
    rows = stack_cond(base.encode_prompts(PROMPTS[:1]), base.null_cond(1))
    tokens = half_masked(base, 1, seed=1).repeat(2, 1)
    ref = base.forward(tokens, rows)[0].float()
    net.to(DTYPES[low])
    base.precision = low
    with autocast(base):
        out = base.forward(tokens, rows)[0].float()
    return rel(out, ref)


@torch.no_grad()
def padded_vs_alone(base: DiMOO, shortcut: nn.Module, steps: int = 8) -> dict:
    """Two prompts of different lengths in one batch against each alone: feature relative error of a
    forward (both branches, real positions) and token agreement of N`steps` and N`steps`B`steps/2`."""
    cond = base.encode_prompts(PROMPTS[:2])
    tokens = half_masked(base, 2, seed=2)
    with autocast(base):
        _, together = base.forward(tokens.repeat(2, 1), stack_cond(cond, base.null_cond(2)))
        num = den = 0.0
        for i in range(2):
            _, alone = base.forward(tokens[i : i + 1].repeat(2, 1), stack_cond(trim(cond, i), base.null_cond(1)))
            got = together[[i, 2 + i], : alone.shape[1]].float()
            num += (got - alone.float()).pow(2).sum().item()
            den += alone.float().pow(2).sum().item()
    out = {"feature_relative_error": (num / den) ** 0.5, "token_agreement": {}}
    seeds = sample_seeds(0, 0, 2)
    for budget in (None, steps // 2):
        config = SamplerConfig.for_base(base, steps, budget)
        predictor = make_predictor("shortcut", shortcut) if budget else None
        batch = rollout(base, cond, seeds, config, predictor=predictor).tokens
        same = [
            (rollout(base, trim(cond, i), seeds[i : i + 1], config, predictor=predictor).tokens[0] == batch[i])
            .float()
            .mean()
            .item()
            for i in range(2)
        ]
        out["token_agreement"][f"N{steps}" + (f"B{budget}" if budget else "")] = sum(same) / 2
    return out


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_rollout(base: DiMOO, cond, seeds, config: SamplerConfig, predictor) -> tuple[float, RolloutResult]:
    sync(str(base.device))
    t0 = time.perf_counter()
    result = rollout(base, cond, seeds, config, predictor=predictor)
    sync(str(base.device))
    return time.perf_counter() - t0, result


def latency(base: DiMOO, shortcut: nn.Module, b: int, repeats: int, deadline: float, warmup: tuple) -> dict:
    """At batch b: a warm-up rollout (`warmup` = (N, B); its per-step times predict each config's run
    time; compiled, it compiles), then vanilla N64 and shortcut N64B* with as many of `repeats` timed runs
    as fit before `deadline`, each with its peak GPU memory and its last run's tokens (under "tokens")."""
    cond = base.encode_prompts([PROMPTS[i % len(PROMPTS)] for i in range(b)])
    seeds = sample_seeds(0, 0, b)
    t_warm, warm = timed_rollout(
        base, cond, seeds, SamplerConfig.for_base(base, *warmup), make_predictor("shortcut", shortcut)
    )
    t_full = statistics.median(t for s, t in enumerate(warm.step_times) if s in warm.full)
    t_short = statistics.median(t for s, t in enumerate(warm.step_times) if s not in warm.full)
    budgets = (None, *BUDGETS)
    predicted = [(B or STEPS) * t_full + (STEPS - (B or STEPS)) * t_short for B in budgets]
    out = {"warmup_s": t_warm, "ms_per_full_step": 1000 * t_full, "ms_per_shortcut_step": 1000 * t_short}
    out |= {"configs": {}, "tokens": {}}
    for i, budget in enumerate(budgets):
        # as many repeats as fit while leaving one run for each config still to come (one if only it fits)
        left = deadline - time.perf_counter()
        runs = min(repeats, max(int((left - sum(predicted[i + 1 :])) / predicted[i]), int(left >= predicted[i])))
        config = SamplerConfig.for_base(base, STEPS, budget)
        predictor = make_predictor("shortcut", shortcut) if budget else None
        if base.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        timed = [timed_rollout(base, cond, seeds, config, predictor) for _ in range(runs)]
        times = [t for t, _ in timed]
        name = f"N{STEPS}" + (f"B{budget}" if budget else "")
        if timed:
            out["tokens"][name] = timed[-1][1].tokens
        out["configs"][name] = {
            "ms_per_image": 1000 * statistics.median(times) / b if times else None,
            "min_max_ms_per_image": [1000 * min(times) / b, 1000 * max(times) / b] if times else None,
            "runs": len(times),
            "predicted_ms_per_image": 1000 * predicted[i] / b,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if times and base.device.type == "cuda" else None,
        }
        note = f"{len(times)} run(s)" if times else "skipped (past --max-seconds)"
        print(f"  batch {b} {name}: predicted {predicted[i]:.1f} s / run, {note}", flush=True)
    return out


def attention_backends(base: DiMOO, shortcut: nn.Module) -> dict:
    """The fused SDPA kernels the base forward and the shortcut run on, under the rollout's autocast, at
    batch 1 with both CFG branches (right-padded rows: an attention mask)."""
    cond = stack_cond(base.encode_prompts(PROMPTS[:1]), base.null_cond(1))
    tokens = half_masked(base, 1, seed=3).repeat(2, 1)
    branch = torch.arange(2, device=base.device)
    k = max(1, base.L // STEPS)
    with autocast(base), torch.no_grad():
        feature = base.forward(tokens, cond)[1]
        ids = torch.zeros(1, k, dtype=torch.long, device=base.device)
        new = base.new_tokens(ids, torch.arange(k, device=base.device)[None], cond, branch)
        ratio = torch.full((2,), 0.5, device=base.device)
        return {
            "base": sdpa_backends(base.forward, tokens, cond),
            "shortcut": sdpa_backends(shortcut, feature, *new, ratio, base.feature_valid(cond)),
        }


def utilisation_rows(timings: dict, cost: dict, peak: float | None) -> None:
    """Achieved TFLOP/s and MFU of every timed config, in place: counted FLOPs of both CFG branches
    (each branch counted as the uncond row's forward, the shorter one), over the measured time."""
    per_call = cost["shortcut_flops"] + cost["head_flops"]
    for t in timings.values():
        for name, r in (t["configs"] if t else {}).items():
            B = int(name.split("B")[1]) if "B" in name else STEPS
            flops = 2 * (B * cost["base_flops"] + (STEPS - B) * per_call)
            r["tflops"], r["mfu"] = (None, None)
            if r["ms_per_image"]:
                r["tflops"], r["mfu"] = utilisation(flops, r["ms_per_image"] / 1000, peak)


class Phases:
    """Elapsed time and peak GPU memory of each phase, printed as each ends. A phase that raises is
    reported (its error kept for the JSON) and the check goes on: a one-shot GPU run keeps the rest."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.start = time.perf_counter()
        self.elapsed, self.peak_gib, self.errors = {}, {}, {}

    def run(self, name: str, fn, *args):
        t = time.perf_counter()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            result = fn(*args)
        except Exception as e:  # any failure: report it and run the other phases
            traceback.print_exc()
            self.errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            result = None
            if self.cuda:
                torch.cuda.empty_cache()
        now = time.perf_counter()
        self.elapsed[name] = now - t
        if self.cuda:
            self.peak_gib[name] = torch.cuda.max_memory_allocated() / 2**30
        memory = f", peak GPU memory {self.peak_gib[name]:.1f} GiB" if self.cuda else ""
        failed = " FAILED" if name in self.errors else ""
        print(f"[{name}]{failed} {now - t:.1f} s (total {now - self.start:.1f} s){memory}", flush=True)
        return result


def build(sizes: dict, tokenizer, device: str, precision: str) -> tuple[DiMOO, nn.Module, dict]:
    base = make_base(sizes, random_llada(sizes["llada"], device, DTYPES[precision], seed=0), tokenizer, precision)
    shortcut = random_shortcut(base, seed=0)
    with autocast(base):  # the base's weights are in its precision; the shortcut's fp32 ones need autocast
        cost = relative_cost(shortcut, base, STEPS)
    return base, shortcut, cost


def speedups(timings: dict, cost: dict) -> dict:
    """Vanilla over shortcut time per mode and batch: measured, ideal (B full forwards plus N - B
    shortcut and head calls, in counted FLOPs) and the published claim."""
    per_call = (cost["shortcut_flops"] + cost["head_flops"]) / cost["base_flops"]
    out = {}
    for key, t in timings.items():
        rows = t["configs"] if t else {}
        for B in BUDGETS:
            vanilla = rows.get(f"N{STEPS}", {}).get("ms_per_image")
            fast = rows.get(f"N{STEPS}B{B}", {}).get("ms_per_image")
            out[f"{key}: N{STEPS} / N{STEPS}B{B}"] = {
                "measured": vanilla / fast if vanilla and fast else None,
                "ideal": STEPS / (B + (STEPS - B) * per_call),
                "published": PUBLISHED if B == 11 else None,
            }
    return out


def num(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def run_latency(phases: Phases, base: DiMOO, shortcut: nn.Module, args, deadline: float) -> dict:
    """Phase 3 in the order of the targets: eager batch 1, compiled batch 1 (the published batch), then
    eager and compiled at --batch, as time allows. Compiling happens once, before the first compiled phase;
    a compiled phase warms up on N64B11 itself (its shapes), an eager one on N8B4. The models are compiled in
    place, so the eager phases after the first compile run under torch's "force_eager" stance."""
    timings = {}
    for b in sorted({1, args.batch}):
        for mode in ("eager", "compile") if args.compile else ("eager",):
            if mode == "compile" and not getattr(base, "compiled", False):
                phases.run("compile (toolchain check)", compile_models, base, shortcut)
            warmup = (STEPS, BUDGETS[0]) if mode == "compile" else (8, 4)
            key = f"{mode} batch {b}"
            if time.perf_counter() >= deadline:  # not even the warm-up (compiled, it may take minutes)
                print(f"[3 latency {key}] skipped (past --max-seconds)", flush=True)
                timings[key] = None
                continue
            with torch.compiler.set_stance("force_eager" if mode == "eager" else "default"):
                timings[key] = phases.run(
                    f"3 latency {key}", latency, base, shortcut, b, args.repeats, deadline, warmup
                )
    return timings


def compiled_vs_eager(timings: dict) -> dict:
    """Token agreement of each compiled config with the eager one at the same batch (same seeds), where both
    ran; takes the tokens out of `timings` (they stay out of the JSON)."""
    tokens = {key: t.pop("tokens") for key, t in timings.items() if t}
    out = {}
    for key, compiled in tokens.items():
        mode, b = key.split(" batch ")
        for name, t in compiled.items():
            eager = tokens.get(f"eager batch {b}", {}).get(name)
            if mode == "compile" and eager is not None:
                out[f"batch {b} {name}"] = token_agreement(t, eager)
    return out


def compile_models(base: DiMOO, shortcut: nn.Module) -> None:
    compile_base(base)
    compile_shortcut(shortcut, base.device)


def print_latency(timings: dict, gains: dict) -> None:
    print("| mode | batch | config | ms / image (median) | min-max | runs | predicted | TFLOP/s | MFU | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, t in timings.items():
        mode, b = key.split(" batch ")
        for name, r in (t["configs"] if t else {}).items():
            span = "-" if not r["runs"] else "-".join(f"{x:.1f}" for x in r["min_max_ms_per_image"])
            mfu = "-" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}%"
            row = [mode, b, name, num(r["ms_per_image"]), span, r["runs"], num(r["predicted_ms_per_image"])]
            row += [num(r.get("tflops")), mfu, num(r["peak_gib"], ".2f")]
            print("| " + " | ".join(map(str, row)) + " |")
    print("| speedup | measured | ideal (counted FLOPs) | published |")
    print("|---|---|---|---|")
    for name, s in gains.items():
        measured = "-" if s["measured"] is None else f"{s['measured']:.2f}x"
        print(f"| {name} | {measured} | {s['ideal']:.2f}x | {s['published'] or '-'} |")
    for key, t in timings.items():
        if t:
            print(
                f"{key} per step: full {t['ms_per_full_step']:.1f} ms, shortcut {t['ms_per_shortcut_step']:.1f} ms "
                f"(warm-up {t['warmup_s']:.1f} s)"
            )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny widths on CPU (the test suite runs this)")
    p.add_argument("--batch", type=int, default=4, help="the batch size timed beside batch 1")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per config (after one warm-up per batch)")
    p.add_argument(
        "--precision", default=None, help="bf16, fp16 or fp32 base for phases 2-3 (default: bf16 on cuda, fp32 on cpu)"
    )
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager latency only")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=float(os.environ.get("DIMOO_GPU_CHECK_SECONDS", 240)),  # settable through gpu_check.sh
        help="time guard in seconds from the start: no timed run that would end past it starts (default 240)",
    )
    args = p.parse_args()
    if args.precision not in (None, *DTYPES) or args.batch < 1 or args.repeats < 1:
        p.error("--precision must be bf16, fp16 or fp32; --batch and --repeats at least 1")
    if not args.smoke and resolve_device("auto") == "cpu":
        p.error("no CUDA GPU visible: the full-size check needs one (16 GB of bf16 weights); use --smoke")
    return args


def main() -> None:
    args = parse_args()
    device = "cpu" if args.smoke else resolve_device("auto")
    if args.smoke:  # tiny ops: OpenMP threads cost more than they give, and the suite may share the cores
        torch.set_num_threads(1)
    # bf16 matmuls are slow on most CPUs: the smoke times fp32 (phase 1 still checks bf16)
    precision = args.precision or ("bf16" if device != "cpu" else "fp32")
    sizes = SMOKE if args.smoke else FULL
    c, (h, w) = sizes["llada"], sizes["grid"]
    phases = Phases(device)
    gpu = torch.cuda.get_device_name() if device != "cpu" else f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    peak = peak_tflops(gpu) if device != "cpu" else None
    print(f"dimoo_gpu_check{' --smoke' if args.smoke else ''}: {gpu}, torch {torch.__version__}, {precision}")
    print(
        f"base: LLaDA {c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads ({c.n_kv_heads} KV), MLP "
        f"{c.mlp_hidden_size}, vocabulary {c.vocab_size}; {h}x{w} grid, {sizes['V']} codes; random weights; "
        f"bf16 dense peak {num(peak, '.0f')} TFLOP/s",
        flush=True,
    )

    tokenizer, where = prompt_tokenizer(sizes)
    errors = {}
    for low in ["bf16", "fp16"] if device != "cpu" else ["bf16"]:
        errors[low] = phases.run(f"1 logits {low} vs fp32 (2 layers)", logits_error, sizes, tokenizer, device, low)
    built = phases.run("build + counted FLOPs", build, sizes, tokenizer, device, precision)
    if built is None:
        raise SystemExit("dimoo_gpu_check: the full-size base could not be built (see above)")
    base, shortcut, cost = built
    attention = phases.run("attention backends", attention_backends, base, shortcut)
    padded = phases.run("2 padded batch vs alone", padded_vs_alone, base, shortcut)
    timings = run_latency(phases, base, shortcut, args, phases.start + args.max_seconds)
    utilisation_rows(timings, cost, peak)
    gains = speedups(timings, cost)
    agreement = compiled_vs_eager(timings)

    prompt_ids = base.encode_prompts(PROMPTS[:2])
    lengths = [int(n) for n in (prompt_ids >= 0).sum(1)] + [base.null_cond(1).shape[1]]
    print(f"prompt ids from the {where}: {lengths[0]} and {lengths[1]}, uncond {lengths[2]}; + {h * (w + 1) + 4} more")
    print(
        f"shortcut: {cost['parameters']:,} parameters, {cost['relative_cost']:.4f} x a base forward (counted FLOPs; "
        f"{cost['base_flops'] / 1e9:.4g} GFLOP per base forward of the uncond row)"
    )
    for low, err in errors.items():
        print(f"logits {low} vs fp32 (2 layers): relative error {num(err, '.2e')}")
    for part, backends in (attention or {}).items():
        print(f"attention ({precision}) {part}: " + "; ".join(f"{k}: {v}" for k, v in backends.items()))
    if padded:
        agree = ", ".join(f"{k} {v:.4f}" for k, v in padded["token_agreement"].items())
        print(f"padded batch vs alone ({precision}): feature relative error {padded['feature_relative_error']:.2e}")
        print(f"  token agreement {agree}")
    print_latency(timings, gains)
    for name, same in agreement.items():
        print(f"compiled vs eager {name}: same tokens {same['tokens']:.4f}, same images {same['images']:.3f}")
    for name, err in phases.errors.items():
        print(f"FAILED {name}: {err}")
    print(
        json.dumps(
            {
                "benchmark": "dimoo_gpu_check",
                "smoke": args.smoke,
                "device": gpu,
                "torch": torch.__version__,
                "precision": precision,
                "peak_bf16_tflops": peak,
                "sizes": {"llada": asdict(c), "grid": [h, w], "V": sizes["V"], "shortcut": SHORTCUT},
                "prompt_ids": {"from": where, "lengths": lengths},
                "logits_relative_error": errors,
                "attention": attention,
                "padded": padded,
                "cost": cost,
                "latency": timings,
                "speedups": gains,
                "compiled_vs_eager": agreement,
                "peak_gpu_memory_gib": {"max": max(phases.peak_gib.values()), **phases.peak_gib}
                if phases.cuda
                else None,
                "elapsed_s": {**phases.elapsed, "total": time.perf_counter() - phases.start},
                "errors": phases.errors,
            }
        )
    )
    if phases.errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
