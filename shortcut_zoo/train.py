"""`migm train`: fit a shortcut to a trajectory dataset, or to live rollouts of the base
(`live`, `trajectories.live`: a bounded replay buffer, no dataset), with HF accelerate, then export it.

The loop, in a fixed order: learning rate from `get_lr(step)` → batch → loss on the positions still
masked after the step (MSE on features, optional KL between the base head's distributions; with
`rollout` K > 1, summed with weights over K chained steps from one true feature) →
finite check → backward, clip, step → EMA → log → checkpoint. One process by default; under
torchrun or `accelerate launch` each rank streams its own blocks of rows (live: rolls out its own
samples) and DDP averages gradients.
A checkpoint (`shortcut_zoo.checkpoint`: safetensors + JSON, never a pickle, renamed into place
whole) resumes bit-for-bit on one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from migm.shortcut_zoo.archs import build_for_base
from migm.shortcut_zoo.checkpoint import CHECKPOINT, check_out_folder, load_checkpoint, read_extra, save_checkpoint
from migm.shortcut_zoo.cost import relative_cost
from migm.shortcut_zoo.evaluate import chained_errors, masked_positions, predict, validate
from migm.shortcut_zoo.on_policy import (
    check_training,
    fingerprint_extra,
    mixed_live_batches,
    mixed_loss,
    on_policy_source,
    trained_on_policy,
)
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.checks import check_finite, check_int, check_seed, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.live import LiveConfig, LiveSource, MemoryDataset, heldout_rows, live_fingerprint, live_plan
from migm.trajectories.on_policy import OnPolicyConfig
from migm.trajectories.pairs import PairStream, pair_loader, split_window
from migm.trajectories.store.cache import CacheConfig
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.manifest import Manifest


@dataclass
class TrainConfig:
    """The options of `migm train`: data (or a live rollout), arch and its options, optimisation, loss,
    validation, checkpoints and rollout training (`rollout` = K chained steps per window)."""

    data: str | None  # dataset folder; None with `live`
    arch: str | None = None  # None: the base's own (`base.shortcut_arch`: dimoo-transformer for DiMOO)
    out: str = "zoo/tiny-transformer"
    arch_config: dict = field(default_factory=dict)  # e.g. {"bottleneck": 2, "blocks": 1}
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: int = 100
    lr_schedule: str = "cosine"  # cosine: to 10% of the peak at the end | step: x0.1 from lr_decay_step on (published)
    lr_decay_step: int = 1000  # the published `--step_decay` milestone
    ema: float = 0.999
    loss: str = "mse"  # mse | mse+kl
    mse_weight: float = 1.0
    mse_positions: str = "masked"  # masked: image cells still masked after the step | all: every real position
    kl_weight: float = 0.1  # with loss mse+kl
    kl_temperature: float = 1.0  # T: KL between softmax(logits / T), scaled by T² (as published)
    val_fraction: float = 0.05
    seed: int = 0
    workers: int = 0
    grad_clip: float = 1.0
    save_every: int = 500
    stop_at: int | None = None  # stop after this step with a checkpoint (time-boxing; resume later)
    rollout: int = 1  # K: chain the shortcut over K steps from a true feature (1: one-step pairs)
    rollout_weights: list[float] | None = None  # loss weight of each chained step (None: equal)
    live: LiveConfig | None = None  # train from live rollouts of the base instead of a dataset
    on_policy: OnPolicyConfig | None = None  # live: mix in pairs rolled out with the shortcut in the loop
    chain_budget: int | None = None  # live: chain between the full steps of (N, this B) (rollout_weights per step)
    storage_options: dict | None = None  # a dataset at an fsspec URL: options of its filesystem
    cache: CacheConfig | None = None  # a dataset on a store: streamed through this bounded local cache


def get_lr(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak, or (`step`) the peak until
    `lr_decay_step` and a tenth of it from there on (the published MultiStepLR, gamma 0.1)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 if step >= cfg.lr_decay_step else 1.0)
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def split_rows(manifest: Manifest, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out samples (both CFG branches of each) by a seeded draw; rows are sample-major."""
    n, branches = manifest.num_samples, manifest.branches
    n_val = int(round(n * val_fraction))
    if not 0 <= n_val < n:
        raise MigmError(f"val-fraction {val_fraction} leaves no training samples out of {n}")
    val = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    is_val = np.zeros(n, dtype=bool)
    is_val[val] = True
    rows = np.arange(n * branches)
    return rows[~is_val[rows // branches]], rows[is_val[rows // branches]]


class EMA:
    """Exponential moving average of a model's floating-point state; its shadow is checkpointed as
    safetensors by `shortcut_zoo.checkpoint` (never registered with accelerate, which pickles it)."""

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


def shortcut_loss(pred: torch.Tensor, batch: dict, base, cfg: TrainConfig) -> torch.Tensor:
    """On the positions still masked after the step: mse_weight · MSE of the features, plus with
    `mse+kl` kl_weight · T² · KL(target ‖ prediction) of the base head's softmax(logits / T), per
    position (the published `loss_fn`; T² keeps the gradient scale independent of T)."""
    keep = masked_positions(batch, pred.shape[1])
    if cfg.mse_positions == "all":  # every real position of the sequence, as the published DiMOO trainer
        keep = batch.get("feat_valid", torch.ones_like(keep))
    loss = cfg.mse_weight * ((pred - batch["target"]) ** 2).mean(-1)[keep].mean()
    if cfg.loss == "mse+kl":
        T = cfg.kl_temperature
        log_p = F.log_softmax(base.head(pred, batch.get("cond")).float() / T, -1)
        log_q = F.log_softmax(base.head(batch["target"], batch.get("cond")).float() / T, -1)
        kl = F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1)
        loss = loss + cfg.kl_weight * T * T * kl[batch["still_masked"]].mean()
    return loss


def rollout_loss(model, base, batch: dict, cfg: TrainConfig) -> torch.Tensor:
    """Loss of a window batch: from the true f_s, the shortcut is chained over steps s … s+K−1 with the
    recorded new tokens of each step (its own prediction as the next input, gradients through the
    chain), and the loss at chained step k against the recorded f_{s+k+1} is weighted by w_k / Σw.
    K = 1 is the one-step loss."""
    steps = split_window(batch, cfg.rollout)
    weights = cfg.rollout_weights or [1.0] * cfg.rollout
    feature, total = steps[0]["feature"], 0.0
    for w, step in zip(weights, steps):
        pred = predict(model, base, {**step, "feature": feature})
        total = total + w * shortcut_loss(pred, step, base, cfg)
        feature = pred
    return total / sum(weights)


MAX_STEPS = 10**9  # optimizer steps, warm-up and decay milestones: past any run (and past 1e20)


def check_numbers(cfg: TrainConfig) -> None:
    """Every number of the run finite and in range, before any tensor is built (a NaN compares
    False with every bound, so each is checked as `check_finite` does, never with `<` alone)."""
    check_int("--steps", cfg.steps, high=MAX_STEPS)
    check_int("--batch-size", cfg.batch_size, high=2**20)
    check_int("--warmup", cfg.warmup, low=0, high=MAX_STEPS)
    check_int("--lr-decay-step", cfg.lr_decay_step, low=0, high=MAX_STEPS)
    check_finite("--lr", cfg.lr, low=0, high=1)
    if not 0 < cfg.lr < 1:
        raise MigmError(f"--lr must be in (0, 1), got {cfg.lr}")
    check_finite("--ema", cfg.ema, low=0)
    if not cfg.ema < 1:
        raise MigmError(f"--ema must be in [0, 1), got {cfg.ema}")
    check_finite("--weight-decay", cfg.weight_decay, low=0, high=1e3)
    check_finite("--grad-clip", cfg.grad_clip, low=0)
    check_finite("--mse-weight", cfg.mse_weight, low=0)
    check_finite("--kl-weight", cfg.kl_weight, low=0)
    check_finite("--kl-temperature", cfg.kl_temperature)
    if not cfg.kl_temperature > 0:
        raise MigmError(f"kl-temperature must be positive, got {cfg.kl_temperature}")


def check_config(cfg: TrainConfig) -> None:
    if cfg.loss not in ("mse", "mse+kl"):
        raise MigmError(f"loss must be mse or mse+kl, got {cfg.loss!r}")
    if cfg.mse_positions not in ("masked", "all"):
        raise MigmError(f"mse-positions must be masked or all, got {cfg.mse_positions!r}")
    check_int("--workers", cfg.workers, low=0, high=256)
    check_int("--save-every", cfg.save_every)
    check_int("--stop-at", cfg.stop_at)
    check_int("--rollout", cfg.rollout)
    weights = cfg.rollout_weights
    if weights is not None:
        if len(weights) != cfg.rollout and cfg.chain_budget is None:  # a chain's length is known with N
            raise MigmError(f"--rollout-weights needs one weight per chained step ({cfg.rollout}), got {len(weights)}")
        if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
            raise MigmError(f"--rollout-weights must be finite, at least 0 and not all 0, got {weights}")
    check_seed(cfg.seed)
    check_finite("--val-fraction", cfg.val_fraction, low=0, high=1)
    if "dim" in cfg.arch_config:
        raise MigmError(
            "arch option dim is the base's feature width D, taken from the dataset's base; it cannot be set"
        )
    check_numbers(cfg)
    if cfg.lr_schedule not in ("cosine", "step"):
        raise MigmError(f"lr-schedule must be cosine or step, got {cfg.lr_schedule!r}")
    if cfg.mse_weight == 0 and (cfg.loss == "mse" or cfg.kl_weight == 0):
        raise MigmError("the loss is zero: give --mse-weight, or --loss mse+kl with a --kl-weight above 0")


def dataset_batches(stream: PairStream, state: dict, workers: int):
    """(index in epoch, batch) of the current epoch, after the batches a resumed run consumed already."""
    stream.set_epoch(state["epoch"])
    for i, batch in enumerate(pair_loader(stream, workers)):
        if i >= state["batch_in_epoch"]:  # resuming mid-epoch: earlier batches were consumed before the checkpoint
            yield i, batch


def live_batches(live: LiveSource, state: dict):
    """(step, batch) without end: the live source rolls out what is due and draws from its buffer."""
    while True:
        yield state["step"], live.batch(state["step"])


def training_base(cfg: TrainConfig, spec: BaseSpec, ds, device: str):
    """The base to train against (the dataset's when `spec` names none) on `device`, and the manifest of
    the samples: the dataset's, or (live) the plan of the dump whose samples are rolled out."""
    if spec.name is None:  # the base the dataset names; real checkpoints still need their files
        if ds is None:
            raise MigmError("--live rolls out a base: give it with --model (and its checkpoint options)")
        spec = replace(spec, name=ds.manifest.base.name)
    base = load_base(replace(spec, device=device))
    if ds is None:
        return base, live_plan(base, cfg.live, cfg.seed)
    manifest = ds.manifest
    if base.fingerprint != manifest.base.fingerprint:
        raise MigmError(
            f"dataset {cfg.data} was dumped from {manifest.base.name} with fingerprint "
            f"{manifest.base.fingerprint[:12]}, but the base given has fingerprint "
            f"{base.fingerprint[:12]} ({base.name}); pass the same --model / --checkpoint as the dump"
        )
    if base.L != manifest.dims.L:
        raise MigmError(
            f"dataset {cfg.data} has L = {manifest.dims.L} image cells, the base given {base.L}; "
            "pass the dump's --height / --width"
        )
    return base, manifest


@dataclass
class Run:
    """One training job's parts: what the loop steps and what a checkpoint saves."""

    cfg: TrainConfig
    out: Path
    accelerator: Any
    base: Any
    manifest: Any  # Manifest, or the live plan
    ds: Any  # the dataset (None: live)
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    ema: EMA
    provenance: dict  # what a checkpoint must match to be continued by this run
    state: dict = field(default_factory=lambda: {"step": 0, "epoch": 0, "batch_in_epoch": 0, "losses": []})
    batches: Callable = None  # () -> (index, batch) of one epoch (live: endless)
    val_rows: np.ndarray | None = None
    live: LiveSource | None = None
    policy: Any = None  # the on-policy source (OnPolicySource), with --on-policy


def start_run(cfg: TrainConfig, spec: BaseSpec, ds, out: Path, resume: bool) -> Run:
    """The base, the model and its optimizer and EMA (restored from the checkpoint with `resume`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=spec.device == "cpu" or not torch.cuda.is_available())
    set_seed(cfg.seed)  # the same initial weights on every rank
    base, manifest = training_base(cfg, spec, ds, str(accelerator.device))
    cfg = replace(cfg, arch=cfg.arch or base.shortcut_arch)
    model = build_for_base(cfg.arch, base, **cfg.arch_config)
    provenance = {
        "dataset": manifest.fingerprint()
        if ds is not None
        else live_fingerprint(manifest, cfg.live, fingerprint_extra(cfg)),
        "arch": cfg.arch,
        "arch_config": asdict(model.cfg),
        "rollout": cfg.rollout,
    }
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, opt = accelerator.prepare(model, opt)
    ema = EMA(accelerator.unwrap_model(model), cfg.ema)
    run = Run(cfg, out, accelerator, base, manifest, ds, model, opt, ema, provenance)
    if resume:
        run.state = load_checkpoint(out, accelerator, model, opt, ema, provenance)
    return run


def attach_pairs(run: Run) -> None:
    """This rank's training batches: a shuffled stream of the dataset's training rows, or live rollouts."""
    cfg, rank, world = run.cfg, run.accelerator.process_index, run.accelerator.num_processes
    if run.ds is not None:
        train_rows, run.val_rows = split_rows(run.manifest, cfg.val_fraction, cfg.seed)
        stream = PairStream(
            run.ds,
            batch_size=cfg.batch_size,
            rows=train_rows,
            seed=cfg.seed,
            rank=rank,
            world=world,
            window=cfg.rollout,
        )
        if stream.num_pairs() == 0:
            raise MigmError(f"rank {rank} has no training rows; use a larger dataset")
        run.batches = lambda: dataset_batches(stream, run.state, cfg.workers)
    else:
        step = run.state["step"]
        run.live = LiveSource(
            run.base, run.manifest, cfg.live, cfg.batch_size, cfg.rollout, rank, world, step, cfg.chain_budget
        )
        run.batches = lambda: live_batches(run.live, run.state)
        if cfg.on_policy is not None:
            unwrapped = run.accelerator.unwrap_model(run.model)
            run.policy = on_policy_source(run.live, cfg.on_policy, unwrapped, run.ema, step)
            run.policy.restore(read_extra(run.out) if step else {})
            run.batches = lambda: mixed_live_batches(run.live, run.policy, run.state)


def train_step(run: Run, batch: dict) -> float:
    """One optimizer step: learning rate, loss, finite check, backward, clip, step, EMA. Returns the loss."""
    cfg, accelerator, model, opt = run.cfg, run.accelerator, run.model, run.opt
    for group in opt.param_groups:
        group["lr"] = get_lr(run.state["step"], cfg)
    loss = mixed_loss(model, run.base, batch, cfg, lambda b: rollout_loss(model, run.base, b, cfg), shortcut_loss)
    if not torch.isfinite(loss):
        raise MigmError(f"loss became {loss.item()} at step {run.state['step']}; lower --lr or check the dataset")
    accelerator.backward(loss)
    if cfg.grad_clip > 0:  # 0: no clipping (the published trainer clips none)
        accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    run.ema.update(accelerator.unwrap_model(model))
    return loss.item()


def train_loop(run: Run, stop: int, progress: Callable[[int, float, float], None] | None) -> tuple[int, float]:
    """Steps until `stop`, checkpointing every `save_every` and at the end. Returns (pairs, seconds)."""
    accelerator, state = run.accelerator, run.state
    pairs, t0 = 0, time.perf_counter()
    run.model.train()
    while state["step"] < stop:
        for i, batch in run.batches():  # one epoch of the dataset; live: endless
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            loss = train_step(run, batch)
            state["step"] += 1
            state["batch_in_epoch"] = i + 1
            state["losses"].append(loss)
            pairs += len(batch["step"]) * accelerator.num_processes  # teacher-forced windows
            if progress is not None and accelerator.is_main_process:
                progress(state["step"], loss, pairs / (time.perf_counter() - t0))
            if state["step"] % run.cfg.save_every == 0 or state["step"] == stop:
                extra = None if run.policy is None else run.policy.snapshots()
                save_checkpoint(run.out, accelerator, run.model, run.opt, run.ema, state, run.provenance, extra)
            if state["step"] >= stop:
                break
        else:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0
    return pairs, time.perf_counter() - t0


def export_trained(run: Run, pairs: int, seconds: float) -> dict:
    """The EMA weights validated on the held-out pairs (live: the held-out samples, rolled out once) and
    exported to the zoo folder with their metrics, chained errors and cost."""
    from migm.shortcut_zoo.export import export_shortcut

    cfg, base, manifest, device = run.cfg, run.base, run.manifest, run.accelerator.device
    final = build_for_base(cfg.arch, base, **cfg.arch_config).to(device)
    final.load_state_dict(run.ema.shadow)
    ds, val_rows = run.ds, run.val_rows
    if ds is None:
        ds, val_rows = MemoryDataset(manifest, heldout_rows(base, manifest, cfg.live.batch_size)), None
    val = PairStream(ds, batch_size=256, rows=val_rows, shuffle=False)
    metrics = validate(final, base, pair_loader(val), manifest.dims.N - 1, device)
    step_errors = chained_errors(final, base, val, device)
    cost = relative_cost(final, base, manifest.dims.N)
    training = {
        **{k: v for k, v in asdict(cfg).items() if k != "storage_options"},  # may hold credentials
        "processes": run.accelerator.num_processes,
        "seconds": seconds,
        "pairs_per_second": pairs / seconds,
        "final_loss": run.state["losses"][-1],
    }
    trained_live = None
    if cfg.live is not None:
        trained_live = {
            "fingerprint": run.provenance["dataset"],
            "seed": cfg.seed,
            "training_samples": run.live.trained_samples(),
            "validation_samples": [0, cfg.live.val_samples],
        }
        if run.policy is not None:
            trained_live["on_policy"] = trained_on_policy(run.policy, run.accelerator.num_processes)
    result = export_shortcut(
        run.out, final, cfg.arch, base, manifest, metrics, cost, training, step_errors, live=trained_live
    )
    return {**result, "losses": run.state["losses"]}


def train(
    cfg: TrainConfig,
    spec: BaseSpec | None = None,
    resume: bool = False,
    progress: Callable[[int, float, float], None] | None = None,
) -> dict:
    """Train, validate and export a shortcut to `cfg.out`; returns the exported config.
    Check the config and folder → load the base, model, optimizer (resume: the checkpoint) → pairs →
    the loop → (a time-boxed run stops at its checkpoint) → validate and export on the main process."""
    from migm.shortcut_zoo.export import CONFIG

    check_config(cfg)
    check_training(cfg)
    if (cfg.data is None) == (cfg.live is None):
        raise MigmError("give a dataset (--data DIR) or --live with a base (--model), not both")
    ds = open_dataset(cfg.data, storage_options=cfg.storage_options, cache=cfg.cache) if cfg.live is None else None
    out = Path(cfg.out)
    check_out_folder(out, resume, marker=CONFIG)
    run = start_run(cfg, spec or BaseSpec(), ds, out, resume)
    attach_pairs(run)
    writable_dir(out, "--out folder")  # before any work, so a bad path never wastes a run
    pairs, seconds = train_loop(run, min(cfg.steps, cfg.stop_at or cfg.steps), progress)
    accelerator, state = run.accelerator, run.state
    accelerator.wait_for_everyone()
    if state["step"] < cfg.steps:  # time-boxed run: the checkpoint is the result
        ckpt = str(out / CHECKPOINT)
        return {
            "stopped_at": state["step"],
            "checkpoint": ckpt,
            "processes": accelerator.num_processes,
            "losses": state["losses"],
        }
    result = export_trained(run, pairs, seconds) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return result or {"processes": accelerator.num_processes, "losses": state["losses"]}
