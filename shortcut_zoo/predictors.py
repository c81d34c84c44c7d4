"""Predictors the rollout calls at shortcut steps: a trained shortcut, and the training-free peers.

- `shortcut`: the zoo model, f_s = g(f_{s-1}, tokens unmasked at s-1, mask ratio).
- `cache`: reuse the last feature (feature caching).
- `taylor`: extrapolate from the last full steps' features by finite differences in the step index
  (order 1 or 2, TaylorSeer-style); falls back to a lower order until enough full steps are seen.
"""

from __future__ import annotations

import torch

from trajectories.errors import MigmError


class ShortcutPredictor:
    def __init__(self, model: torch.nn.Module):
        self.model = model

    def reset(self) -> None:
        pass

    def observe(self, step: int, feature: torch.Tensor) -> None:
        pass

    @torch.no_grad()
    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        new_emb, mask_ratio = new_emb.to(feature.dtype), mask_ratio.to(feature.dtype)
        return self.model(feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=feat_valid)


class CachePredictor:
    def reset(self) -> None:
        pass

    def observe(self, step: int, feature: torch.Tensor) -> None:
        pass

    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio, feat_valid=None):
        return feature


class TaylorPredictor:
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


PEERS = {"cache": CachePredictor, "taylor": lambda: TaylorPredictor(1), "taylor2": lambda: TaylorPredictor(2)}


def check_predictor_name(name: str) -> None:
    if name != "shortcut" and name not in PEERS:
        raise MigmError(f"unknown predictor {name!r}; known predictors: shortcut, {', '.join(PEERS)}")


def make_predictor(name: str, shortcut_model: torch.nn.Module | None = None):
    """'shortcut' (needs a loaded zoo model), 'cache', 'taylor' (order 1) or 'taylor2'."""
    check_predictor_name(name)
    if name == "shortcut":
        if shortcut_model is None:
            raise MigmError("the shortcut predictor needs --shortcut zoo/NAME")
        return ShortcutPredictor(shortcut_model)
    return PEERS[name]()
