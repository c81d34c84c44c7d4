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


# recorder(step, feature [B·branches, T, D], new_ids [B, k], new_pos [B, k]) after each step
Recorder = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class RolloutResult:
    tokens: torch.Tensor  # [B, L] final tokens
    order: torch.Tensor  # [B, L] step at which each position was unmasked
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
    """[B, N, 2, L] uniforms: per step, one for token sampling and one for the Gumbel confidence."""
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


def choose_full_steps(predictor: Predictor | None, N: int, B: int, budget_given: bool) -> list[int]:
    """The full steps of a rollout: the predictor's own choice, its placement of a budget B < N, or
    the uniform rule (B = N is vanilla, whatever the predictor)."""
    own = predictor.full_steps(N) if predictor is not None else None
    if own is not None:
        if budget_given:
            raise MigmError("this predictor chooses its own full steps; leave the budget (--budget) unset")
        return check_full_steps(own, N)
    if predictor is not None and B < N:
        full = check_full_steps(predictor.place(N, B), N)
        if len(full) != B:
            raise MigmError(f"the predictor placed {len(full)} full steps for a budget of {B}")
        return full
    return full_steps(N, B)


@torch.no_grad()
def rollout(
    base,
    cond: torch.Tensor,
    seeds: list[int],
    config: SamplerConfig,
    predictor: Predictor | None = None,
    recorder: Recorder | None = None,
) -> RolloutResult:
    """Sample `len(cond)` token grids with `config.steps` steps under the base's rule.

    `cond` is class ids [B] or, for text bases, prompt ids [B, P] right-padded with -1. With CFG
    (guidance > 0) the conditional and unconditional branches run as one batch of 2B, conditional
    first; features handed to the predictor and recorder cover both branches.
    """
    N, L, device, rule = config.steps, base.L, base.device, base.rule
    if config.rule != rule.name:
        raise MigmError(
            f"the sampler config is for the {config.rule!r} rule; --model {base.name} samples by {rule.name!r}"
        )
    B_full = config.budget if config.budget is not None else N
    counts = rule.unmask_counts(L, N)
    full = choose_full_steps(predictor, N, B_full, config.budget is not None)
    if predictor is None and B_full < N:
        raise MigmError(f"a budget of {B_full} full steps below N = {N} needs a predictor (--shortcut or --predictor)")
    if len(seeds) != len(cond):
        raise MigmError(f"got {len(seeds)} seeds for {len(cond)} samples")

    batch = len(cond)
    cond = cond.to(device)
    cfg = config.guidance > 0
    branches = 2 if cfg else 1
    branch_cond = stack_cond(cond, base.null_cond(batch).to(device)) if cfg else cond
    branch = torch.arange(branches, device=device).repeat_interleave(batch)  # 0 conditional, 1 unconditional
    feat_valid = base.feature_valid(branch_cond)
    padding = {} if feat_valid is None else {"feat_valid": feat_valid}  # only text rows are padded
    noise = _noise(seeds, N, L, device)
    tokens = torch.full((batch, L), base.mask_id, dtype=torch.long, device=device)
    order = torch.full((batch, L), -1, dtype=torch.long, device=device)
    remaining = L
    is_full = [False] * N
    for s in full:
        is_full[s] = True

    if predictor is not None:
        predictor.reset()
    clock = _StepClock(device)
    clock.mark()
    feature = step_input = None
    with autocast(base):  # fp32 unless the base was loaded with --precision bf16/fp16
        for s in range(N):
            if is_full[s]:
                if predictor is not None:  # a predictor may record what it needs at the full steps
                    logits, feature = predictor.full_forward(base, tokens.repeat(branches, 1), branch_cond)
                    predictor.observe(s, feature)
                else:
                    logits, feature = base.forward(tokens.repeat(branches, 1), branch_cond)
            else:
                state = {}
                if predictor.needs_state:  # a predictor that recomputes from the tokens
                    state = {"base": base, "tokens": tokens.repeat(branches, 1), "cond": branch_cond}
                feature = predictor.predict(s, feature, *step_input, **padding, **state)
                logits = base.head(feature, branch_cond)

            logits = logits.float()
            if cfg:
                logits = rule.guide(logits[:batch], logits[batch:], config.guidance, s, N)

            # Sample a code at every cell, then commit the k most confident masked cells.
            sampled, confidence = rule.choose_tokens(config, logits, noise[:, s, 0], noise[:, s, 1], s)
            confidence = confidence.masked_fill(tokens != base.mask_id, -torch.inf)
            k = counts[s]
            new_pos = confidence.topk(k, dim=-1).indices
            new_ids = sampled.gather(-1, new_pos)
            tokens.scatter_(1, new_pos, new_ids)
            order.scatter_(1, new_pos, s)
            remaining -= k

            if recorder is not None:
                recorder(s, feature, new_ids, new_pos)
            if s + 1 < N and not is_full[s + 1]:
                new_emb, pos, valid = base.new_tokens(new_ids, new_pos, branch_cond, branch)
                ratio = torch.full((batch * branches,), remaining / L, device=device)
                step_input = (new_emb, pos, valid, ratio)
            clock.mark()

    return RolloutResult(tokens=tokens, order=order, step_times=clock.durations(), full=full)
