"""Token schedules and full-step placement: one definition used by sampling, datasets and pairs.

Full steps are placed uniformly (`full_steps`, the published rule) or, given a cost per shortcut step,
where they minimise the summed cost (`placed_full_steps`, what `--placement auto` runs).

Each family's sampling rule (`trajectories/base/rules.py`, a base's `rule`) builds on these.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from migm.trajectories.errors import MigmError


def arccos_schedule(L: int, N: int) -> list[int]:
    """The published MaskGIT scheduler's counts (`adap_sche`, arccos), computed as published in float32:
    weights arccos(linspace(1, 0, N))/(π/2), normalised to L, rounded half to even, zeros raised to 1,
    the last step getting L minus the others. Nothing guards that last entry: it is 0 or negative when
    the rounded counts already reach L (L = 9, N = 8: 1,1,1,1,1,2,2,0). N = 1 (unusable in the published
    code, which divides by N − 1) is migm's: one step commits every cell."""
    if not 1 <= N <= L:
        raise MigmError(f"steps must be between 1 and {L} (the number of image tokens), got {N}")
    if N == 1:
        return [L]
    weights = torch.arccos(torch.linspace(1, 0, N)) / (math.pi * 0.5)
    counts = (weights / weights.sum() * L).round()
    counts[counts == 0] = 1
    counts[-1] += L - counts.sum()
    return [int(c) for c in counts.tolist()]


def token_schedule(L: int, N: int) -> list[int]:
    """Cells the published MaskGIT loop commits at each of N steps: the scheduler's counts clamped to the
    cells still masked. Where they reach L early (a last entry of 0 or below), the step that reaches L
    commits every remaining cell and the later steps commit none: the published loop stops at the first
    step that finds nothing masked, and so does the rollout (see `steps_run`). Sums to L."""
    left, out = L, []
    for count in arccos_schedule(L, N):
        out.append(max(0, min(count, left)))
        left -= out[-1]
    return out


def dimoo_schedule(L: int, N: int) -> list[int]:
    """Cells committed at each of N steps under the DiMOO rule (some steps may commit none): after step
    s < N − 1, max(1, floor(L·cos(π/2·(s+1)/N))) cells stay masked, computed in float32 as published
    (where L·cos(…) is an exact integer the float32 cosine lands below it: one fewer stays masked)."""
    if N < 1:
        raise MigmError(f"steps must be at least 1, got {N}")
    masked, out = L, []
    for s in range(N):
        keep = 0
        if s < N - 1:
            ratio = torch.cos(torch.tensor((s + 1) / N) * math.pi / 2)  # float32, as published
            keep = max(1, int(torch.floor(L * ratio)))
        keep = min(keep, masked)
        out.append(masked - keep)
        masked = keep
    return out


def steps_run(counts: list[int]) -> int:
    """Steps a loop with these counts runs: it stops at the first step that finds nothing masked."""
    total, L = 0, sum(counts)
    for s, count in enumerate(counts):
        if total == L:
            return s
        total += count
    return len(counts)


def inverse_cdf(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The code whose CDF interval holds u (scaled by the total, which may round below 1).

    The CDF is summed in float64: CUDA's cumsum rounds a row differently when the batch around it changes
    size, and in float32 that moved about 1 cell in 1,000 to a neighbouring code (so a prompt sampled
    alone and in a padded batch diverged, measured on an H100); in float64 a boundary that close is
    vanishingly rare."""
    cdf = log_probs.double().exp().cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_(max=log_probs.shape[-1] - 1)


def full_steps(N: int, B: int) -> list[int]:
    """Indices of the B steps that run the base model, the published rule: step 0, then
    s_k = max(s_{k-1} + 1, round(N·(k/B))) for k = 1 … B−1 with Python's round (half to even) on the float
    product, k/B evaluated first. B = 1, which the published loops refuse, is migm's: step 0 alone."""
    if not 1 <= B <= N:
        raise MigmError(f"budget must satisfy 1 <= budget <= steps ({N}), got {B}")
    out = [0]
    for k in range(1, B):
        out.append(max(out[-1] + 1, round(N * (k / B))))  # k/B first, as published: 45·(7/10) rounds to 31
    return out


def check_full_steps(full: list[int], N: int) -> list[int]:
    """A placement of full steps is valid: sorted, distinct, inside 0 … N−1, step 0 first."""
    if not full or full[0] != 0 or any(b <= a for a, b in zip(full, full[1:])) or full[-1] >= N:
        raise MigmError(f"full steps must be sorted, distinct steps of 0 … {N - 1} starting at step 0, got {full}")
    return full


def placed_full_steps(N: int, B: int, cost) -> list[int]:
    """The B full steps of N that minimise the summed cost of the shortcut steps, where `cost[s][j]`
    (j ≥ 1) is the cost of the step j after full step s when no full step comes between (an [N, N]
    array). Step 0 is full; B = N is every step. Dynamic programming over (full steps so far, last
    full step), O(B·N²); ties go to the earliest placement."""
    full_steps(N, B)  # checks 1 <= B <= N
    if B == N:
        return list(range(N))
    cost = np.asarray(cost, dtype=np.float64)
    # gap[t, u]: cost of the shortcut steps t+1 … u−1 after a full step t with the next full at u (u = N: the end)
    gap = np.full((N, N + 1), np.inf)
    for t in range(N):
        run = np.concatenate([[0.0], np.cumsum(cost[t, 1 : N - t])])  # run[j]: steps t+1 … t+j
        gap[t, t + 1 :] = run[: N - t]
    best = np.full(N, np.inf)  # best[t]: least cost of steps < t with k+1 full steps, the last at t
    best[0] = 0.0
    back = []
    for _ in range(1, B):
        total = best[:, None] + gap[:, :N]  # [last full t, next full u]
        back.append(total.argmin(0))
        best = total.min(0)
    last = int(np.argmin(best + gap[:, N]))
    full = [last]
    for choice in reversed(back):
        full.append(int(choice[full[-1]]))
    return check_full_steps(full[::-1], N)
