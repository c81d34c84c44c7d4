"""Random access to a trajectory dataset by row, for both backends: `open_dataset(DIR or URL)`.

A shard is checked before its first use: its structure when opened (fields, shapes, every chunk
present), its sha256 against the manifest and its rows' content (`store.content`), once per open
dataset, not per read.

A dataset on an object store is read either straight from the store (zarr's own `FsspecStore`,
pyarrow through fsspec; its checksum streamed over its objects first), or with a `cache`: each
shard downloaded whole into a bounded local cache, its checksum checked on that first read, then
read from disk, the next shards fetched ahead (`store.cache`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from migm.trajectories.errors import MigmError
from migm.trajectories.store.cache import CacheConfig, ShardCache
from migm.trajectories.store.content import shard_content_problem
from migm.trajectories.store.location import Location, open_location
from migm.trajectories.store.manifest import Manifest, read_manifest, shard_path
from migm.trajectories.store.parquet_reader import ParquetShardReader
from migm.trajectories.store.schema import field_specs, path_size, sha256_path
from migm.trajectories.store.zarr_reader import ZarrShardReader

READERS = {"zarr": ZarrShardReader, "parquet": ParquetShardReader}


class TrajectoryDataset:
    """Rows in manifest order; `features` decoded to float16 [N, L+C, D] whatever the codec."""

    cache: ShardCache | None = None  # a store dataset read through a local cache (subclasses: none)

    def __init__(self, root: str | Path | Location, manifest: Manifest, cache: CacheConfig | None = None):
        self.loc = open_location(root)
        self.root = self.loc.url  # as the user gave it: messages name it
        self.manifest = manifest
        self.dims = manifest.dims
        self.codec = manifest.codec
        self.specs = field_specs(self.dims, self.codec)
        self.shards = manifest.shards
        self.starts = np.cumsum([0] + [s.rows for s in self.shards])
        self.verified: set[int] = set()  # shards whose checksum matched; copied into worker processes
        self._readers: dict[int, object] = {}  # opened lazily, so each worker process opens its own
        self._pid = os.getpid()
        self.cache = ShardCache(self.loc, manifest, cache) if cache is not None and not self.loc.local else None
        self.upcoming: list[int] = []  # shards the reader will want next (read-ahead hint)

    def __getstate__(self) -> dict:  # open file handles stay in the process that opened them
        return {**self.__dict__, "_readers": {}}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def path(self, k: int) -> Path:
        """Local folders only: the path of shard k, refusing a link."""
        return shard_path(self.loc.folder, self.shards[k].name)

    def size(self, k: int) -> int:
        return self.loc.size(self.shards[k].name) if not self.loc.local else path_size(self.path(k))

    def prefetch(self, upcoming: list[int]) -> None:
        """A hint: these shards are read next, in this order (a cached store dataset fetches the
        first ones in the background)."""
        self.upcoming = list(upcoming)
        if self.cache is not None and upcoming:
            self.cache.prefetch(self.upcoming)

    def open_shard(self, k: int):
        """A reader of shard k after its structure checks (no checksum; a cached copy was checked
        when it was downloaded)."""
        shard = self.shards[k]
        reader = READERS[self.manifest.format]
        if self.cache is not None:
            after = self.upcoming[self.upcoming.index(k) + 1 :] if k in self.upcoming else self.upcoming
            return reader(self.cache.get(k, after), self.specs, shard.rows, name=shard.name)
        if not self.loc.local:
            if not self.loc.exists(shard.name):
                raise MigmError(f"shard {shard.name!r} is missing from {self.root}")
            return reader(remote_source(self.loc, shard.name), self.specs, shard.rows, name=shard.name)
        path = self.path(k)
        if not path.exists():
            raise MigmError(f"shard {shard.name!r} is missing")
        return reader(path, self.specs, shard.rows, name=shard.name)

    def reader(self, k: int):
        if self._pid != os.getpid():  # a forked DataLoader worker: the parent's readers (and their
            self._readers, self._pid = {}, os.getpid()  # store clients and event loops) are not its own
        if k in self._readers and self.cache is not None and self.cache.evicted(k):
            del self._readers[k]  # its local copy was evicted: fetched (and checked) again
        if k not in self._readers:
            reader = self.open_shard(k)
            self.check(k, reader)
            self._readers[k] = reader
        return self._readers[k]

    def check(self, k: int, reader=None) -> None:
        """Raise if shard k's bytes do not match the manifest, or its rows hold what no dump writes
        (token, step, class or branch out of range, non-finite features): checked once."""
        if k not in self.verified:
            # a cached copy's checksum was checked when it was downloaded
            problem = None if self.cache is not None else self.checksum_problem(k)
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
        if not self.loc.local:
            name = self.shards[k].name
            if not self.loc.files(name):
                return "missing"
            return None if self.loc.sha256(name) == self.shards[k].sha256 else "checksum mismatch"
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
        """Check every shard now (once, in this process: DataLoader worker copies inherit the result).
        With a cache (streaming), only that every shard is there: each is checked when first fetched."""
        if self.cache is not None:
            held = {"/".join(rel.split("/")[:2]) for rel in self.loc.entries(set())}  # one listing
            missing = [s.name for s in self.shards if s.name not in held]
            if missing:
                raise MigmError(
                    f"shard {missing[0]!r} is missing from {self.root}"
                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    + f"; `migm verify {self.root}` lists every bad shard"
                )
            return
        found = self.problems()
        if found:
            more = f" (and {len(found) - 1} more bad shard(s); `migm verify` lists them)" if len(found) > 1 else ""
            raise MigmError(found[0] + more)


def open_dataset(
    root: str | Path | Location,
    verify: bool = False,
    storage_options: dict | None = None,
    cache: CacheConfig | None = None,
) -> TrajectoryDataset:
    """Open a dataset folder or URL. Each shard is checked (structure, then checksum) before its
    first read; with `verify`, every shard is checked now. `cache`: a store dataset is read
    through a bounded local cache of whole shards (ignored for local folders)."""
    loc = open_location(root, storage_options)
    ds = TrajectoryDataset(loc, read_manifest(loc), cache=cache)
    if verify:
        ds.ensure_whole()
    return ds


def remote_source(loc: Location, name: str):
    """What a shard reader opens on a store: zarr's own fsspec store for a Zarr group, the object's
    path with pyarrow's filesystem (through fsspec) for a Parquet file."""
    if name.endswith(".zarr"):
        from zarr.storage import FsspecStore

        return FsspecStore(loc.async_fs(), path=loc.path(name), read_only=True)
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return RemoteFile(loc.path(name), PyFileSystem(FSSpecHandler(loc.fs)))


class RemoteFile:
    """A Parquet object on a store: its path inside a pyarrow filesystem."""

    def __init__(self, path: str, filesystem):
        self.path, self.filesystem = path, filesystem

    def __str__(self) -> str:
        return self.path
