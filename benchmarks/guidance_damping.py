"""Does a shortcut weaken classifier-free guidance? Per shortcut step, the CFG branch difference it predicts
against the base's on the same state.

    .venv/bin/python benchmarks/guidance_damping.py --shortcut zoo/a [zoo/b …] [--steps 16 --budget 2]

MaskGIT's CFG samples from the conditional logits pushed away from the unconditional ones, so the class
signal of a shortcut step is the difference between its two branches' features. At each shortcut step of
`--samples` class-conditional rollouts (classes cycling 0–9, seeds 0…) the base also runs on the sampler's
state, and the table gives the mean norm, over the still-masked cells, of the predicted difference
(cond − uncond), of the base's, their ratio (1: guidance kept; below 1: damped), and the conditional
branch's feature error. Prints a markdown table and writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.predictors import make_predictor
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.protocol import ProbedPredictor
from migm.trajectories.rollout import SamplerConfig, rollout


class BranchProbe(ProbedPredictor):
    """Records, per shortcut step, |pred_c − pred_u|, |true_c − true_u| and |pred_c − true_c| (mean over
    the conditional rows' still-masked cells; rows are branch-major, conditional first)."""

    def __init__(self, inner):
        super().__init__(inner)
        self.sums: dict[int, torch.Tensor] = {}

    def record(self, step, out, base, tokens, cond) -> None:
        L, half = tokens.shape[1], out.shape[0] // 2
        true, out = base.forward(tokens, cond)[1][:, :L].float(), out[:, :L].float()  # the image cells
        masked = (tokens[:half] == base.mask_id).float()
        norms = [
            (a * masked[..., None]).norm(dim=-1).sum() for a in (out[:half] - out[half:], true[:half] - true[half:])
        ]
        error = ((out[:half] - true[:half]) * masked[..., None]).norm(dim=-1).sum()
        self.sums[step] = self.sums.get(step, torch.zeros(4)) + torch.stack([*norms, error, masked.sum()])

    def rows(self) -> list[dict]:
        out = []
        for step, (pred, true, error, cells) in sorted(self.sums.items()):
            pred, true, error = float(pred / cells), float(true / cells), float(error / cells)
            out.append({"step": step, "pred_diff": pred, "true_diff": true, "ratio": pred / true, "cond_error": error})
        return out


def measure(base, shortcut: str, steps: int, budget: int, samples: int, batch: int) -> list[dict]:
    config = SamplerConfig.for_base(base, steps, budget)
    probe = BranchProbe(make_predictor("shortcut", load_shortcut(shortcut, base)))
    with torch.no_grad():
        for start in range(0, samples, batch):
            seeds = list(range(start, min(samples, start + batch)))
            rollout(base, torch.tensor(seeds) % 10, seeds, config, predictor=probe)
    return probe.rows()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shortcut", nargs="+", required=True, help="zoo folders")
    p.add_argument("--model", default="maskgit-digits", help="a class-conditional base with CFG")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--budget", type=int, default=2)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--out", default=None, help="write the rows here (JSON)")
    args = p.parse_args()
    base = load_base(BaseSpec(args.model, device="cpu"))
    if base.sampler_defaults.get("guidance", 0) <= 0:
        p.error(f"--model {args.model} samples without guidance: there is no branch difference to measure")
    result = {"model": args.model, "steps": args.steps, "budget": args.budget, "samples": args.samples}
    result["shortcuts"] = {
        s: measure(base, s, args.steps, args.budget, args.samples, args.batch) for s in args.shortcut
    }
    print(f"N{args.steps}B{args.budget}, {args.samples} samples\n")
    print("| shortcut | step | predicted branch difference | base's | ratio | cond. feature error |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, rows in result["shortcuts"].items():
        for r in rows:
            print(
                f"| {Path(name).name} | {r['step']} | {r['pred_diff']:.3f} | {r['true_diff']:.3f} "
                f"| {r['ratio']:.3f} | {r['cond_error']:.3f} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
