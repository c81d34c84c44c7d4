"""On-policy pairs for live training (`migm train --live --on-policy`), DAgger-style.

On-policy rollout batch j rolls out the samples of live batch j (same seeds and conditions) with the
shortcut of that moment in the loop at a budget B < N (`budgets[j % len(budgets)]`, placed as the
shortcut places them), through the one rollout (`dump.rollout_rows` with a predictor). At each
shortcut step s the wrapped predictor also runs the base on the token state the shortcut's own
choices produced (one extra base forward per visited step), so the pair it yields is

    (feature the sampler had after step s−1, new tokens of step s−1, mask ratio) → base's f_s

exactly what `sample` would feed the shortcut with that seed, and the base's answer to it.

The buffer holds the last `slots` on-policy batches and rolls the next one every `steps_per_batch`
optimizer steps from `start` on; draws are uniform over (row, visited step) from a generator seeded
by (seed, step, rank). The weights each buffered batch was rolled out with are kept (`snapshots`),
so a checkpoint carries them and a resumed run rolls the same batches out again, exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from migm.trajectories.base.protocol import ProbedPredictor
from migm.trajectories.checks import check_finite, check_int
from migm.trajectories.dump import rollout_rows, sample_major
from migm.trajectories.errors import MigmError
from migm.trajectories.pairs import pair_batch
from migm.trajectories.store.manifest import Plan


@dataclass
class OnPolicyConfig:
    fraction: float = 0.5  # share of each training batch drawn from on-policy pairs (after the ramp)
    budgets: list[int] = field(default_factory=lambda: [4])  # B of the on-policy rollouts, cycled over batches
    start: int = 0  # optimizer step of the first on-policy rollout (before it: teacher-forced pairs only)
    ramp: int = 0  # steps over which the share grows linearly from 0 to `fraction`


def check_on_policy(cfg: OnPolicyConfig, N: int) -> None:
    check_finite("--on-policy", cfg.fraction)
    if not 0 < cfg.fraction <= 1:
        raise MigmError(f"--on-policy is the share of on-policy pairs per batch, in (0, 1], got {cfg.fraction}")
    check_int("--on-policy-start", cfg.start, low=0)
    check_int("--on-policy-ramp", cfg.ramp, low=0)
    if not cfg.budgets:
        raise MigmError("--on-policy-budget needs at least one budget B")
    for B in cfg.budgets:
        if isinstance(B, bool) or not isinstance(B, int) or not 1 <= B < N:
            raise MigmError(f"--on-policy-budget B must satisfy 1 <= B < N = {N} (a shortcut step to visit), got {B}")


def on_policy_share(step: int, cfg: OnPolicyConfig) -> float:
    """Share of the batch of optimizer step `step` drawn from on-policy pairs: 0 before `start`, then a
    linear ramp over `ramp` steps to `fraction`."""
    if step < cfg.start:
        return 0.0
    if cfg.ramp == 0:
        return cfg.fraction
    return cfg.fraction * min(1.0, (step - cfg.start + 1) / cfg.ramp)


class TargetProbe(ProbedPredictor):
    """A predictor wrapped so each shortcut step also runs the base on the sampler's state: `true[s]`
    is the base's feature of step s ([rows, T, D], branch-major as the rollout's). Sampling is unchanged."""

    def __init__(self, inner):
        super().__init__(inner)
        self.true: dict[int, torch.Tensor] = {}

    def reset(self) -> None:
        self.true = {}
        super().reset()

    def record(self, step, out, base, tokens, cond) -> None:
        self.true[step] = base.forward(tokens, cond)[1]


def on_policy_rows(base, p: Plan, start: int, stop: int, predictor, budget: int, prompt_ids=None) -> dict:
    """Samples [start, stop) of `p` rolled out with `predictor` at `budget`: the dump's row fields with
    `features` the sampler's own (the predictor's at its steps), `true` the base's feature of every
    step on the sampler's states, and `visited` [rows, N] the shortcut steps."""
    probe = TargetProbe(predictor)
    rows = rollout_rows(base, p, start, stop, prompt_ids, predictor=probe, budget=budget)
    rows["true"] = rows["features"].copy()  # full steps: the sampler's feature is the base's
    visited = np.zeros((len(rows["tokens"]), p.dims.N), dtype=bool)
    for s, f in probe.true.items():
        f = f.to(torch.float16).cpu().numpy()
        rows["true"][:, s, : f.shape[1]] = sample_major(f, p.branches)
        visited[:, s] = True
    rows["visited"] = visited
    return rows


class OnPolicySource:
    """One rank's on-policy rollouts and their buffer; `batch(step, count)` draws `count` pairs.
    `make_policy(weights)` builds the predictor from shortcut weights; `current()` gives the weights
    to roll out with now (a copy)."""

    def __init__(
        self,
        base,
        p: Plan,
        cfg: OnPolicyConfig,
        samples: Callable[[int], tuple[int, int]],
        slots: int,
        steps_per_batch: int,
        make_policy: Callable[[dict], object],
        current: Callable[[], dict],
        rank: int = 0,
        first_step: int = 0,
    ):
        check_on_policy(cfg, p.dims.N)
        self.base, self.plan, self.cfg, self.samples, self.rank = base, p, cfg, samples, rank
        self.slots, self.steps_per_batch = slots, steps_per_batch
        self.make_policy, self.current = make_policy, current
        self.prompt_ids = base.encode_prompts(p.text["prompts"]) if p.text is not None else None
        self.image_offset = None if p.text is None else p.text["image_offset"]
        self.buffer: dict[str, np.ndarray] | None = None
        self.weights: dict[int, dict] = {}  # rollout batch -> the weights it was rolled out with
        # batches still in the buffer at `first_step` are rolled out again (resume, with their stored weights)
        self.rolled = max(0, self.due(first_step - 1) - slots)

    def due(self, step: int) -> int:
        """How many on-policy batches have been rolled out by the end of `step`."""
        if step < self.cfg.start:
            return 0
        return (step - self.cfg.start) // self.steps_per_batch + 1

    def roll(self, j: int) -> None:
        weights = self.weights.get(j)
        if weights is None:
            weights = self.current()
        budget = self.cfg.budgets[j % len(self.cfg.budgets)]
        rows = on_policy_rows(
            self.base, self.plan, *self.samples(j), self.make_policy(weights), budget, self.prompt_ids
        )
        if self.buffer is None:
            cap = self.slots * len(rows["tokens"])
            self.buffer = {k: np.zeros((cap, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
        at = (j % self.slots) * len(rows["tokens"])
        for k, v in rows.items():
            self.buffer[k][at : at + len(v)] = v
        self.weights = {i: w for i, w in self.weights.items() if i > j - self.slots}
        self.weights[j] = weights

    def batch(self, step: int, count: int) -> dict[str, torch.Tensor] | None:
        """Roll out what is due by `step`, then draw `count` visited pairs (None: none)."""
        while self.rolled < self.due(step):
            self.roll(self.rolled)
            self.rolled += 1
        if count == 0 or self.buffer is None:
            return None
        filled = min(self.rolled, self.slots) * (len(self.buffer["tokens"]) // self.slots)
        rng = np.random.default_rng([self.plan.seed, step, self.rank, 1])
        r = rng.integers(0, filled, count)
        # pair s feeds shortcut step s + 1: a uniform draw over each row's visited steps
        candidates = self.buffer["visited"][r, 1:]
        ranks = np.cumsum(candidates, 1)
        pick = np.floor(rng.random(count) * ranks[:, -1]).astype(np.int64)
        s = np.argmax(ranks > pick[:, None], axis=1)
        batch = pair_batch(self.buffer, r, s, self.plan.dims.V, self.image_offset)
        batch["target"] = torch.from_numpy(self.buffer["true"])[torch.from_numpy(r), torch.from_numpy(s + 1)].float()
        return batch

    def snapshots(self) -> dict[str, torch.Tensor]:
        """The weights of the buffered batches, keyed "<batch>.<name>" (for the checkpoint)."""
        return {f"{j}.{k}": v for j, w in self.weights.items() for k, v in w.items()}

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        weights: dict[int, dict] = {}
        for key, v in tensors.items():
            j, _, name = key.partition(".")
            if not j.isdigit() or not name:
                raise MigmError(f"on-policy weights key {key!r} is malformed; the checkpoint is damaged")
            weights.setdefault(int(j), {})[name] = v
        self.weights = weights

    def trained_samples(self) -> int:
        """On-policy rollout batches rolled out so far (this rank)."""
        return self.rolled
