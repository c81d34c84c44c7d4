"""Pieces the shortcut architectures share."""

from __future__ import annotations

import torch


def scatter_new_tokens(new_emb: torch.Tensor, new_pos: torch.Tensor, new_valid: torch.Tensor, positions: int) -> torch.Tensor:
    """[B, K, D] embeddings of new tokens -> [B, positions, D], zero where nothing was unmasked.

    Positions index the feature's image positions, which come first in MaskGIT's layout."""
    B, K, D = new_emb.shape
    out = new_emb.new_zeros(B, positions, D)
    src = new_emb * new_valid[..., None].to(new_emb.dtype)
    return out.scatter_add_(1, new_pos[..., None].expand(B, K, D), src)
