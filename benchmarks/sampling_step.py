"""The sampling step alone (the rule's choose_tokens, masking, top-k, commit) of both families, before and
after the inverse CDF's rewrite, on the same logits and uniforms in one run; checks that both draw the same
codes.

    python benchmarks/sampling_step.py [--repeats 5] [--threads 2] [--out benchmarks/results/sampling-step.json]

Before: the CDF summed into a fresh float64 copy and the draw counted by a compare-and-sum over
[B, L, V] (the previous `schedule.inverse_cdf`, kept here as the reference). After: the float64 copy
exponentiated and summed in place and a binary search per cell (`torch.searchsorted`). Shapes: the digits
bases at batch 64, 512-px MaskGIT at batch 10 (32x32 tokens, 1024 codes) and Lumina-DiMOO at 1024 px,
batch 1 (64x64 tokens, 8192 codes): the CFG-mixed logits one step samples from. Prints a table and a JSON
line; median ms per step over `--repeats` timed runs of each after one warm-up, before and after
alternating (so a load change on shared cores hits both alike).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base import rules
from migm.trajectories.rollout import SamplerConfig

# (name, rule, batch, L, V, N)
SHAPES = [
    ("maskgit-digits", "maskgit", 64, 64, 17, 16),
    ("dimoo-digits", "dimoo", 64, 64, 17, 16),
    ("maskgit 512 px", "maskgit", 10, 1024, 1024, 32),
    ("lumina-dimoo 1024 px", "dimoo", 1, 4096, 8192, 64),
]


def inverse_cdf_compare_sum(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The previous `schedule.inverse_cdf`: a float64 copy, its exp, its cumsum, then compare-and-sum."""
    cdf = log_probs.double().exp().cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_(max=log_probs.shape[-1] - 1)


def sampling_step(config: SamplerConfig, logits, u, tokens, mask_id: int, k: int, s: int):
    """What the rollout does with a step's logits: draw, rank the masked cells, commit the top k."""
    rule = {"maskgit": rules.MASKGIT_RULE, "dimoo": rules.DIMOO_RULE}[config.rule]
    sampled, confidence = rule.choose_tokens(config, logits, u[:, 0], u[:, 1], s)
    confidence = confidence.masked_fill(tokens != mask_id, -torch.inf)
    new_pos = confidence.topk(k, dim=-1).indices
    out = tokens.clone()
    out.scatter_(1, new_pos, sampled.gather(-1, new_pos))
    return sampled, out


def timed(fn, inverse_cdf) -> tuple[float, tuple]:
    """One call of `fn` with the rules drawing by `inverse_cdf`: (seconds, result)."""
    current = rules.inverse_cdf
    rules.inverse_cdf = inverse_cdf  # the rules look it up at call time
    try:
        t = time.perf_counter()
        out = fn()
        return time.perf_counter() - t, out
    finally:
        rules.inverse_cdf = current


def measure(name: str, rule: str, batch: int, L: int, V: int, N: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(batch, L, V, generator=g)
    u = torch.rand(batch, 2, L, generator=g).clamp_(1e-10, 1 - 1e-7)
    tokens = torch.randint(0, V, (batch, L), generator=g)
    tokens[:, : L // 2] = V  # half the cells still masked (mid-rollout)
    s, k = N // 2, max(1, L // N)
    config = SamplerConfig(steps=N, rule=rule)
    step = lambda: sampling_step(config, logits, u, tokens, V, k, s)  # noqa: E731
    ways = {"before": inverse_cdf_compare_sum, "after": rules.inverse_cdf}
    results = {w: timed(step, f)[1] for w, f in ways.items()}  # warm-up
    times: dict = {w: [] for w in ways}
    for _ in range(repeats):
        for w, f in ways.items():
            times[w].append(timed(step, f)[0])
    same = all(torch.equal(a, b) for a, b in zip(results["before"], results["after"]))
    ms = {w: 1000 * statistics.median(t) for w, t in times.items()}
    return {
        "shape": name,
        "rule": rule,
        "logits": [batch, L, V],
        "before_ms": ms["before"],
        "after_ms": ms["after"],
        "same_draws": same,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(*shape, args.repeats) for shape in SHAPES]
    where = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    print(f"sampling step, cpu ({where['cpu']}, {where['threads']} threads), torch {where['torch']}")
    print("| logits [B, L, V] | rule | before ms / step | after ms / step | speedup | same draws |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        shape = "x".join(map(str, r["logits"]))
        print(
            f"| {r['shape']} {shape} | {r['rule']} | {r['before_ms']:.2f} | {r['after_ms']:.2f} | "
            f"{r['before_ms'] / r['after_ms']:.2f}x | {'yes' if r['same_draws'] else 'NO'} |"
        )
    result = {"benchmark": "sampling_step", **where, "rows": rows}
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
