"""Training pairs straight from the base, without a dataset (`migm train --live`).

Live sample i is sample i of a dump with the same plan (seed, classes or prompts, sampler): it is
rolled out by `dump.rollout_rows`, the one rollout with the dump's recorder, so its pairs are the
dump's pairs. Samples 0 … val_samples−1 are held out (rolled out once, for validation); training
samples follow in rollout batches of `batch_size` samples, rank r of W rolling out the batches
g = j·W + r (samples val_samples + g·batch_size onwards). Each rank keeps its last `slots` batches
in a replay buffer (batch j in slot j mod slots) and rolls out its next batch every `steps_per_batch`
optimizer steps, so each pair is drawn about `replay` times. Draws are uniform over the buffer, from a
generator seeded by (seed, optimizer step, rank): the buffer and the draws are functions of the step,
and a resumed run rolls out the buffer's batches again and continues exactly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np
import torch

from migm.trajectories.checks import check_finite, check_int
from migm.trajectories.dump import DumpConfig, plan, rollout_rows
from migm.trajectories.errors import MigmError
from migm.trajectories.pairs import pair_batch, window_batch
from migm.trajectories.schedule import full_steps
from migm.trajectories.store.codecs import Codec
from migm.trajectories.store.dataset import TrajectoryDataset
from migm.trajectories.store.manifest import Plan


@dataclass
class LiveConfig:
    steps: int | None = None  # sampling steps N of the rollouts (None: the base's default, else 16)
    classes: list[int] | None = None  # class bases (default: every class)
    prompts: list[str] | None = None  # text bases: sample i is conditioned on prompts[i % len(prompts)]
    guidance: float | None = None
    r_temp: float | None = None
    sm_temp: float | None = None
    temperature: float | None = None
    batch_size: int = 64  # samples per rollout batch (each gives batch_size × branches rows)
    buffer: int = 16384  # pairs the replay buffer holds, rounded down to whole rollout batches (at least one)
    replay: float = 4.0  # how many times each rolled-out pair is drawn for training, on average
    val_samples: int = 64  # held-out samples 0 … val_samples−1, rolled out once for validation


def live_plan(base, cfg: LiveConfig, seed: int) -> Plan:
    """The dump plan whose samples live training rolls out (num_samples: the held-out samples)."""
    check_int("--live-batch", cfg.batch_size)
    check_int("--buffer", cfg.buffer)
    check_int("--val-samples", cfg.val_samples)
    check_finite("--replay", cfg.replay)
    if cfg.replay <= 0:
        raise MigmError(f"--replay must be above 0, got {cfg.replay}")
    dump = DumpConfig(
        num_samples=cfg.val_samples,
        steps=cfg.steps if cfg.steps is not None else base.sampler_defaults.get("steps", 16),
        batch_size=cfg.batch_size,
        seed=seed,
        classes=cfg.classes,
        prompts=cfg.prompts,
        guidance=cfg.guidance,
        r_temp=cfg.r_temp,
        sm_temp=cfg.sm_temp,
        temperature=cfg.temperature,
    )
    return plan(dump, base)


def live_fingerprint(p: Plan, cfg: LiveConfig, extra: dict | None = None) -> str:
    """sha256 over what defines a live run's pairs: base, sampler, conditions, seed, and how they are
    rolled out and replayed (a resume must match it); `extra`: what else draws them (on-policy
    rollouts, budget-aware chains), left out when unset so older fingerprints stay."""
    d = p.plan_dict()
    content = {k: d[k] for k in ("base", "sampler", "dims", "seed", "classes", "branches", "text") if k in d}
    content["live"] = {k: v for k, v in asdict(cfg).items() if k in ("batch_size", "buffer", "replay", "val_samples")}
    content |= {k: v for k, v in (extra or {}).items() if v is not None}
    return "live-" + hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


class MemoryDataset(TrajectoryDataset):
    """Rows held in memory, read as a dataset (the held-out live samples, for the same validation)."""

    def __init__(self, p: Plan, rows: dict[str, np.ndarray]):
        self.root, self.manifest, self.dims, self.codec = None, p, p.dims, Codec()
        self.data = rows

    def __len__(self) -> int:
        return len(self.data["tokens"])

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        return {k: v[start:stop] for k, v in self.data.items()}

    def ensure_whole(self) -> None:
        pass


def heldout_rows(base, p: Plan, batch_size: int) -> dict[str, np.ndarray]:
    """Rows of the held-out samples 0 … num_samples−1, rolled out in batches."""
    parts = [rollout_rows(base, p, a, min(a + batch_size, p.num_samples)) for a in range(0, p.num_samples, batch_size)]
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def chain_windows(N: int, B: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the chains a sampler at N, B runs: from each full step s_k (true feature)
    the shortcut predicts f_{s_k+1} … f_{s_{k+1}−1}, pairs s_k … s_{k+1}−2; chains of length 0 dropped."""
    if not 1 <= B < N:
        raise MigmError(f"--chain-budget B must satisfy 1 <= B < N = {N} (a shortcut step to chain), got {B}")
    full = full_steps(N, B)
    ends = [*full[1:], N]
    starts = np.array([s for s, e in zip(full, ends) if e - s > 1])
    return starts, np.array([e - s - 1 for s, e in zip(full, ends) if e - s > 1])


def chain_batch(
    rows: dict[str, np.ndarray],
    r: np.ndarray,
    rng: np.random.Generator,
    chains: tuple[np.ndarray, np.ndarray],
    N: int,
    mask_id: int,
    image_offset: int | None = None,
) -> dict[str, torch.Tensor]:
    """Chains drawn uniformly for rows r, as a window batch of the longest chain's K steps (steps past a
    chain's end repeat pair N−2 and are masked out by `chain_length`; `chain_step` is each pair's k)."""
    starts, lengths = chains
    w = rng.integers(0, len(starts), len(r))
    K = int(lengths.max())
    steps = np.concatenate([np.minimum(starts[w] + k, N - 2) for k in range(K)])
    batch = pair_batch(rows, np.tile(r, K), steps, mask_id, image_offset)
    batch["chain_length"] = torch.from_numpy(np.tile(lengths[w], K))
    batch["chain_step"] = torch.from_numpy(np.repeat(np.arange(K), len(r)))  # k of each pair: K is known
    return batch


class LiveSource:
    """One rank's rollouts and replay buffer; `batch(step)` is the training batch of an optimizer step."""

    def __init__(
        self,
        base,
        p: Plan,
        cfg: LiveConfig,
        train_batch: int,
        window: int = 1,
        rank: int = 0,
        world: int = 1,
        first_step: int = 0,
        chain_budget: int | None = None,
    ):
        N = p.dims.N
        if not 1 <= window <= N - 1:
            raise MigmError(f"a rollout window must be 1 to N - 1 = {N - 1} steps of the live N = {N}, got {window}")
        # budget-aware chaining: windows are the runs of shortcut steps between the full steps of (N, B)
        self.chains = None if chain_budget is None else chain_windows(N, chain_budget)
        if self.chains is not None:
            window = int(self.chains[1].max())
        self.base, self.plan, self.cfg = base, p, cfg
        self.window, self.rank, self.world, self.train_batch = window, rank, world, train_batch
        self.rows_per_batch = cfg.batch_size * p.branches
        self.slots = max(1, cfg.buffer // (self.rows_per_batch * (N - 1)))
        windows = N - window if self.chains is None else len(self.chains[0])  # per row
        self.steps_per_batch = max(1, round(self.rows_per_batch * windows * cfg.replay / train_batch))
        self.prompt_ids = base.encode_prompts(p.text["prompts"]) if p.text is not None else None
        self.mask_id = p.dims.V
        self.image_offset = None if p.text is None else p.text["image_offset"]
        self.buffer: dict[str, np.ndarray] | None = None
        # batches still in the buffer at `first_step` are rolled out again (resume); older ones never
        self.rolled = max(0, first_step // self.steps_per_batch - self.slots + 1)

    def samples(self, j: int) -> tuple[int, int]:
        """Sample ids [start, stop) of this rank's rollout batch j."""
        start = self.cfg.val_samples + (j * self.world + self.rank) * self.cfg.batch_size
        return start, start + self.cfg.batch_size

    def roll(self, j: int) -> None:
        rows = rollout_rows(self.base, self.plan, *self.samples(j), self.prompt_ids)
        if self.buffer is None:
            cap = self.slots * self.rows_per_batch
            self.buffer = {k: np.zeros((cap, *v.shape[1:]), dtype=v.dtype) for k, v in rows.items()}
        at = (j % self.slots) * self.rows_per_batch
        for k, v in rows.items():
            self.buffer[k][at : at + len(v)] = v

    def batch(self, step: int, count: int | None = None) -> dict[str, torch.Tensor] | None:
        """Roll out what is due by `step`, then draw `count` (default `train_batch`) windows from the
        buffer (None: count 0)."""
        while self.rolled <= step // self.steps_per_batch:
            self.roll(self.rolled)
            self.rolled += 1
        count = self.train_batch if count is None else count
        if count == 0:
            return None
        filled = min(self.rolled, self.slots) * self.rows_per_batch
        rng = np.random.default_rng([self.plan.seed, step, self.rank])
        r = rng.integers(0, filled, count)
        if self.chains is not None:
            return chain_batch(self.buffer, r, rng, self.chains, self.plan.dims.N, self.mask_id, self.image_offset)
        s = rng.integers(0, self.plan.dims.N - self.window, count)
        return window_batch(self.buffer, r, s, self.window, self.mask_id, self.image_offset)

    def trained_samples(self) -> list[int]:
        """[first, stop) of the sample ids rolled out for training so far, all ranks together (every
        rank rolls out as many batches)."""
        first = self.cfg.val_samples
        return [first, first + self.rolled * self.world * self.cfg.batch_size]
