"""Which aMUSEd tensor should the shortcut predict? Held-out fidelity and cost of the two candidates on a
tiny random aMUSEd (the tests' diffusers folder at 8×8 cells), trained the same way:

- `up`: the up block's output (head = the MLM layer), the base's default;
- `transformer`: the up block's input, i.e. the transformer's output projected back to the cells (head =
  the up block, which is conditioned on the prompt, + the MLM layer).

    python benchmarks/amused_feature.py [--samples 96] [--train-steps 400] [--json benchmarks/results/amused-feature.json]

Per feature: a dump of `--samples` trajectories (N = 8, CFG at the pipeline's scale, prompts cycling), a
tiny-transformer shortcut trained on it, and its held-out validation (cosine of the features, MSE over the
`cache` peer's, top-1 agreement of the head's logits with the base's) with the counted FLOPs of one
shortcut step (shortcut + head) over a base forward at these dims. The released dims' costs are
benchmarks/amused_flops.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

PROMPTS = ["the red cat", "a dog", "the dog", "a red cat", "the cat", "a red dog"]


def load_transformer_feature(checkpoint: str | None = None):
    """The same folder with the up block's input as the feature (registered for this run only)."""
    from migm.trajectories.base.amused import load_amused

    base = load_amused(checkpoint, feature="transformer")
    base.name = "amused-transformer-feature"
    return base


def run(folder: Path, work: Path, name: str, samples: int, train_steps: int) -> dict:
    from migm.shortcut_zoo.train import TrainConfig, train
    from migm.trajectories.base import BaseSpec, load_base
    from migm.trajectories.dump import DumpConfig, dump_trajectories

    spec = BaseSpec(name, checkpoint=str(folder), device="cpu")
    base = load_base(spec)
    ds = work / f"ds-{name}"
    dump_trajectories(
        DumpConfig(out=str(ds), num_samples=samples, steps=8, prompts=PROMPTS, batch_size=16, shard_size=32), base
    )
    config = train(
        TrainConfig(data=str(ds), out=str(work / f"zoo-{name}"), steps=train_steps, batch_size=64, val_fraction=0.25),
        spec,
    )
    overall = config["metrics"]["overall"]
    cost = config["cost"]
    return {
        "feature": "up" if name == "amused" else "transformer",
        "D": base.D,
        "val_cos": overall["cos"],
        "mse_over_cache": overall["mse_ratio_to_cache"],
        "agreement": overall["agree"],
        "cache_agreement": overall["cache_agree"],
        "head_over_base": cost["head_flops"] / cost["base_flops"],
        "step_over_base": (cost["shortcut_flops"] + cost["head_flops"]) / cost["base_flops"],
        "val_positions": overall["positions"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=96)
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    from amused_folder import write_amused

    from migm.trajectories.base import registry

    registry.BUILTIN["amused-transformer-feature"] = ("__main__", "load_transformer_feature", "benchmark only")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_amused(Path(tmp) / "amused-tiny", sample_size=8)
        rows = [
            run(folder, Path(tmp), name, args.samples, args.train_steps)
            for name in ("amused", "amused-transformer-feature")
        ]
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float)) and k in rows[1]]
    print("| " + " | ".join(["feature", *keys]) + " |")
    print("|" + "---|" * (len(keys) + 1))
    for r in rows:
        print("| " + " | ".join([r["feature"], *(f"{r[k]:.4g}" for k in keys)]) + " |")
    print(json.dumps(rows, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
