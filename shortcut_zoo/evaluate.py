"""Validation metrics of a shortcut against the `cache` predictor, the chained-step errors `--placement auto`
uses, and the bench's rollout fidelity probe. Intervals and Pareto fronts: `stats`; FLOP counts: `cost`;
FID / IS / CLIP score: `image_metrics`."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from migm.trajectories.base.protocol import Predictor, ProbedPredictor


def at_cells(values: torch.Tensor, batch: dict[str, torch.Tensor], T: int) -> torch.Tensor:
    """Per-cell values [B, L] placed at the cells' feature positions of a [B, T] map (zero elsewhere)."""
    cells = batch.get("cells")
    if cells is None:  # class rows: the L cells come first
        cells = torch.arange(values.shape[1], device=values.device).expand_as(values)
    return values.new_zeros(values.shape[0], T).scatter(1, cells, values)


def masked_positions(batch: dict[str, torch.Tensor], T: int) -> torch.Tensor:
    """[B, T] bool: image positions still masked after the step (the ones whose logits matter next)."""
    return at_cells(batch["still_masked"], batch, T)


def predict(model: torch.nn.Module, base, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    new_emb = base.embed(batch["new_ids"], batch["new_pos"])
    text_rows = {"feat_valid": batch["feat_valid"]} if "feat_valid" in batch else {}  # text rows are right-padded
    return model(batch["feature"], new_emb, batch["new_pos"], batch["new_valid"], batch["mask_ratio"], **text_rows)


@torch.no_grad()
def validate(
    model: torch.nn.Module, base, batches: Iterable[dict[str, torch.Tensor]], steps: int, device="cpu"
) -> dict:
    """Cosine, MSE and top-1 token agreement of `model` and of `cache` (f_s itself), per step and overall."""
    keys = ("n", "cos", "mse", "agree", "cache_cos", "cache_mse", "cache_agree")
    acc = torch.zeros(steps, len(keys), dtype=torch.float64)
    model.eval()
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        pred = predict(model, base, batch).float()
        true, cache = batch["target"], batch["feature"]
        keep = masked_positions(batch, true.shape[1])
        true_top = base.head(true, batch["cond"]).argmax(-1)
        rows = []
        for guess in (pred, cache):
            cos = F.cosine_similarity(guess, true, dim=-1)
            mse = ((guess - true) ** 2).mean(-1)
            agree = at_cells((base.head(guess, batch["cond"]).argmax(-1) == true_top).double(), batch, true.shape[1])
            rows += [cos, mse, agree]
        for s in batch["step"].unique().tolist():
            sel = keep & (batch["step"] == s)[:, None]
            acc[s, 0] += sel.sum()
            for j, metric in enumerate(rows):
                acc[s, j + 1] += metric[sel].double().sum()
    model.train()
    per_step = []
    for s in range(steps):
        n = acc[s, 0].item()
        if n:
            per_step.append(
                {"step": s, "positions": int(n), **{k: acc[s, j].item() / n for j, k in enumerate(keys) if j}}
            )
    total = acc.sum(0)
    n = total[0].item()
    # No held-out position (too few samples): no figures (None, shown "n/a"), not a 0.0 that reads as one.
    overall = {k: total[j].item() / n if n else None for j, k in enumerate(keys) if j}
    overall["mse_ratio_to_cache"] = overall["mse"] / max(overall["cache_mse"], 1e-12) if n else None
    overall["positions"] = int(n)
    return {"overall": overall, "per_step": per_step}


@torch.no_grad()
def chained_errors(model: torch.nn.Module, base, stream, device="cpu") -> dict | None:
    """Per-step error of the shortcut chained as the sampler chains it, on the rows of `stream` (held out):
    from the true f_s of a full step s, j shortcut steps with the recorded new tokens, then
    1 − cosine against the recorded f_{s+j} at the positions still masked (the ones sampled at s+j).
    `error[s][j-1]` is its mean over those positions, for s = 0 … N−2 and j = 1 … N−1−s: what `auto`
    placement of the full steps minimises (None: no held-out rows)."""
    from migm.trajectories.pairs import pair_batch

    N = stream.ds.dims.N
    total = torch.zeros(N - 1, N - 1, dtype=torch.float64)
    count = torch.zeros(N - 1, N - 1, dtype=torch.float64)
    model.eval()
    for block in stream.blocks:  # one block of rows at a time bounds memory on wide bases
        data = stream.read_blocks(np.array([block]))
        rows = np.arange(len(data["tokens"]))
        feats = torch.from_numpy(data["features"])
        steps = []  # the pair batch of every step, without its features (taken per chain below)
        for t in range(N - 1):
            batch = pair_batch(data, rows, np.full_like(rows, t), stream.mask_id, stream.image_offset)
            steps.append({k: v.to(device) for k, v in batch.items() if k not in ("feature", "target")})
        for s in range(N - 1):
            feature = feats[:, s].float().to(device)
            for j in range(1, N - s):
                step = steps[s + j - 1]
                feature = predict(model, base, {**step, "feature": feature}).float()
                true = feats[:, s + j].float().to(device)
                keep = masked_positions(step, true.shape[1])
                err = 1 - F.cosine_similarity(feature, true, dim=-1)
                total[s, j - 1] += err[keep].double().sum().cpu()
                count[s, j - 1] += keep.sum().cpu()
    model.train()
    if not count.any():
        return None
    mean = total / count.clamp(min=1)
    error = [[float(f"{mean[s, j].item():.6g}") for j in range(N - 1 - s)] for s in range(N - 1)]
    return {
        "N": N,
        "metric": "1 - cosine at the positions still masked, chained from the true feature of the last full step",
        "rows": int(sum(len(stream.rows_of(np.array([b]))) for b in stream.blocks)),
        "error": error,
    }


def masked_cosine(base, feature: torch.Tensor, true: torch.Tensor, tokens: torch.Tensor, cond: torch.Tensor):
    """[R] mean cosine between two features [R, T, D] over each row's image cells still masked in `tokens` [R, L]
    (the cells sampled from this step's logits)."""
    R, L = tokens.shape
    # text bases: the cells' positions depend on the prompt
    cells = base.cells(cond) if base.text else torch.arange(L, device=tokens.device).expand(R, L)
    at = cells.to(feature.device)[..., None].expand(-1, -1, feature.shape[-1])
    cos = F.cosine_similarity(feature.float().gather(1, at), true.float().gather(1, at), dim=-1)
    masked = (tokens == base.mask_id).float()
    return (cos * masked).sum(1) / masked.sum(1).clamp(min=1)


class FidelityProbe(ProbedPredictor):
    """A predictor wrapped for `migm bench`: at each shortcut step it also runs the base on the sampler's
    state (one extra base forward) and records the cosine between the feature the sampler uses and the
    one the base computes (`masked_cosine`), averaged over both CFG branches of a sample. `values()`:
    per sample, the mean over its shortcut steps. Sampling itself is unchanged."""

    def __init__(self, inner: Predictor, branches: int):
        super().__init__(inner)
        self.branches = branches
        self.batches: list[torch.Tensor] = []  # per rollout: [batch] mean over its shortcut steps
        self.steps: list[torch.Tensor] = []  # this rollout's shortcut steps: [batch] each

    def reset(self) -> None:
        self._flush()
        super().reset()

    def record(self, step, out, base, tokens, cond) -> None:
        true = base.forward(tokens, cond)[1]
        self.steps.append(masked_cosine(base, out, true, tokens, cond).view(self.branches, -1).mean(0))

    def _flush(self) -> None:
        if self.steps:
            self.batches.append(torch.stack(self.steps).mean(0).double().cpu())
            self.steps = []

    def values(self) -> torch.Tensor | None:
        """Per sample (in sampling order), the mean cosine over its shortcut steps (None: no shortcut step ran)."""
        self._flush()
        return torch.cat(self.batches) if self.batches else None
