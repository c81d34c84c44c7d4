"""Where does a shortcut lose class accuracy at a small budget? Each window's share, and what guidance
compensation buys back.

    .venv/bin/python benchmarks/accuracy_by_window.py --shortcut zoo/a [--steps 16 --budget 2 --samples 2000]

The shortcut's rollouts at N steps and B uniform full steps are scored (the base's classifier and
Fréchet distance, the samples `migm bench` draws: classes cycling, seed 0) beside hybrids that run the
shortcut in one window only (every other step full), which splits the accuracy lost between windows,
beside rollouts whose first-window shortcut steps have their CFG branch difference scaled by
`--gammas` (f_c ← f_u + γ·(f_c − f_u): undoing the damping `guidance_damping.py` measures), and beside
other placements of the same budget (`--placements`). Prints a
markdown table and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
import warnings

import torch

from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.predictors import make_predictor
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.protocol import ProbedPredictor
from migm.trajectories.generate import cycled_conditions, sample_many
from migm.trajectories.rollout import SamplerConfig
from migm.trajectories.schedule import full_steps


class Steered(ProbedPredictor):
    """The shortcut with its full steps given (`full`) and, before step `until`, its conditional rows'
    difference from the unconditional ones scaled by `gamma` (rows are branch-major, conditional first)."""

    def __init__(self, inner, full: list[int], gamma: float = 1.0, until: int = 0):
        super().__init__(inner)
        self.full, self.gamma, self.until = full, gamma, until

    def place(self, N: int, B: int) -> list[int]:
        return self.full

    def predict(self, step, *args, **kwargs):
        out = super().predict(step, *args, **kwargs)
        if step >= self.until or self.gamma == 1.0:
            return out
        cond, uncond = out.chunk(2)
        return torch.cat([uncond + self.gamma * (cond - uncond), uncond])

    def record(self, step, out, base, tokens, cond) -> None:
        pass  # it steers; nothing to record


def runs(N: int, B: int, gammas: list[float], placements: list[list[int]]) -> list[tuple[str, list[int], float]]:
    """(name, full steps, γ) of each rollout: the shortcut as placed, one window at a time, γ in window 1,
    other placements of the same budget."""
    placed = full_steps(N, B)
    bounds = [*placed, N]
    out = [("shortcut", placed, 1.0)]
    for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
        if end - start > 1:  # shortcut steps start+1 … end−1 only; every other step full
            full = [s for s in range(N) if not start < s < end]
            out.append((f"window {i + 1} only (steps {start + 1}-{end - 1})", full, 1.0))
    out += [(f"γ = {g} in window 1", placed, g) for g in gammas]
    return out + [(f"placed at {p}", p, 1.0) for p in placements]


def measure(
    base, shortcut: str, N: int, B: int, samples: int, gammas: list[float], placements: list[list[int]], batch: int
) -> list[dict]:
    """Accuracy and Fréchet distance of vanilla N and of each of `runs`, on the bench's samples."""
    labels, cond = cycled_conditions(base, samples, None)
    model = load_shortcut(shortcut, base)  # once: every run wraps the same weights
    first_window_end = full_steps(N, B)[1] if B > 1 else N
    rows = []
    for name, full, gamma in [("vanilla", list(range(N)), 1.0), *runs(N, B, gammas, placements)]:
        config = SamplerConfig.for_base(base, N, len(full))
        predictor = Steered(make_predictor("shortcut", model), full, gamma, first_window_end)
        with torch.no_grad():
            s = sample_many(base, labels, config, 0, batch, predictor=predictor, cond=cond)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = base.scorer(s.tokens, s.labels)
        rows.append(
            {"run": name, "full_steps": full, "gamma": gamma, "accuracy": m["accuracy"], "frechet": m["frechet"]}
        )
        print(f"  {name}: accuracy {m['accuracy']:.4f}, Fréchet {m['frechet']:.2f}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shortcut", required=True, help="a zoo folder")
    p.add_argument("--model", default="maskgit-digits", help="a class-conditional base with a scorer and CFG")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--budget", type=int, default=2)
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--gammas", default="1.05,1.1,1.2", help="first-window branch-difference scales")
    p.add_argument("--placements", default="", help="other full steps of the budget, e.g. '0,3;0,5'")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--out", default=None, help="write the rows here (JSON)")
    args = p.parse_args()
    placements = [[int(x) for x in spec.split(",")] for spec in args.placements.split(";") if spec]
    if bad := [f for f in placements if len(f) != args.budget or f[0] != 0]:
        p.error(f"placements {bad} must hold {args.budget} full steps, step 0 first")
    base = load_base(BaseSpec(args.model, device="cpu"))
    if base.scorer is None:
        p.error(f"--model {args.model} brings no classifier to score accuracy with")
    gammas = [float(g) for g in args.gammas.split(",") if g]
    rows = measure(base, args.shortcut, args.steps, args.budget, args.samples, gammas, placements, args.batch)
    print(f"\n| run (N{args.steps}B{args.budget}, {args.samples} samples) | full steps | accuracy | Fréchet |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {len(r['full_steps'])} | {r['accuracy']:.4f} | {r['frechet']:.2f} |")
    if args.out:
        result = {"model": args.model, "shortcut": args.shortcut, "steps": args.steps, "budget": args.budget}
        with open(args.out, "w") as f:
            json.dump({**result, "samples": args.samples, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
