"""`migm train`: fit a shortcut to a trajectory dataset with HF accelerate, then export it.

The loop, in a fixed order: learning rate from `get_lr(step)` → batch → loss on the positions still
masked after the step (MSE on features, optional KL between the base head's distributions) →
finite check → backward, clip, step → EMA → log → checkpoint. One process by default; under
torchrun or `accelerate launch` each rank streams its own blocks of rows and DDP averages gradients.
A checkpoint (accelerate `save_state` + the data position) resumes bit-for-bit on one process.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from shortcut_zoo.archs import build
from shortcut_zoo.evaluate import masked_positions, predict, relative_cost, validate
from trajectories.base import get_base
from trajectories.errors import MigmError
from trajectories.pairs import PairStream, pair_loader
from trajectories.store.dataset import open_dataset

CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    data: str
    arch: str = "tiny-transformer"
    out: str = "zoo/tiny-transformer"
    arch_config: dict = field(default_factory=dict)  # e.g. {"bottleneck": 2, "blocks": 1}
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    ema: float = 0.999
    loss: str = "mse"  # mse | mse+kl
    kl_weight: float = 0.1
    val_fraction: float = 0.05
    seed: int = 0
    workers: int = 0
    grad_clip: float = 1.0
    save_every: int = 500
    stop_at: int | None = None  # stop after this step with a checkpoint (time-boxing; resume later)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def split_rows(manifest: dict, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out samples (both CFG branches of each) by a seeded draw; rows are sample-major."""
    n, branches = manifest["num_samples"], manifest["branches"]
    n_val = int(round(n * val_fraction))
    if not 0 <= n_val < n:
        raise MigmError(f"val-fraction {val_fraction} leaves no training samples out of {n}")
    val = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    rows = np.arange(n * branches)
    return rows[~is_val[rows // branches]], rows[is_val[rows // branches]]


class EMA:
    """Exponential moving average of a model's floating-point state; checkpointed by accelerate."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))  # warm-up: short runs still average
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1 - decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}


def shortcut_loss(pred: torch.Tensor, batch: dict, base, cfg: TrainConfig) -> torch.Tensor:
    keep = masked_positions(batch, pred.shape[1])
    loss = ((pred - batch["target"]) ** 2).mean(-1)[keep].mean()
    if cfg.loss == "mse+kl":
        L = batch["still_masked"].shape[1]
        log_p = F.log_softmax(base.head(pred).float(), -1)
        log_q = F.log_softmax(base.head(batch["target"]).float(), -1)
        kl = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1)
        loss = loss + cfg.kl_weight * kl[keep[:, :L]].mean()
    return loss


def check_config(cfg: TrainConfig) -> None:
    if cfg.loss not in ("mse", "mse+kl"):
        raise MigmError(f"loss must be mse or mse+kl, got {cfg.loss!r}")
    for name in ("steps", "batch_size"):
        if getattr(cfg, name) < 1:
            raise MigmError(f"{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if not 0 < cfg.lr < 1:
        raise MigmError(f"lr must be in (0, 1), got {cfg.lr}")
    if not 0 <= cfg.ema < 1:
        raise MigmError(f"ema must be in [0, 1), got {cfg.ema}")


def train(cfg: TrainConfig, device: str = "auto", resume: bool = False,
          progress: Callable[[int, float, float], None] | None = None) -> dict:  # fmt: skip
    """Train, validate and export a shortcut to `cfg.out`; returns the exported config."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from shortcut_zoo.export import export_shortcut

    check_config(cfg)
    ds = open_dataset(cfg.data)
    manifest = ds.manifest
    out = Path(cfg.out)
    if not out.parent.is_dir():
        raise MigmError(f"output directory {str(out.parent)!r} does not exist")
    ckpt = out / CHECKPOINT
    if resume and not (ckpt / "train_state.json").exists():
        raise MigmError(f"nothing to resume: {ckpt} has no checkpoint")
    if not resume and ((out / "config.json").exists() or ckpt.exists()):
        raise MigmError(f"{out} already holds a shortcut; pass --resume to continue it, or choose another --out")

    accelerator = Accelerator(cpu=device == "cpu" or not torch.cuda.is_available())
    set_seed(cfg.seed)  # the same initial weights on every rank
    base = get_base(manifest["base"]["name"], device=str(accelerator.device))
    if base.fingerprint != manifest["base"]["fingerprint"]:
        raise MigmError(f"dataset {cfg.data} was dumped from another {base.name} (fingerprint differs)")
    model = build(cfg.arch, dim=base.D, **cfg.arch_config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = accelerator.prepare(model, opt)
    ema = EMA(accelerator.unwrap_model(model), cfg.ema)
    accelerator.register_for_checkpointing(ema)

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "losses": []}
    if resume:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "train_state.json").read_text())
    train_rows, val_rows = split_rows(manifest, cfg.val_fraction, cfg.seed)
    stream = PairStream(cfg.data, batch_size=cfg.batch_size, rows=train_rows, seed=cfg.seed,
                        rank=accelerator.process_index, world=accelerator.num_processes)  # fmt: skip
    if stream.num_pairs() == 0:
        raise MigmError(f"rank {accelerator.process_index} has no training rows; use a larger dataset")

    def save_checkpoint() -> None:
        accelerator.save_state(str(ckpt))
        if accelerator.is_main_process:
            (ckpt / "train_state.json").write_text(json.dumps(state))

    stop = min(cfg.steps, cfg.stop_at or cfg.steps)
    pairs, t0 = 0, time.perf_counter()
    model.train()
    while state["step"] < stop:
        stream.set_epoch(state["epoch"])
        for i, batch in enumerate(pair_loader(stream, cfg.workers)):
            if i < state["batch_in_epoch"]:
                continue  # resuming mid-epoch: these batches were consumed before the checkpoint
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            for group in opt.param_groups:
                group["lr"] = get_lr(state["step"], cfg)
            loss = shortcut_loss(predict(model, base, batch), batch, base, cfg)
            if not torch.isfinite(loss):
                raise MigmError(f"loss became {loss.item()} at step {state['step']}; lower --lr or check the dataset")
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(accelerator.unwrap_model(model))
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            state["losses"].append(loss.item())
            pairs += len(batch["step"]) * accelerator.num_processes
            if progress is not None and accelerator.is_main_process:
                progress(state["step"], loss.item(), pairs / (time.perf_counter() - t0))
            if state["step"] % cfg.save_every == 0 or state["step"] == stop:
                save_checkpoint()
            if state["step"] >= stop:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    seconds = time.perf_counter() - t0
    accelerator.wait_for_everyone()
    if state["step"] < cfg.steps:  # time-boxed run: the checkpoint is the result
        return {"stopped_at": state["step"], "checkpoint": str(ckpt), "processes": accelerator.num_processes,
                "losses": state["losses"]}  # fmt: skip

    result = None
    if accelerator.is_main_process:
        final = build(cfg.arch, dim=base.D, **cfg.arch_config).to(accelerator.device)
        final.load_state_dict(ema.shadow)
        val = PairStream(cfg.data, batch_size=256, rows=val_rows, shuffle=False)
        metrics = validate(final, base, pair_loader(val), manifest["dims"]["N"] - 1, accelerator.device)
        cost = relative_cost(final, base, manifest["dims"]["N"])
        training = {**asdict(cfg), "processes": accelerator.num_processes, "seconds": seconds,
                    "pairs_per_second": pairs / seconds, "final_loss": state["losses"][-1]}  # fmt: skip
        result = export_shortcut(out, final, cfg.arch, base, manifest, metrics, cost, training)
        result["losses"] = state["losses"]
    accelerator.wait_for_everyone()
    return result or {"processes": accelerator.num_processes, "losses": state["losses"]}
