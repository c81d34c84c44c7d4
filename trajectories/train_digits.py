"""Train the shipped maskgit-digits base and its digit classifier (seeded, reproducible).

    python -m migm.trajectories.train_digits --out trajectories/base/weights

Classifier first (seconds), then the MaskGIT (masked-token cross-entropy, MaskGIT's cosine masking
schedule, label dropout for CFG, 1-pixel shifts). While training it logs the conditioning gap:
held-out masked-token loss with the right label vs a wrong one at 95% masking. At the end it sweeps
guidance and temperatures on the held-out classifier and records the best as sampler defaults.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from migm.trajectories.base.digits import LEVELS, DigitClassifier, decode_digits, load_digits_split, score_digits, shift
from migm.trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer, masked_token_loss
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds

print = functools.partial(print, flush=True)  # progress shows up in logs as it happens


def train_classifier(data: dict, seed: int, epochs: int = 60, log=print) -> tuple[DigitClassifier, float]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clf = DigitClassifier()
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-4)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    steps = epochs * math.ceil(len(x) / 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    clf.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            loss = F.cross_entropy(clf(shift(x[idx], g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    clf.eval()
    with torch.no_grad():
        acc = (
            (clf(torch.from_numpy(data["x_test"])).argmax(-1) == torch.from_numpy(data["y_test"])).float().mean().item()
        )
    log(f"classifier: held-out accuracy {acc:.4f}")
    return clf.requires_grad_(False), acc


def random_masks(n: int, L: int, g: torch.Generator) -> torch.Tensor:
    """MaskGIT training masks: ratio cos(u·π/2), u ~ U(0, 1), at least one masked position."""
    ratio = torch.cos(torch.rand(n, generator=g) * math.pi / 2)
    k = (ratio * L).ceil().clamp(1, L)
    rank = torch.rand(n, L, generator=g).argsort(-1).argsort(-1)
    return rank < k.view(n, 1)


@torch.no_grad()
def conditioning_gap(net: MaskTransformer, x: torch.Tensor, y: torch.Tensor, seed: int = 123) -> dict:
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(x.shape, generator=g) < 0.95
    wrong = (y + torch.randint(1, 10, y.shape, generator=g)) % 10
    net.eval()
    out = {
        "right": masked_token_loss(net, x, y, masked).item(),
        "wrong": masked_token_loss(net, x, wrong, masked).item(),
        "null": masked_token_loss(net, x, torch.full_like(y, 10), masked).item(),
    }
    net.train()
    return out


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train_base(data: dict, args, log=print) -> MaskTransformer:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    cfg = MaskGITConfig(
        grid=8,
        codebook_size=LEVELS,
        num_classes=10,
        hidden_dim=args.width,
        depth=args.depth,
        heads=args.heads,
        mlp_dim=4 * args.width,
        dropout=args.dropout,
    )
    net = MaskTransformer(cfg).train()
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "emb" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "emb" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95)
    )
    x = torch.from_numpy(data["x_train"]).view(-1, 8, 8)
    y = torch.from_numpy(data["y_train"])
    x_te, y_te = torch.from_numpy(data["x_test"]).view(-1, 64), torch.from_numpy(data["y_test"])
    t0 = time.time()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        idx = torch.randint(0, len(x), (args.batch_size,), generator=g)
        tokens = shift(x[idx], g).reshape(-1, 64)
        cond = y[idx].masked_fill(torch.rand(len(idx), generator=g) < args.label_drop, 10)
        loss = masked_token_loss(net, tokens, cond, random_masks(len(idx), 64, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps - 1:
            gap = conditioning_gap(net, x_te, y_te)
            log(
                f"step {step:5d} loss {loss.item():.3f} | held-out @95% mask: right {gap['right']:.3f} "
                f"wrong {gap['wrong']:.3f} null {gap['null']:.3f} | {time.time() - t0:.0f}s"
            )
    return net.eval().requires_grad_(False)


def sweep_sampler(base: MaskGIT, clf: DigitClassifier, per_class: int, log=print) -> dict:
    """Pick the guidance and temperatures by held-out classifier accuracy and Fréchet distance.

    sm_temp multiplies the logits, so values below 1 flatten them: the grid reaches down to 0.5
    (an earlier grid stopped at 1.0, its edge, and left the sampler under-dispersed)."""
    labels = torch.arange(10).repeat_interleave(per_class)
    seeds = sample_seeds(999, 0, len(labels))
    results = []
    for w in (2.0, 3.0, 4.0, 6.0):
        for r_temp in (3.0, 6.0, 9.0):
            for sm_temp in (0.5, 0.6, 0.7, 0.8, 1.0):
                cfg = SamplerConfig(steps=16, guidance=w, r_temp=r_temp, sm_temp=sm_temp)
                tokens = torch.cat(
                    [
                        rollout(base, labels[i : i + 250], seeds[i : i + 250], cfg).tokens
                        for i in range(0, len(labels), 250)
                    ]
                )
                s = score_digits(tokens, labels, clf)
                results.append({"guidance": w, "r_temp": r_temp, "sm_temp": sm_temp, **s})
                log(
                    f"  w={w:<4} r_temp={r_temp:<3} sm_temp={sm_temp:<3} acc {s['accuracy']:.3f} frechet {s['frechet']:.3f}"
                )
    good = [r for r in results if r["accuracy"] >= 0.95]
    best = min(good, key=lambda r: r["frechet"]) if good else max(results, key=lambda r: r["accuracy"])
    return {"chosen": {k: best[k] for k in ("guidance", "r_temp", "sm_temp")}, "sweep": results}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "weights"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=2600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--label-drop", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--sweep-per-class", type=int, default=50)
    p.add_argument(
        "--sweep-only", action="store_true", help="re-sweep the sampler of the weights in --out; no training"
    )
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep_only:
        return resweep(out, args.sweep_per_class)
    data = load_digits_split()

    clf, clf_acc = train_classifier(data, args.seed)
    save_file(clf.state_dict(), str(out / "digit-classifier.safetensors"))
    clf_meta = {"model": {"width": 32, "feature_dim": 64}, "heldout_accuracy": clf_acc, "seed": args.seed}
    (out / "digit-classifier.json").write_text(json.dumps(clf_meta, indent=2) + "\n")

    net = train_base(data, args)
    base = MaskGIT("maskgit-digits", net.cfg, net, decode_digits)
    sweep = sweep_sampler(base, clf, args.sweep_per_class)
    print("chosen sampler defaults:", sweep["chosen"])
    save_file(net.state_dict(), str(out / "maskgit-digits.safetensors"))
    meta = {
        "model": asdict(net.cfg),
        "sampler": sweep["chosen"],
        "training": vars(args) | {"out": None},
        "sampler_sweep": sweep["sweep"],
    }
    (out / "maskgit-digits.json").write_text(json.dumps(meta, indent=2) + "\n")


def resweep(out: Path, per_class: int) -> None:
    """Sweep the sampler of already trained weights and record the new defaults in their JSON
    (the weights, hence the fingerprint, stay as they are)."""
    from migm.trajectories.base.digits import load_classifier, load_maskgit_digits

    base, clf = load_maskgit_digits(out), load_classifier(out)
    sweep = sweep_sampler(base, clf, per_class)
    print("chosen sampler defaults:", sweep["chosen"])
    meta_path = out / "maskgit-digits.json"
    meta = json.loads(meta_path.read_text())
    meta.update(sampler=sweep["chosen"], sampler_sweep=sweep["sweep"])
    meta["training"]["sweep_per_class"] = per_class
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
