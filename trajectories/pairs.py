"""Training pairs from trajectories: pair s = (f_s, new tokens of step s, mask ratio after step s) → f_{s+1}.

`PairStream` is an IterableDataset: rows are shuffled by (seed, epoch), split across accelerate
ranks and DataLoader workers, each row is read whole (one chunk per field) and its N−1 pairs are
shuffled within a small block of rows. `collate_pairs` pads the new tokens so batches mix steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trajectories.store.dataset import TrajectoryDataset, open_dataset


def row_pairs(row: dict[str, np.ndarray], mask_id: int) -> list[dict[str, np.ndarray]]:
    """All N−1 pairs of one trajectory row."""
    order, tokens, feats = row["order"].astype(np.int64), row["tokens"].astype(np.int64), row["features"]
    N, L = feats.shape[0], order.shape[0]
    out = []
    for s in range(N - 1):
        new_pos = np.flatnonzero(order == s)
        out.append({
            "feature": feats[s],
            "target": feats[s + 1],
            "new_ids": tokens[new_pos],
            "new_pos": new_pos,
            "mask_ratio": np.float32((order > s).sum() / L),
            "still_masked": order > s,
            "tokens": np.where(order <= s, tokens, mask_id),  # the token state after step s
            "step": s,
            "cond": row["cond"],
            "branch": row["branch"],
        })  # fmt: skip
    return out


def collate_pairs(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Stack pairs; new tokens padded to the longest K with `new_valid` marking the real ones."""
    K = max(len(p["new_pos"]) for p in items)
    B = len(items)
    new_ids = torch.zeros(B, K, dtype=torch.long)
    new_pos = torch.zeros(B, K, dtype=torch.long)
    new_valid = torch.zeros(B, K, dtype=torch.bool)
    for i, p in enumerate(items):
        k = len(p["new_pos"])
        new_ids[i, :k] = torch.from_numpy(p["new_ids"])
        new_pos[i, :k] = torch.from_numpy(p["new_pos"])
        new_valid[i, :k] = True
    stack = lambda key, dtype: torch.from_numpy(np.stack([p[key] for p in items])).to(dtype)  # noqa: E731
    return {
        "feature": stack("feature", torch.float32),
        "target": stack("target", torch.float32),
        "new_ids": new_ids,
        "new_pos": new_pos,
        "new_valid": new_valid,
        "mask_ratio": stack("mask_ratio", torch.float32),
        "still_masked": stack("still_masked", torch.bool),
        "tokens": stack("tokens", torch.long),
        "step": torch.tensor([p["step"] for p in items]),
        "cond": torch.tensor([int(p["cond"]) for p in items]),
        "branch": torch.tensor([int(p["branch"]) for p in items]),
    }


class PairStream(IterableDataset):
    """Shuffled pairs of the given rows (default: all), split across ranks and workers."""

    def __init__(self, root: str | Path, rows: Sequence[int] | None = None, seed: int = 0, rank: int = 0,
                 world: int = 1, block_rows: int = 8, shuffle: bool = True):  # fmt: skip
        self.root = Path(root)
        self.ds: TrajectoryDataset = open_dataset(root)
        self.rows = np.arange(len(self.ds)) if rows is None else np.asarray(rows)
        self.seed, self.rank, self.world = seed, rank, world
        self.block_rows, self.shuffle = block_rows, shuffle
        self.epoch = 0
        self.mask_id = self.ds.dims.V

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_rows(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        rows = rng.permutation(self.rows) if self.shuffle else self.rows
        rows = rows[self.rank :: self.world]
        info = get_worker_info()
        return rows if info is None else rows[info.id :: info.num_workers]

    def __len__(self) -> int:  # pairs this rank yields per epoch (all workers together)
        return len(self.rows[self.rank :: self.world]) * (self.ds.dims.N - 1)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, info.id if info else 0])
        rows = self.my_rows()
        for i in range(0, len(rows), self.block_rows):
            block = [p for r in rows[i : i + self.block_rows] for p in row_pairs(self.ds[int(r)], self.mask_id)]
            for j in rng.permutation(len(block)) if self.shuffle else range(len(block)):
                yield block[j]


def pair_loader(stream: PairStream, batch_size: int, workers: int = 0) -> DataLoader:
    return DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate_pairs,
                      persistent_workers=False, drop_last=False)  # fmt: skip
