"""Counted costs: FLOPs of one call (torch's FlopCounterMode), and a shortcut's cost relative to its base."""

from __future__ import annotations

import torch


def count_flops(fn, *args) -> int:
    """Floating-point operations of one call, counted by torch's FlopCounterMode (matmuls, convs, attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    # the math kernel: the counter has no formula for the CPU's fused attention, which it would skip
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def relative_cost(model: torch.nn.Module, base, steps: int) -> dict:
    """Counted FLOPs of one shortcut call (K = L/N new tokens) and of one base forward, per sample."""
    L, device = base.L, base.device
    K = max(1, L // steps)
    cond = base.null_cond(1).to(device)  # a stand-in condition: class or (short) prompt
    tokens = torch.full((1, L), base.mask_id, device=device)
    feat = base.forward(tokens, cond)[1].float()
    new = base.new_tokens(
        torch.zeros(1, K, dtype=torch.long, device=device),
        torch.arange(K, device=device)[None],
        cond,
        torch.zeros(1, dtype=torch.long, device=device),
    )
    shortcut = count_flops(model, feat, *new, torch.full((1,), 0.5, device=device))
    full = count_flops(base.forward, tokens, cond)
    head = count_flops(base.head, feat, cond)
    return {
        "shortcut_flops": shortcut,
        "base_flops": full,
        "head_flops": head,
        "relative_cost": shortcut / full,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
