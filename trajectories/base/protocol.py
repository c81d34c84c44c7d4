"""The public interface a base, its sampling rule and a predictor follow (see DESIGN.md, Contracts).

A base is any object with these attributes and methods; it registers under a name (built in, or
through the `migm.bases` entry-point group, see `registry.py`), and every command runs it through the
one rollout. The rollout asks the base for its `rule` (a `SamplingRule`) and calls a predictor's hooks
directly: the optional hooks' defaults live in `PredictorDefaults`, never behind attribute probing.
docs/add-a-base.md walks through a complete tiny base.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

# scorer(tokens [n, L], labels [n]) -> {metric: value}
Scorer = Callable[[torch.Tensor, torch.Tensor], dict]
# statistics(tokens, labels) -> {metric: statistic(sample indices) -> float}, for bootstrap intervals
ScoreStatistics = Callable[[torch.Tensor, torch.Tensor], dict]


class SamplingRule(Protocol):
    """A family's sampling rule: how many cells each step commits, how the CFG branches mix, and how
    tokens are drawn and ranked. Pure functions of their inputs; the randomness comes in as uniforms
    (`u_sample`, `u_gumbel` [B, L] per step) drawn per sample by the rollout."""

    name: str  # recorded in datasets and zoo configs (SamplerConfig.rule)

    def unmask_counts(self, L: int, N: int) -> list[int]:
        """Cells committed at each of N steps (sums to L; a step may commit none)."""
        ...

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, guidance: float, s: int, N: int) -> torch.Tensor:
        """The guided logits [B, L, V] of step s from the two branches' logits."""
        ...

    def choose_tokens(
        self, config, logits: torch.Tensor, u_sample: torch.Tensor, u_gumbel: torch.Tensor, s: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A code at every cell [B, L] and its confidence [B, L] (the rollout commits the most
        confident masked cells); `config` is the SamplerConfig (steps, temperatures)."""
        ...


@runtime_checkable
class Base(Protocol):
    """What every base has. `cond` is class ids [B] (`text = False`) or prompt ids [B, P]
    right-padded with -1 (`text = True`, see TextBase). Features are [R, L + C, D] (text bases: [R, T,
    D], T per row up to the longest)."""

    name: str
    fingerprint: str  # sha256 over config + weights: datasets and zoo models are bound to it
    L: int
    C: int
    D: int
    V: int
    mask_id: int
    num_classes: int  # 0 for text bases
    text: bool
    precision: str  # fp32 | bf16 | fp16 (the rollout runs the base under autocast for the last two)
    device: torch.device
    rule: SamplingRule
    sampler_defaults: dict  # SamplerConfig fields the base's defaults set (steps, guidance, ...)
    scorer: Scorer | None  # None: no classifier scorer (generate / bench report FID or agreement only)
    score_statistics: ScoreStatistics | None
    shortcut_arch: str  # the zoo architecture `train` and `zoo import` build for this base

    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [R, L] (mask_id where masked) -> (logits [R, L, V], feature)."""
        ...

    def head(self, feature: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The base's own output head on any feature -> logits [R, L, V] (no no_grad: losses train through it)."""
        ...

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Frozen token (+ position) embedding of new tokens [R, K] -> [R, K, D]."""
        ...

    def new_tokens(
        self, new_ids: torch.Tensor, new_pos: torch.Tensor, cond: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shortcut's inputs for the cells committed at a step (new_ids, new_pos [B, k]) for the
        rows `cond` [R] / [R, P] of CFG `branch` [R] -> (emb [R, K, D], pos [R, K], valid [R, K])."""
        ...

    def feature_valid(self, cond: torch.Tensor) -> torch.Tensor | None:
        """Real (non-padded) feature positions [R, T] of the rows `cond` gives; None: no padding."""
        ...

    def null_cond(self, batch: int) -> torch.Tensor:
        """The unconditional branch's cond for `batch` rows."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] -> images [B, 3, H, W] in [0, 1]."""
        ...

    def to(self, device: str | torch.device) -> Base: ...


@runtime_checkable
class TextBase(Base, Protocol):
    """A text-to-image base (`text = True`): `cond` is prompt ids [R, P] right-padded with -1; the two
    CFG branches may differ in length, and a padded batch computes what each row computes alone."""

    default_prompts: list[str] | None  # what scoring and dumps cycle over when no prompt is given
    label_of: Callable[[str], int] | None  # the class a prompt names, for scorers (None: none)
    # sequence id of image code 0 when the cells share one sequence with the prompt (the cond branch's
    # new tokens then include the prompt ids, as DiMOO's shortcut sees them); None: the feature is the
    # image grid alone and new tokens are the committed cells at their grid positions
    image_offset: int | None

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> cond-branch prompt ids [n, P], right-padded with -1."""
        ...

    def cells(self, cond: torch.Tensor) -> torch.Tensor:
        """Feature position of each image cell [R, L] of the rows `cond` gives."""
        ...


class Predictor(Protocol):
    """What the rollout calls at a shortcut step, and its hooks (defaults: `PredictorDefaults`)."""

    needs_state: bool  # True: `predict` also gets base=, tokens= [R, L] and cond= (both branches)
    # True (a compiled shortcut): every step's new tokens come right-padded to the rollout's widest step
    # (`new_valid` False on the padding), so the predictor sees one shape at every step
    static_new_tokens: bool

    def reset(self) -> None: ...

    def observe(self, step: int, feature: torch.Tensor) -> None: ...

    def predict(
        self,
        step: int,
        feature: torch.Tensor,
        new_emb: torch.Tensor,
        new_pos: torch.Tensor,
        new_valid: torch.Tensor,
        mask_ratio: torch.Tensor,
        feat_valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Feature of `step` from the previous step's feature and the tokens unmasked there
        (`feat_valid` [R, T]: the real positions of right-padded text rows; None: all real)."""
        ...

    def full_steps(self, N: int) -> list[int] | None:
        """The full steps it picks itself (then no budget may be given); None: the budget decides."""
        ...

    def place(self, N: int, B: int) -> list[int]:
        """The B full steps of a budget B < N."""
        ...

    def full_forward(self, base: Base, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The base's forward at a full step (a predictor may record what it needs there)."""
        ...


class PredictorDefaults:
    """The optional hooks' defaults, in one place: a predictor subclasses this and overrides what it needs."""

    needs_state = False
    static_new_tokens = False

    def reset(self) -> None:
        pass

    def observe(self, step: int, feature: torch.Tensor) -> None:
        pass

    def full_steps(self, N: int) -> list[int] | None:
        return None

    def place(self, N: int, B: int) -> list[int]:
        from migm.trajectories.schedule import full_steps

        return full_steps(N, B)  # uniform, as published

    def full_forward(self, base: Base, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return base.forward(tokens, cond)


class ProbedPredictor:
    """A predictor wrapped so each shortcut step also sees the sampler's state: the inner predictor's
    hooks pass through unchanged, and `record(step, out, base, tokens, cond)` gets the feature the
    sampler will use (subclasses run the base on that state: bench's fidelity, on-policy targets).
    Sampling itself is unchanged."""

    needs_state = True  # predict gets base=, tokens=, cond=

    def __init__(self, inner: Predictor):
        self.inner = inner

    @property
    def static_new_tokens(self) -> bool:
        return self.inner.static_new_tokens

    def full_steps(self, N: int) -> list[int] | None:
        return self.inner.full_steps(N)

    def place(self, N: int, B: int) -> list[int]:
        return self.inner.place(N, B)

    def full_forward(self, base: Base, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.full_forward(base, tokens, cond)

    def reset(self) -> None:
        self.inner.reset()

    def observe(self, step: int, feature: torch.Tensor) -> None:
        self.inner.observe(step, feature)

    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None, *, base, tokens, cond):
        state = {"base": base, "tokens": tokens, "cond": cond} if self.inner.needs_state else {}
        out = self.inner.predict(step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=feat_valid, **state)
        self.record(step, out, base, tokens, cond)
        return out

    def record(self, step: int, out: torch.Tensor, base: Base, tokens: torch.Tensor, cond: torch.Tensor) -> None:
        raise NotImplementedError


def same_new_tokens_per_branch(
    base: Base, new_ids: torch.Tensor, new_pos: torch.Tensor, cond: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`new_tokens` of a base whose CFG branches share one token grid (class-conditional MaskGIT,
    aMUSEd): every branch sees the cells committed at the step, embedded at their grid positions."""
    reps = len(cond) // len(new_ids)
    pos = new_pos.repeat(reps, 1)
    return base.embed(new_ids, new_pos).repeat(reps, 1, 1), pos, torch.ones_like(pos, dtype=torch.bool)
