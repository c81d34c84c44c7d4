"""Random access to a trajectory dataset by row, for both backends: `open_dataset(DIR)`.

A shard is checked before its first use: its structure when opened (fields, shapes, every chunk
present), its sha256 against the manifest and its rows' content (`store.content`), once per open
dataset, not per read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from migm.trajectories.errors import MigmError
from migm.trajectories.store.content import shard_content_problem
from migm.trajectories.store.manifest import Manifest, read_manifest, shard_path
from migm.trajectories.store.parquet_reader import ParquetShardReader
from migm.trajectories.store.schema import field_specs, sha256_path
from migm.trajectories.store.zarr_reader import ZarrShardReader

READERS = {"zarr": ZarrShardReader, "parquet": ParquetShardReader}


class TrajectoryDataset:
    """Rows in manifest order; `features` decoded to float16 [N, L+C, D] whatever the codec."""

    def __init__(self, root: str | Path, manifest: Manifest):
        self.root = Path(root)
        self.manifest = manifest
        self.dims = manifest.dims
        self.codec = manifest.codec
        self.specs = field_specs(self.dims, self.codec)
        self.shards = manifest.shards
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])
        self.verified: set[int] = set()  # shards whose checksum matched; copied into worker processes
        self._readers: dict[int, object] = {}  # opened lazily, so each worker process opens its own

    def __getstate__(self) -> dict:  # open file handles stay in the process that opened them
        return {**self.__dict__, "_readers": {}}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def path(self, k: int) -> Path:
        return shard_path(self.root, self.shards[k].name)

    def open_shard(self, k: int):
        """A reader of shard k after its structure checks (no checksum)."""
        shard = self.shards[k]
        path = self.path(k)
        if not path.exists():
            raise MigmError(f"shard {shard.name!r} is missing")
        return READERS[self.manifest.format](path, self.specs, shard.rows, name=shard.name)

    def reader(self, k: int):
        if k not in self._readers:
            reader = self.open_shard(k)
            self.check(k, reader)
            self._readers[k] = reader
        return self._readers[k]

    def check(self, k: int, reader=None) -> None:
        """Raise if shard k's bytes do not match the manifest, or its rows hold what no dump writes
        (token, step, class or branch out of range, non-finite features): checked once."""
        if k not in self.verified:
            problem = self.checksum_problem(k)
            if problem is None:
                reader = reader or self.open_shard(k)
                problem = shard_content_problem(reader, self.manifest, self.shards[k].rows)
            if problem:
                raise MigmError(
                    f"shard {self.shards[k].name!r} is damaged ({problem}); `migm verify {self.root}` lists every bad shard, rerunning the dump rebuilds them"
                )
            self.verified.add(k)

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        return k, i - int(self.starts[k])

    def rows(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Rows [start, stop) of one shard or several, with features decoded."""
        parts = []
        while start < stop:
            k, local = self.locate(start)
            n = min(stop - start, self.shards[k].rows - local)
            parts.append(self.reader(k).read(local, local + n))
            start += n
        raw = {name: np.concatenate([p[name] for p in parts]) for name in self.specs}
        out = {k: v for k, v in raw.items() if k not in self.codec.stored_fields()}
        out["features"] = self.codec.decode(raw)
        return out

    def step(self, i: int, s: int) -> np.ndarray:
        """Feature f_s of row i, float16 [L+C, D], without reading or decoding the rest of the row
        where the codec allows (delta: from the keyframe before s; Zarr reads only that group's chunk)."""
        if not 0 <= s < self.dims.N:
            raise IndexError(s)
        k, local = self.locate(i)
        lo, hi = self.codec.step_range(s)
        raw = self.reader(k).read(local, local + 1, steps=slice(lo, hi))
        return self.codec.decode_step({f: raw[f] for f in self.codec.stored_fields()}, s, first=lo)[0]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.rows(i, i + 1).items()}

    def checksum_problem(self, k: int) -> str | None:
        """Why shard k's bytes do not match the manifest ("missing", "checksum mismatch"), or None."""
        path = self.path(k)
        if not path.exists():
            return "missing"
        return None if sha256_path(path) == self.shards[k].sha256 else "checksum mismatch"

    def problems(self) -> list[str]:
        """One line per bad shard (missing, damaged, checksum mismatch); each shard is checked once."""
        found = []
        for k in range(len(self.shards)):
            try:
                self.reader(k)
            except MigmError as e:
                found.append(str(e))
        return found

    def ensure_whole(self) -> None:
        """Check every shard now (once, in this process: DataLoader worker copies inherit the result)."""
        found = self.problems()
        if found:
            more = f" (and {len(found) - 1} more bad shard(s); `migm verify` lists them)" if len(found) > 1 else ""
            raise MigmError(found[0] + more)


def open_dataset(root: str | Path, verify: bool = False) -> TrajectoryDataset:
    """Open a dataset folder. Each shard is checked (structure, then checksum) before its first
    read; with `verify`, every shard is checked now."""
    ds = TrajectoryDataset(root, read_manifest(root))
    if verify:
        ds.ensure_whole()
    return ds
