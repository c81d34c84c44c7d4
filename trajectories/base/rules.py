"""The built-in families' sampling rules (`SamplingRule`, see protocol.py), as published:

- `maskgit`: arccos schedule; CFG (1+w_s)·cond − w_s·uncond with w_s = w·s/(N−1); sample from
  softmax(logits·sm_temp); confidence = that log-probability + r_temp·(1 − s/(N−1))·Gumbel.
- `dimoo` (Lumina-DiMOO, diffusers' aMUSEd rule at constant temperature): after step s < N−1,
  max(1, floor(L·cos(π/2·(s+1)/N))) cells stay masked, none after the last; CFG (1+s)·cond − s·uncond
  with constant s; sample by Gumbel-max at temperature τ (= softmax(logits/τ)); confidence = log softmax
  probability of the sampled code + τ·Gumbel (not annealed).

A base names its rule as `base.rule`; the rollout applies it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from migm.trajectories.schedule import dimoo_schedule, inverse_cdf, token_schedule


def gumbel(u: torch.Tensor) -> torch.Tensor:
    """Gumbel noise from uniforms in (0, 1)."""
    return -torch.log(-torch.log(u))


def sampled_log_prob(log_probs: torch.Tensor, sampled: torch.Tensor) -> torch.Tensor:
    return log_probs.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class MaskGITRule:
    name: str = "maskgit"

    def unmask_counts(self, L: int, N: int) -> list[int]:
        return token_schedule(L, N)

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, guidance: float, s: int, N: int) -> torch.Tensor:
        w = guidance * (s / (N - 1) if N > 1 else 0.0)  # ramps linearly from 0 to w
        return (1 + w) * cond - w * uncond

    def choose_tokens(self, config, logits, u_sample, u_gumbel, s):
        N = config.steps
        log_probs = torch.log_softmax(logits * config.sm_temp, dim=-1)
        sampled = inverse_cdf(log_probs, u_sample)
        frac = s / (N - 1) if N > 1 else 0.0
        confidence = sampled_log_prob(log_probs, sampled) + config.r_temp * (1 - frac) * gumbel(u_gumbel)
        return sampled, confidence


@dataclass(frozen=True)
class DiMOORule:
    name: str = "dimoo"

    def unmask_counts(self, L: int, N: int) -> list[int]:
        return dimoo_schedule(L, N)

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, guidance: float, s: int, N: int) -> torch.Tensor:
        return (1 + guidance) * cond - guidance * uncond

    def choose_tokens(self, config, logits, u_sample, u_gumbel, s):
        tau = config.temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        if tau == 0:
            sampled = logits.argmax(-1)
        else:
            sampled = inverse_cdf(torch.log_softmax(logits / tau, dim=-1), u_sample)
        return sampled, sampled_log_prob(log_probs, sampled) + tau * gumbel(u_gumbel)


MASKGIT_RULE, DIMOO_RULE = MaskGITRule(), DiMOORule()
