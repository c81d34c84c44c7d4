"""Predictors the rollout calls at shortcut steps: a trained shortcut, and the training-free peers.

- `shortcut`: the zoo model, f_s = g(f_{s-1}, tokens unmasked at s-1, mask ratio). Given the held-out
  errors stored with it (`--placement auto`), it places the full steps where they minimise the summed
  error of the chained shortcut steps.
- `cache`: reuse the last feature (feature caching).
- `taylor`: extrapolate from the last full steps' features by finite differences in the step index
  (order 1 or 2, TaylorSeer-style); falls back to a lower order until enough full steps are seen.
- `ml-cache` (DiMOO-architecture bases): the published ML-Cache, a partial forward at the non-full steps
  (knobs in the name: `ml-cache:warmup=0.3,period=5,quantile=0.1`).
"""

from __future__ import annotations

import numpy as np
import torch

from migm.trajectories.base.protocol import PredictorDefaults
from migm.trajectories.errors import MigmError
from migm.trajectories.schedule import full_steps, placed_full_steps


class ShortcutPredictor(PredictorDefaults):
    def __init__(self, model: torch.nn.Module, step_errors: dict | None = None):
        self.model = model
        self.step_errors = step_errors  # None: the uniform (published) placement

    def place(self, N: int, B: int) -> list[int]:
        """The B full steps of N: uniform, or (with stored step errors) the least summed error."""
        if self.step_errors is None:
            return full_steps(N, B)
        return placed_full_steps(N, B, step_cost(self.step_errors, N))

    @torch.no_grad()
    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        new_emb, mask_ratio = new_emb.to(feature.dtype), mask_ratio.to(feature.dtype)
        return self.model(feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=feat_valid)


def step_cost(step_errors: dict, N: int) -> np.ndarray:
    """[N, N] cost[s][j]: the stored error of the shortcut step j after full step s, for sampling with N
    steps. The errors were measured at the dataset's N_m; steps map by progress (s → s·(N_m−1)/(N−1),
    rounded), chain lengths too, interpolated linearly between measured lengths (0 error at length 0)
    and held at the longest one measured. At N = N_m it is the measured table itself."""
    Nm, error = step_errors["N"], step_errors["error"]
    scale = (Nm - 1) / (N - 1) if N > 1 else 0.0
    cost = np.zeros((N, N))
    for s in range(N):
        row = [0.0, *error[min(round(s * scale), Nm - 2)]]  # row[j]: j measured steps after the full step
        for j in range(1, N - s):
            x = min(j * scale, len(row) - 1)
            lo = int(x)
            hi = min(lo + 1, len(row) - 1)
            cost[s, j] = row[lo] + (x - lo) * (row[hi] - row[lo])
    return cost


class CachePredictor(PredictorDefaults):
    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        return feature


class TaylorPredictor(PredictorDefaults):
    def __init__(self, order: int = 1):
        if order not in (1, 2):
            raise MigmError(f"taylor order must be 1 or 2, got {order}")
        self.order = order
        self.history: list[tuple[int, torch.Tensor]] = []

    def reset(self) -> None:
        self.history = []

    def observe(self, step: int, feature: torch.Tensor) -> None:
        self.history = (self.history + [(step, feature)])[-(self.order + 1) :]

    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        pts = self.history
        (a, fa) = pts[-1]
        if len(pts) == 1:
            return fa
        (b, fb) = pts[-2]
        d1 = (fa - fb) / (a - b)
        out = fa + (step - a) * d1
        if len(pts) == 3:  # Newton form through the last three full steps
            (c, fc) = pts[-3]
            d2 = (d1 - (fb - fc) / (b - c)) / (a - c)
            out = out + (step - a) * (step - b) * d2
        return out


class MLCachePredictor(PredictorDefaults):
    """ML-Cache as published with MIGM-Shortcut for Lumina-DiMOO (`generate_image(use_cache=True)`).

    Full (refresh) steps: s <= w or (s - w) % period == 0, w = int(N * warmup); they run the whole
    base and record its caches (keys / values per layer before RoPE, features, largest image-code
    logit of every position; each CFG branch is its own rows). At the other steps only the positions
    whose largest image-code logit at the step before is at or below the `quantile` of the row's
    positions (all of them: prompt, markup, cells) are recomputed, through every layer, against
    every other position's cached K/V; the rest keep their cached K/V, feature and logit.
    """

    needs_state = True  # predict gets base=, tokens=, cond=
    base_methods = ("forward_cached", "forward_partial")

    def __init__(self, warmup: float = 0.3, period: int = 5, quantile: float = 0.1):
        if not 0 <= warmup <= 1 or not 0 <= quantile <= 1:
            raise MigmError(f"ml-cache warmup and quantile must be in [0, 1], got {warmup} and {quantile}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise MigmError(f"ml-cache period must be an integer of at least 1, got {period!r}")
        self.warmup, self.period, self.quantile = warmup, period, quantile
        self.cache = None
        self.recomputed = self.positions = 0  # over every partial step seen, for the bench's ideal latency

    def full_steps(self, N: int) -> list[int]:
        w = int(N * self.warmup)  # the published expression, float rounding included
        return [s for s in range(N) if s <= w or (s - w) % self.period == 0]

    @property
    def recomputed_fraction(self) -> float | None:
        """Recomputed positions / real positions, over the partial steps so far (None: none yet)."""
        return self.recomputed / self.positions if self.positions else None

    def reset(self) -> None:
        self.cache = None

    def full_forward(self, base, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_base(self, base)
        logits, feature, self.cache = base.forward_cached(tokens, cond)
        return logits, feature

    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None, *, base, tokens, cond):
        mask = recompute_mask(self.cache.top, self.quantile)
        self.recomputed += int(mask.sum())
        self.positions += int((~self.cache.top.isnan()).sum())
        return base.forward_partial(tokens, cond, self.cache, mask)


def recompute_mask(top: torch.Tensor, quantile: float) -> torch.Tensor:
    """top [R, T] (NaN at padding) -> bool [R, T]: positions at or below their row's `quantile` of
    `top` over its real positions (torch.quantile's linear interpolation)."""
    return top <= torch.nanquantile(top, quantile, dim=-1, keepdim=True)


def check_base(predictor, base) -> None:
    missing = [m for m in getattr(predictor, "base_methods", ()) if not hasattr(base, m)]
    if missing:
        raise MigmError(
            f"ml-cache needs a DiMOO-architecture base (a partial forward over cached keys and values); "
            f"--model {base.name} has none"
        )


PEERS = {
    "cache": CachePredictor,
    "taylor": lambda: TaylorPredictor(1),
    "taylor2": lambda: TaylorPredictor(2),
    "ml-cache": MLCachePredictor,
}
KNOBS = {"ml-cache": {"warmup": float, "period": int, "quantile": float}}  # options a name may carry


def parse_predictor(spec: str) -> tuple[str, dict]:
    """'ml-cache:warmup=0.3,period=5' -> ('ml-cache', {'warmup': 0.3, 'period': 5}); checks the name."""
    name, sep, options = spec.strip().partition(":")
    if name != "shortcut" and name not in PEERS:
        raise MigmError(f"unknown predictor {name!r}; known predictors: shortcut, {', '.join(PEERS)}")
    knobs = KNOBS.get(name, {})
    if sep and not knobs:
        raise MigmError(f"predictor {name!r} takes no options, got {spec!r}")
    values = {}
    for item in options.split(",") if sep else []:
        key, eq, value = (t.strip() for t in item.partition("="))
        if not eq or key not in knobs:
            raise MigmError(f"{name} options are {', '.join(f'{k}=VALUE' for k in knobs)}, got {item!r}")
        try:
            values[key] = knobs[key](value)
        except ValueError:
            kind = "an integer" if knobs[key] is int else "a number"
            raise MigmError(f"{name} option {key} must be {kind}, got {value!r}") from None
    return name, values


def split_predictors(text: str) -> list[str]:
    """A comma-separated list whose ml-cache entries may carry comma-separated options:
    'cache,ml-cache:warmup=0.2,period=4,taylor' -> ['cache', 'ml-cache:warmup=0.2,period=4', 'taylor']."""
    out: list[str] = []
    for item in (t.strip() for t in text.split(",")):
        if item and "=" in item and ":" not in item and out:
            out[-1] += "," + item
        elif item:
            out.append(item)
    return out


def check_predictor_name(name: str, base=None) -> None:
    """A known name with valid options, and (given a base) one the base can run."""
    name, options = parse_predictor(name)
    if name != "shortcut":
        predictor = PEERS[name](**options)
        if base is not None:
            check_base(predictor, base)


def make_predictor(name: str, shortcut_model: torch.nn.Module | None = None, step_errors: dict | None = None):
    """'shortcut' (needs a loaded zoo model; with `step_errors` it places the full steps by them), 'cache',
    'taylor' (order 1), 'taylor2' or 'ml-cache[:options]'."""
    name, options = parse_predictor(name)
    if name == "shortcut":
        if shortcut_model is None:
            raise MigmError("the shortcut predictor needs --shortcut zoo/NAME")
        return ShortcutPredictor(shortcut_model, step_errors)
    return PEERS[name](**options)
