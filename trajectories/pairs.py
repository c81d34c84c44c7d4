"""Training pairs from trajectories: pair s = (f_s, new tokens of step s, mask ratio after step s) → f_{s+1}.

`PairStream` is an IterableDataset of ready batches: blocks of rows are shuffled by (seed, epoch)
and split across accelerate ranks and DataLoader workers; each block is read whole (one read per
field), and the (row, step) pairs of a buffer of blocks are shuffled and gathered into batches with
numpy indexing. New tokens are padded to the batch's largest K with `new_valid`, so batches mix steps.

With `window` K > 1 (rollout training) the stream yields windows instead of pairs: K consecutive pairs
s … s+K−1 of one row, s ≤ N−1−K, so a window never crosses the end of its trajectory. A window batch
is one pair batch, step-major (the P windows' first pairs, then their second pairs, …); `split_window`
cuts it into the K pair batches. K = 1 gives exactly the pair batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from migm.trajectories.errors import MigmError
from migm.trajectories.store.dataset import TrajectoryDataset, open_dataset


def pair_batch(
    rows: dict[str, np.ndarray], r: np.ndarray, s: np.ndarray, mask_id: int, image_offset: int | None = None
) -> dict[str, torch.Tensor]:
    """Pairs (row r[i], step s[i]) of decoded `rows` as one batch of tensors.

    Class rows: new tokens are the cells committed at step s (ids are codes, positions cell indices).
    Text rows (`image_offset` given): ids are sequence ids (code + image_offset) at the cells'
    absolute positions, and conditional rows also see every prompt token (as the DiMOO sampler does);
    features are right-padded, `feat_valid` marks each row's own length and `cond` is the row's prompt ids."""
    order = rows["order"][r].astype(np.int64)  # [P, L]
    tokens = rows["tokens"][r].astype(np.int64)
    s_col = s[:, None]
    is_new = order == s_col
    L = order.shape[1]
    if image_offset is None:
        cells = np.broadcast_to(np.arange(L), order.shape)
        ids, pos, candidates = tokens, cells, is_new
    else:
        cells = rows["cells"][r].astype(np.int64)
        prompt = rows["prompt_ids"][r].astype(np.int64)
        in_prompt = (prompt >= 0) & (rows["branch"][r] == 0)[:, None]
        prompt_pos = np.broadcast_to(np.arange(prompt.shape[1]), prompt.shape)
        ids = np.concatenate([prompt, tokens + image_offset], 1)
        pos = np.concatenate([prompt_pos, cells], 1)
        candidates = np.concatenate([in_prompt, is_new], 1)
    counts = candidates.sum(1)
    K = int(counts.max())
    pick = np.argsort(~candidates, axis=1, kind="stable")[:, :K]  # the new tokens first, in sequence order
    new_valid = np.arange(K)[None] < counts[:, None]
    new_ids = np.where(new_valid, np.take_along_axis(ids, pick, 1), 0)
    new_pos = np.where(new_valid, np.take_along_axis(pos, pick, 1), 0)
    still_masked = order > s_col
    feats = torch.from_numpy(rows["features"])
    r_t, s_t = torch.from_numpy(r), torch.from_numpy(s)
    batch = {
        "feature": feats[r_t, s_t].float(),
        "target": feats[r_t, s_t + 1].float(),
        "new_ids": torch.from_numpy(new_ids),
        "new_pos": torch.from_numpy(new_pos),
        "new_valid": torch.from_numpy(new_valid),
        "mask_ratio": torch.from_numpy(still_masked.mean(1, dtype=np.float32)),
        "still_masked": torch.from_numpy(still_masked),
        "cells": torch.from_numpy(np.array(cells)),  # feature position of each image cell
        "tokens": torch.from_numpy(np.where(still_masked, mask_id, tokens)),  # the token state after step s
        "step": torch.from_numpy(s.astype(np.int64)),
        "cond": torch.from_numpy(rows["cond"][r].astype(np.int64)),
        "branch": torch.from_numpy(rows["branch"][r].astype(np.int64)),
    }
    if "prompt_ids" in rows:  # text rows: the head may need the prompt (DiMOO's cells, aMUSEd's conditioned up block)
        batch["cond"] = torch.from_numpy(rows["prompt_ids"][r].astype(np.int64))
    if image_offset is not None:
        T = batch["feature"].shape[1]
        batch["feat_valid"] = torch.arange(T)[None] < torch.from_numpy(rows["length"][r].astype(np.int64))[:, None]
    return batch


def window_batch(
    rows: dict[str, np.ndarray],
    r: np.ndarray,
    s: np.ndarray,
    window: int,
    mask_id: int,
    image_offset: int | None = None,
) -> dict[str, torch.Tensor]:
    """Windows (row r[i], steps s[i] … s[i]+window−1) as one step-major pair batch (see `split_window`)."""
    steps = np.concatenate([s + k for k in range(window)])
    return pair_batch(rows, np.tile(r, window), steps, mask_id, image_offset)


def split_window(batch: dict[str, torch.Tensor], window: int) -> list[dict[str, torch.Tensor]]:
    """A window batch of P windows as its `window` pair batches of P pairs, in step order."""
    P = len(batch["step"]) // window
    return [{k: v[i * P : (i + 1) * P] for k, v in batch.items()} for i in range(window)]


def all_pairs(rows: dict[str, np.ndarray], mask_id: int, image_offset: int | None = None) -> dict[str, torch.Tensor]:
    """Every pair of every row, in (row, step) order."""
    R, N = rows["features"].shape[:2]
    r, s = np.divmod(np.arange(R * (N - 1)), N - 1)
    return pair_batch(rows, r, s, mask_id, image_offset)


class PairStream(IterableDataset):
    """Shuffled batches of pairs of the given rows (default: all), split across ranks and workers.

    Rows are read in aligned blocks of `block_rows`; the block order is shuffled by (seed, epoch)
    and pairs are shuffled within a buffer of `buffer_blocks` blocks. Ranks and workers take
    disjoint blocks. Each epoch yields every pair (with `window` K: every window of K consecutive
    pairs inside one trajectory) of this rank's rows exactly once.
    """

    def __init__(
        self,
        root: str | Path | TrajectoryDataset,
        batch_size: int = 64,
        rows: Sequence[int] | None = None,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        block_rows: int = 16,
        buffer_blocks: int = 4,
        shuffle: bool = True,
        window: int = 1,
    ):
        # every shard's checksum is checked here, once, before any batch; DataLoader workers inherit it
        self.ds: TrajectoryDataset = root if isinstance(root, TrajectoryDataset) else open_dataset(root)
        self.ds.ensure_whole()
        self.batch_size = batch_size
        self.rows = np.arange(len(self.ds)) if rows is None else np.sort(np.asarray(rows))
        self.seed, self.rank, self.world = seed, rank, world
        self.block_rows, self.buffer_blocks, self.shuffle = block_rows, buffer_blocks, shuffle
        self.blocks = np.unique(self.rows // block_rows)
        self.epoch = 0
        self.mask_id = self.ds.dims.V
        text = self.ds.manifest.text
        self.image_offset = None if text is None else text["image_offset"]
        N = self.ds.dims.N
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= N - 1:
            raise MigmError(
                f"a rollout window must be 1 to N - 1 = {N - 1} steps of the dataset's N = {N}, got {window!r}"
            )
        self.window = window

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def shard_of(self, blocks: np.ndarray) -> np.ndarray:
        """The shard holding each block's first row (0 for a dataset without shards)."""
        starts = getattr(self.ds, "starts", None)
        if starts is None:
            return np.zeros(len(blocks), dtype=np.int64)
        return np.searchsorted(starts, blocks * self.block_rows, side="right") - 1

    def my_blocks(self) -> np.ndarray:
        """This rank's and worker's blocks, shard by shard: the shard order and the block order inside
        each shard are shuffled by (seed, epoch), so a reader works through one shard at a time (a
        streamed dataset fetches each shard once per epoch) wherever the dataset lies."""
        rng = np.random.default_rng([self.seed, self.epoch])
        blocks = rng.permutation(self.blocks) if self.shuffle else self.blocks
        shards = self.shard_of(blocks)
        order = rng.permutation(int(shards.max()) + 1) if self.shuffle and len(blocks) else None
        if order is not None:
            rank_of = np.argsort(order)  # position of each shard in the shuffled shard order
            blocks = blocks[np.argsort(rank_of[shards], kind="stable")]
        blocks = blocks[self.rank :: self.world]
        info = get_worker_info()
        return blocks if info is None else blocks[info.id :: info.num_workers]

    def rows_of(self, blocks: np.ndarray) -> np.ndarray:
        return self.rows[np.isin(self.rows // self.block_rows, blocks)]

    def my_rows(self) -> np.ndarray:
        return self.rows_of(self.my_blocks())

    def num_pairs(self) -> int:
        """Pairs (windows) this rank yields per epoch (all its workers together)."""
        return len(self.rows_of(self.blocks[self.rank :: self.world])) * (self.ds.dims.N - self.window)

    def read_blocks(self, blocks: np.ndarray) -> dict[str, np.ndarray]:
        parts = []
        for b in blocks:
            rows = self.rows_of(np.array([b]))
            data = self.ds.rows(int(rows[0]), int(rows[-1]) + 1)
            parts.append({k: v[rows - rows[0]] for k, v in data.items()})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, info.id if info else 0])
        blocks = self.my_blocks()
        steps = self.ds.dims.N - self.window  # window starts per row: s = 0 … N−1−window
        shards = self.shard_of(blocks)
        for i in range(0, len(blocks), self.buffer_blocks):
            nxt = shards[i : i + self.buffer_blocks + 4096]  # this buffer's shards, then enough to name the next
            self.ds.prefetch(list(dict.fromkeys(nxt.tolist())))  # read-ahead hint
            data = self.read_blocks(blocks[i : i + self.buffer_blocks])
            pairs = np.arange(len(data["tokens"]) * steps)
            if self.shuffle:
                pairs = rng.permutation(pairs)
            for j in range(0, len(pairs), self.batch_size):
                chunk = pairs[j : j + self.batch_size]
                r, s = np.divmod(chunk, steps)
                yield window_batch(data, r, s, self.window, self.mask_id, self.image_offset)


def pair_loader(stream: PairStream, workers: int = 0) -> DataLoader:
    """A DataLoader over the stream's ready batches (the stream batches; the loader only parallelises)."""
    return DataLoader(stream, batch_size=None, num_workers=workers)
