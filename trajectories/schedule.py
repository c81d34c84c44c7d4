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


def token_schedule(L: int, N: int) -> list[int]:
    """Tokens unmasked at each of N steps (arccos schedule, as published). Sums to L, each ≥ 1."""
    if not 1 <= N <= L:
        raise MigmError(f"steps must be between 1 and {L} (the number of image tokens), got {N}")
    if N == 1:
        return [L]
    r = [1 - i / (N - 1) for i in range(N)]  # linspace(1, 0, N)
    w = [math.acos(min(1.0, max(-1.0, x))) / (math.pi / 2) for x in r]
    total = sum(w)
    counts = [max(1, math.floor(x / total * L + 0.5)) for x in w]
    counts[-1] += L - sum(counts)  # the last step absorbs the remainder, as published
    # Raising zeros to 1 can overshoot L for large N; take the excess from the largest steps.
    while counts[-1] < 1:
        i = max(range(N - 1), key=lambda j: (counts[j], j))
        counts[i] -= 1
        counts[-1] += 1
    return counts


def dimoo_schedule(L: int, N: int) -> list[int]:
    """Cells committed at each of N steps under the DiMOO rule (some steps may commit none)."""
    if N < 1:
        raise MigmError(f"steps must be at least 1, got {N}")
    masked, out = L, []
    for s in range(N):
        keep = max(1, math.floor(L * math.cos(math.pi / 2 * (s + 1) / N))) if s < N - 1 else 0
        keep = min(keep, masked)
        out.append(masked - keep)
        masked = keep
    return out


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
    s_k = max(s_{k-1} + 1, round(N·k/B)) for k = 1 … B−1 with Python's round (half to even)."""
    if not 1 <= B <= N:
        raise MigmError(f"budget must satisfy 1 <= budget <= steps ({N}), got {B}")
    out = [0]
    for k in range(1, B):
        out.append(max(out[-1] + 1, round(N * k / B)))
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


def mask_ratios(L: int, N: int) -> list[float]:
    """Fraction of image tokens still masked after each step."""
    left, out = L, []
    for c in token_schedule(L, N):
        left -= c
        out.append(left / L)
    return out
