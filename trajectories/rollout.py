"""THE sampling loop. Vanilla sampling, shortcut sampling and trajectory dumping all run through
`rollout`: a predictor replaces the base at non-full steps, a recorder watches every step.

Randomness is per sample: sample i draws all its noise from its own seed, so a sample's trajectory
does not depend on which batch it ran in (dataset resume and sharding rely on this).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from migm.trajectories.base.protocol import Predictor
from migm.trajectories.checks import check_finite, check_int
from migm.trajectories.errors import MigmError
from migm.trajectories.schedule import check_full_steps, full_steps

LEGACY_SAMPLER = {"rule": "maskgit", "temperature": 1.0}  # what a sampler config without these keys means


@dataclass
class SamplerConfig:
    """The sampler: N steps, B full steps (None: all), CFG weight, the confidence noise and softmax
    temperatures of MaskGIT's rule, or the DiMOO rule and its temperature."""

    steps: int = 16  # N
    budget: int | None = None  # B full steps; None means every step is full
    guidance: float = 2.8  # CFG weight: MaskGIT's w reached at the last step (linear ramp), DiMOO's constant s
    r_temp: float = 7.0  # MaskGIT: Gumbel noise on confidence, annealed to 0
    sm_temp: float = 1.0  # MaskGIT: softmax temperature multiplier on logits
    rule: str = "maskgit"  # the name of the base's sampling rule (`base.rule`), recorded with the data
    temperature: float = 1.0  # DiMOO: Gumbel-max sampling temperature τ, also the confidence noise scale

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Finite, in-range values, checked wherever a config is made (options, manifests, zoo
        configs), so NaN or a negative temperature never reaches the loop or a file."""
        check_int("steps", self.steps, low=1)
        if self.budget is not None and (
            isinstance(self.budget, bool) or not isinstance(self.budget, int) or not 1 <= self.budget <= self.steps
        ):
            raise MigmError(f"budget must satisfy 1 <= budget <= steps ({self.steps}), got {self.budget!r}")
        check_finite("guidance", self.guidance, low=0)
        check_finite("r-temp", self.r_temp, low=0)
        check_finite("sm-temp", self.sm_temp)
        check_finite("temperature", self.temperature, low=0)
        if not isinstance(self.rule, str) or not self.rule:
            raise MigmError(f"sampling rule must be a rule's name, got {self.rule!r}")
        if self.sm_temp <= 0:  # a multiplier on the logits: 0 or below ignores or inverts the model
            raise MigmError(f"sm-temp must be above 0, got {self.sm_temp}")

    def to_dict(self) -> dict:
        """The fields, less `rule` and `temperature` when they hold the values files written before they
        existed mean (such files, and their fingerprints, stay as they were)."""
        d = asdict(self)
        if all(d[k] == v for k, v in LEGACY_SAMPLER.items()):
            for k in LEGACY_SAMPLER:
                del d[k]
        return d

    @classmethod
    def for_base(cls, base, steps: int, budget: int | None = None, **overrides: float | None) -> SamplerConfig:
        """The base's own sampler defaults, overridden by what the user set (None: not set); steps and
        budget checked against the base's L."""
        values = {**base.sampler_defaults, **{k: v for k, v in overrides.items() if v is not None}}
        values.pop("steps", None)  # the base's default N is the command's business
        values["rule"] = base.rule.name
        base.rule.unmask_counts(base.L, steps)
        if budget is not None:
            full_steps(steps, budget)
        return cls(steps=steps, budget=budget, **values)


# recorder(step, feature [batch·branches, T, D], new_ids [batch, k], new_pos [batch, k]) after each step
Recorder = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class RolloutResult:
    tokens: torch.Tensor  # [batch, L] final tokens
    order: torch.Tensor  # [batch, L] step at which each position was unmasked
    step_times: list[float] = field(default_factory=list)  # seconds per step
    full: list[int] = field(default_factory=list)  # indices of the full steps

    @property
    def total_time(self) -> float:
        return float(sum(self.step_times))


def sample_seeds(seed: int, start: int, count: int) -> list[int]:
    """Per-sample seeds derived from the run seed and the sample's global index."""
    return [
        int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0] >> 1) for i in range(start, start + count)
    ]


def _noise(seeds: list[int], N: int, L: int, device: torch.device) -> torch.Tensor:
    """[batch, N, 2, L] uniforms: per step, one for token sampling and one for the Gumbel confidence."""
    out = torch.empty(len(seeds), N, 2, L)
    for i, s in enumerate(seeds):
        out[i] = torch.rand(N, 2, L, generator=torch.Generator().manual_seed(s))
    return out.clamp_(1e-10, 1 - 1e-7).to(device)


class _StepClock:
    """Per-step wall time; CUDA events on GPU so the loop is not synchronised every step."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.marks.append(e)
        else:
            self.marks.append(time.perf_counter())

    def durations(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def stack_cond(cond: torch.Tensor, null: torch.Tensor) -> torch.Tensor:
    """Conditional rows then unconditional rows; prompt ids of different lengths are right-padded with -1."""
    if cond.dim() == 2 and cond.shape[1] != null.shape[1]:
        width = max(cond.shape[1], null.shape[1])
        cond = torch.nn.functional.pad(cond, (0, width - cond.shape[1]), value=-1)
        null = torch.nn.functional.pad(null, (0, width - null.shape[1]), value=-1)
    return torch.cat([cond, null])


def autocast(base) -> torch.autocast:
    """Autocast for the base's precision (a no-op at fp32); logits are sampled in fp32 regardless."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(base.precision)
    return torch.autocast(base.device.type, dtype=dtype, enabled=dtype is not None)


def rule_of(base, config: SamplerConfig):
    """The base's sampling rule, which the config must be made for."""
    if config.rule != base.rule.name:
        raise MigmError(
            f"the sampler config is for the {config.rule!r} rule; --model {base.name} samples by {base.rule.name!r}"
        )
    return base.rule


def choose_full_steps(predictor: Predictor | None, N: int, budget: int | None) -> list[int]:
    """The full steps of a rollout: the predictor's own choice, its placement of a budget B < N, or
    the uniform rule (B = N is vanilla, whatever the predictor); a budget below N needs a predictor."""
    B = budget if budget is not None else N
    own = predictor.full_steps(N) if predictor is not None else None
    if own is not None:
        if budget is not None:
            raise MigmError("this predictor chooses its own full steps; leave the budget (--budget) unset")
        return check_full_steps(own, N)
    if predictor is None and B < N:
        raise MigmError(f"a budget of {B} full steps below N = {N} needs a predictor (--shortcut or --predictor)")
    if predictor is not None and B < N:
        full = check_full_steps(predictor.place(N, B), N)
        if len(full) != B:
            raise MigmError(f"the predictor placed {len(full)} full steps for a budget of {B}")
        return full
    return full_steps(N, B)


def step_logits(base, predictor, s: int, full_step: bool, rows, cond, feature, step_input, text_rows):
    """(logits, feature) of step s for the token rows [R, L] of both branches: the base (or the predictor's
    `full_forward`, which may record what it needs) at a full step, else the predictor's feature through
    the base's head."""
    if full_step:
        if predictor is None:
            return base.forward(rows, cond)
        logits, feature = predictor.full_forward(base, rows, cond)
        predictor.observe(s, feature)
        return logits, feature
    state = {"base": base, "tokens": rows, "cond": cond} if predictor.needs_state else {}  # recomputes from tokens
    feature = predictor.predict(s, feature, *step_input, **text_rows, **state)
    return base.head(feature, cond), feature


def commit(rule, config: SamplerConfig, logits, noise_s, tokens, order, mask_id: int, s: int, k: int):
    """Sample a code at every cell, then commit the k most confident masked cells (in place in `tokens`
    and `order`). Returns the committed codes and cells [batch, k]."""
    sampled, confidence = rule.choose_tokens(config, logits, noise_s[:, 0], noise_s[:, 1], s)
    confidence = confidence.masked_fill(tokens != mask_id, -torch.inf)
    new_pos = confidence.topk(k, dim=-1).indices
    new_ids = sampled.gather(-1, new_pos)
    tokens.scatter_(1, new_pos, new_ids)
    order.scatter_(1, new_pos, s)
    return new_ids, new_pos


def branch_rows(base, cond: torch.Tensor, branches: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The condition of each row of the branches (conditional rows first, then unconditional), each row's
    branch (0 conditional, 1 unconditional), and for text rows their real positions (`feat_valid`)."""
    batch = len(cond)
    branch_cond = stack_cond(cond, base.null_cond(batch).to(cond.device)) if branches == 2 else cond
    branch = torch.arange(branches, device=cond.device).repeat_interleave(batch)
    feat_valid = base.feature_valid(branch_cond)
    return branch_cond, branch, {} if feat_valid is None else {"feat_valid": feat_valid}  # only text rows are padded


@torch.no_grad()
def rollout(
    base,
    cond: torch.Tensor,
    seeds: list[int],
    config: SamplerConfig,
    predictor: Predictor | None = None,
    recorder: Recorder | None = None,
    noise: torch.Tensor | None = None,
) -> RolloutResult:
    """Sample `len(cond)` token grids with `config.steps` steps under the base's rule.

    `cond` is class ids [batch] or, for text bases, prompt ids [batch, P] right-padded with -1. With CFG
    (guidance > 0) the conditional and unconditional branches run as one batch of 2·batch rows, conditional
    first; features handed to the predictor and recorder cover both branches. `noise` [batch, N, 2, L]
    replaces the uniforms the seeds would draw (to replay a reference run's draws).
    """
    N, L, device, rule = config.steps, base.L, base.device, rule_of(base, config)
    counts = rule.unmask_counts(L, N)
    full = choose_full_steps(predictor, N, config.budget)
    if len(seeds) != len(cond):
        raise MigmError(f"got {len(seeds)} seeds for {len(cond)} samples")

    batch, cfg = len(cond), config.guidance > 0
    branches = 2 if cfg else 1
    branch_cond, branch, text_rows = branch_rows(base, cond.to(device), branches)
    noise = _noise(seeds, N, L, device) if noise is None else noise.to(device)
    tokens = torch.full((batch, L), base.mask_id, dtype=torch.long, device=device)
    order = torch.full((batch, L), -1, dtype=torch.long, device=device)
    remaining, is_full = L, [s in full for s in range(N)]

    if predictor is not None:
        predictor.reset()
    clock = _StepClock(device)
    clock.mark()
    feature = step_input = None
    with autocast(base):  # fp32 unless the base was loaded with --precision bf16/fp16
        for s in range(N):
            if remaining == 0:  # a MaskGIT schedule may reach L early: the published loop stops here
                break
            rows = tokens.repeat(branches, 1)
            logits, feature = step_logits(
                base, predictor, s, is_full[s], rows, branch_cond, feature, step_input, text_rows
            )
            logits = logits.float()
            if cfg:
                logits = rule.guide(logits[:batch], logits[batch:], config.guidance, s, N)
            new_ids, new_pos = commit(rule, config, logits, noise[:, s], tokens, order, base.mask_id, s, counts[s])
            remaining -= counts[s]
            if recorder is not None:
                recorder(s, feature, new_ids, new_pos)
            if s + 1 < N and not is_full[s + 1]:
                new_emb, pos, valid = base.new_tokens(new_ids, new_pos, branch_cond, branch)
                ratio = torch.full((batch * branches,), remaining / L, device=device)
                step_input = (new_emb, pos, valid, ratio)
            clock.mark()

    return RolloutResult(tokens=tokens, order=order, step_times=clock.durations(), full=full)
