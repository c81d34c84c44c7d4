"""Training on the states the shortcut will meet (`migm train --live --on-policy`, `--chain-budget`).

- On-policy pairs (`trajectories.on_policy`): the base rolled out with the current shortcut (its EMA
  weights, as exported) in the loop at a budget B; each batch mixes `share(step)` on-policy pairs
  with teacher-forced ones, and the loss is the pair-weighted mean of the two parts' losses.
- Budget-aware chaining: teacher-forced windows are the runs of shortcut steps between the full steps
  of (N, B): from a full step's true feature the shortcut is chained to the next full step with a
  loss (MSE, and the KL term with `mse+kl`) at every chained step, weighted by `rollout_weights`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch

from migm.shortcut_zoo.evaluate import predict
from migm.shortcut_zoo.predictors import ShortcutPredictor
from migm.trajectories.errors import MigmError
from migm.trajectories.live import LiveSource
from migm.trajectories.on_policy import OnPolicyConfig, OnPolicySource, on_policy_share
from migm.trajectories.pairs import split_window

POLICY = "policy/"  # prefix of the on-policy part's keys in a mixed batch


def policy_factory(model: torch.nn.Module):
    """`make_policy(weights)`: a shortcut predictor with those weights, on a private copy of `model`
    (a copy, not a fresh build: building would draw from the RNG and change the training run)."""
    copy_ = copy.deepcopy(model).eval()

    def make(weights: dict) -> ShortcutPredictor:
        copy_.load_state_dict(weights)
        return ShortcutPredictor(copy_)

    return make


def on_policy_source(live: LiveSource, cfg: OnPolicyConfig, model, ema, first_step: int) -> OnPolicySource:
    """The on-policy source beside a live source: its batch j rolls out live batch j's samples, with
    the buffer and replay sized as the live one's for the visited pairs (`fraction` of each batch)."""
    N = live.plan.dims.N
    visited = sum(N - B for B in cfg.budgets) / len(cfg.budgets)  # shortcut steps per row, mean over budgets
    draws = max(1e-9, cfg.fraction * live.train_batch)
    steps_per_batch = max(1, round(live.rows_per_batch * visited * live.cfg.replay / draws))
    return OnPolicySource(
        live.base,
        live.plan,
        cfg,
        live.samples,
        live.slots,
        steps_per_batch,
        policy_factory(model),
        lambda: {k: v.detach().clone() for k, v in ema.shadow.items()},
        live.rank,
        first_step,
    )


def mixed_live_batches(live: LiveSource, source: OnPolicySource, state: dict):
    """(step, batch) without end: `share(step)` of the batch from on-policy pairs (keys prefixed
    `policy/`), the rest (at least one) teacher-forced."""
    while True:
        step = state["step"]
        n_policy = min(live.train_batch - 1, round(live.train_batch * on_policy_share(step, source.cfg)))
        tf = live.batch(step, live.train_batch - n_policy)
        policy = source.batch(step, n_policy)
        batch = dict(tf or {})
        if policy is not None:
            batch |= {POLICY + k: v for k, v in policy.items()}
        yield step, batch


def chain_loss(model, base, batch: dict, cfg, loss_fn) -> torch.Tensor:
    """Loss of a chain batch (`LiveSource` with a chain budget): chained step k from the shortcut's own
    step k−1 (the full step's true feature at k = 0), `loss_fn` over the chains still running at k,
    weighted by w_k / Σ w_k over the steps any chain reaches."""
    K = int(batch["chain_step"].max()) + 1
    steps = split_window(batch, K)
    weights = cfg.rollout_weights or [1.0] * K
    if len(weights) != K:
        raise MigmError(f"--rollout-weights needs one weight per step of the longest chain ({K}), got {len(weights)}")
    feature, total, used = steps[0]["feature"], 0.0, 0.0
    for k, (w, step) in enumerate(zip(weights, steps)):
        active = step["chain_length"] > k
        part = {name: v[active] for name, v in step.items()}
        pred = predict(model, base, {**part, "feature": feature[active]})
        total, used = total + w * loss_fn(pred, part, base, cfg), used + w
        feature = feature.masked_scatter(active[:, None, None], pred) if k + 1 < K else feature
    return total / used


def mixed_loss(model, base, batch: dict, cfg, teacher_loss, loss_fn) -> torch.Tensor:
    """Pair-weighted mean of the teacher-forced part's loss (`teacher_loss`, or `chain_loss` for
    chain batches) and the on-policy part's one-step loss."""
    policy = {k[len(POLICY) :]: v for k, v in batch.items() if k.startswith(POLICY)}
    teacher = {k: v for k, v in batch.items() if not k.startswith(POLICY)}
    parts = []
    if teacher:
        windows = cfg.rollout if "chain_step" not in teacher else int(teacher["chain_step"].max()) + 1
        n = len(teacher["step"]) // windows
        loss = chain_loss(model, base, teacher, cfg, loss_fn) if "chain_length" in teacher else teacher_loss(teacher)
        parts.append((n, loss))
    if policy:
        parts.append((len(policy["step"]), loss_fn(predict(model, base, policy), policy, base, cfg)))
    if len(parts) == 1:  # one kind of pair: its loss as is
        return parts[0][1]
    return sum(n * loss for n, loss in parts) / sum(n for n, _ in parts)


def check_training(cfg) -> None:
    """On-policy pairs and budget-aware chains are drawn from live rollouts; a chain is its own window."""
    from migm.trajectories.checks import check_int

    if (cfg.on_policy is not None or cfg.chain_budget is not None) and cfg.live is None:
        raise MigmError("--on-policy and --chain-budget train from live rollouts: add --live --model NAME")
    if cfg.chain_budget is not None:
        check_int("--chain-budget", cfg.chain_budget)
        if cfg.rollout != 1:
            raise MigmError("--chain-budget chains between the full steps of (N, B): leave --rollout at 1")


def fingerprint_extra(cfg) -> dict:
    """What on-policy training and chains add to a live run's fingerprint (a resume must match it)."""
    return {
        "on_policy": None if cfg.on_policy is None else asdict(cfg.on_policy),
        "chain_budget": cfg.chain_budget,
    }


def trained_on_policy(source: OnPolicySource | None, world: int) -> dict | None:
    """What the zoo config and card record of the on-policy rollouts (None: none)."""
    if source is None:
        return None
    return {**asdict(source.cfg), "rollout_batches": source.rolled * world}
