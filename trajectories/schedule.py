"""The token schedule and full-step placement: one definition used by sampling, datasets and pairs."""

from __future__ import annotations

import math

from trajectories.errors import MigmError


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


def full_steps(N: int, B: int) -> list[int]:
    """Indices of the B steps that run the base model, the published rule: step 0, then
    s_k = max(s_{k-1} + 1, round(N·k/B)) for k = 1 … B−1 with Python's round (half to even)."""
    if not 1 <= B <= N:
        raise MigmError(f"budget must satisfy 1 <= budget <= steps ({N}), got {B}")
    out = [0]
    for k in range(1, B):
        out.append(max(out[-1] + 1, round(N * k / B)))
    return out


def mask_ratios(L: int, N: int) -> list[float]:
    """Fraction of image tokens still masked after each step."""
    left, out = L, []
    for c in token_schedule(L, N):
        left -= c
        out.append(left / L)
    return out
