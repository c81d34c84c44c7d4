"""ML-Cache's partial forward of a DiMOO base: a forward that records per-layer K/V, features and top
logits, and a forward that recomputes only a few positions against them (the published ML-Cache)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class StepCache:
    """What ML-Cache keeps between steps for R rows (both CFG branches, right-padded): per layer the
    keys and values of every position before RoPE [R, T, n_kv_heads * head_dim], the feature
    [R, T, D] (padding zero) and the largest image-code logit of every position [R, T] (float32, NaN
    at padding), each position's entries from the last step that computed it."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    feature: torch.Tensor
    top: torch.Tensor


class PartialForward:
    """The ML-Cache forwards of `DiMOO` (a mixin: they use its `sequences`, `head`, `net`, `special`, `V`)."""

    @torch.no_grad()
    def forward_cached(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, StepCache]:
        """`forward` (the same computation, so the same logits and feature), also returning the
        StepCache of every position."""
        ids, valid = self.sequences(tokens, cond)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        feature = self.net.features(ids, valid, kv).masked_fill(~valid[..., None], 0)
        # the cache owns its feature (updated in place later); the caller's stays as returned
        cache = StepCache(kv, feature.clone(), self.top_logit(feature).masked_fill(~valid, torch.nan))
        return self.head(feature, cond), feature, cache

    @torch.no_grad()
    def forward_partial(
        self, tokens: torch.Tensor, cond: torch.Tensor, cache: StepCache, recompute: torch.Tensor
    ) -> torch.Tensor:
        """Recompute only the positions where `recompute` [R, T] is True (padding never is) through
        every layer, against the cached K/V of all other positions; their K/V, features and top
        logits are written into `cache` (in place). Rows recompute different counts: each row's
        positions are gathered to the front and padded to the longest. Returns a copy of the updated
        feature [R, T, D]."""
        ids, valid = self.sequences(tokens, cond)
        recompute = recompute.to(valid.device) & valid
        counts = recompute.sum(1)
        K = max(1, int(counts.max()))
        rows = torch.argsort((~recompute).to(torch.int8), dim=1, stable=True)[:, :K]  # recomputed first
        keep = torch.arange(K, device=valid.device)[None, :] < counts[:, None]
        new = self.net.features_rows(ids.gather(1, rows), rows, keep, cache.kv, valid)
        b, j = keep.nonzero(as_tuple=True)
        cache.feature[b, rows[b, j]] = new[b, j].to(cache.feature.dtype)
        cache.top[b, rows[b, j]] = self.top_logit(new)[b, j]
        return cache.feature.clone()

    def top_logit(self, feature: torch.Tensor) -> torch.Tensor:
        """Largest image-code logit at every position of feature [R, T, D] -> float32 [R, T]."""
        off = self.special.image_offset
        return F.linear(feature, self.net.transformer.ff_out.weight[off : off + self.V]).amax(-1).float()
