"""A bounded local cache of whole shards for datasets on an object store (training that streams).

Each reading process (a training rank, a DataLoader worker) keeps its own cache folder under
`cache_dir`, removed when the process ends: a shard is downloaded whole (to a temporary name,
renamed when complete), its sha256 checked against the manifest on that first read, then read
from local disk. The folder never holds more than `size` bytes: the least recently used whole
shards are evicted first, never the one being read nor those fetched ahead. `ahead` shards after
the current one are fetched in background threads while the current one is read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.util import Finalize
from pathlib import Path

from migm.trajectories.errors import MigmError
from migm.trajectories.store.location import Location, storage_error
from migm.trajectories.store.manifest import Manifest
from migm.trajectories.store.schema import sha256_path


@dataclass(frozen=True)
class CacheConfig:
    dir: str | None = None  # default: the system's temporary folder
    size: int = 2 << 30  # bytes on local disk, per reading process
    ahead: int = 1  # shards fetched ahead of the one being read


def parse_size(text: str | int) -> int:
    """'512MB', '2GiB', '100k', '12345' -> bytes."""
    if isinstance(text, int):
        return text
    units = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12}
    units |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
    t = str(text).strip().lower()
    number = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(number) :].strip()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise MigmError(f"--cache-size takes a size like 2GB, 512MiB or 1000000, got {text!r}") from None
    if value <= 0:
        raise MigmError(f"--cache-size must be above 0, got {text!r}")
    return int(value)


def cache_config(folder: str | None, size: str | int) -> CacheConfig | None:
    """The cache of `--cache-dir` / `--cache-size` (None for size 0: read straight from the store)."""
    if str(size).strip() in ("0", "0b", "0B"):
        return None
    return CacheConfig(dir=folder, size=parse_size(size))


class ShardCache:
    def __init__(self, loc: Location, manifest: Manifest, cfg: CacheConfig):
        self.loc, self.shards, self.cfg = loc, manifest.shards, cfg
        need = (cfg.ahead + 1) * max(s.bytes for s in manifest.shards)
        if cfg.size < need:
            raise MigmError(
                f"--cache-size {cfg.size:,} bytes cannot hold the shard being read and {cfg.ahead} fetched ahead "
                f"({need:,} bytes for the largest shards of {loc.url}); give at least that"
            )
        self.folder: Path | None = None
        self.held: OrderedDict[int, Path] = OrderedDict()  # shard -> local copy, least recently used first
        self.pending: dict[int, Future] = {}
        self.pinned: set[int] = set()
        self.current: int | None = None  # the shard being read
        self.lock = threading.Lock()
        self.pool: ThreadPoolExecutor | None = None
        self.pid = None

    def __getstate__(self) -> dict:  # each process starts its own empty cache
        return {"loc": self.loc, "shards": self.shards, "cfg": self.cfg}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.folder, self.held, self.pending, self.pinned, self.current = None, OrderedDict(), {}, set(), None
        self.lock, self.pool, self.pid = threading.Lock(), None, None

    def _start(self) -> None:
        """This process's cache folder and fetch threads (made on first use, after any fork)."""
        if self.pid == os.getpid():
            return
        base = Path(self.cfg.dir or tempfile.gettempdir())
        try:
            base.mkdir(parents=True, exist_ok=True)
            self.folder = Path(tempfile.mkdtemp(prefix="migm-cache-", dir=base))
        except OSError as e:
            raise MigmError(f"cannot create the shard cache in {base}: {e.strerror or e}") from None
        # removed when the process ends, DataLoader workers included (their exit skips `atexit`, not this)
        Finalize(None, shutil.rmtree, args=(str(self.folder), True), exitpriority=0)
        self.held, self.pending, self.pinned, self.current = OrderedDict(), {}, set(), None
        self.lock, self.pool, self.pid = threading.Lock(), ThreadPoolExecutor(max(1, self.cfg.ahead)), os.getpid()

    def used(self) -> int:
        return sum(self.shards[k].bytes for k in list(self.held) + list(self.pending))

    def _make_room(self, k: int) -> bool:
        """Evict least recently used whole shards (not pinned) until k fits; False if it cannot."""
        while self.used() + self.shards[k].bytes > self.cfg.size:
            victim = next((j for j in self.held if j not in self.pinned), None)
            if victim is None:
                return False
            shutil.rmtree(self.held.pop(victim), ignore_errors=True)
        return True

    def _download(self, k: int) -> Path:
        shard = self.shards[k]
        dest = self.folder / f"{k:05d}-{Path(shard.name).name}"
        tmp = dest.with_name(dest.name + ".part")
        files = self.loc.files(shard.name)
        if not files:
            raise MigmError(f"shard {shard.name!r} is missing from {self.loc.url}")
        targets = [tmp / rel if rel else tmp for rel in files]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
        try:  # one call: an async store (s3fs, gcsfs, adlfs) fetches a Zarr shard's objects concurrently
            self.loc.fs.get(
                [self.loc.path(f"{shard.name}/{r}" if r else shard.name) for r in files], list(map(str, targets))
            )
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise storage_error(self.loc.url_of(shard.name), "read", e) from None
        if sha256_path(tmp) != shard.sha256:  # checked on this first read, before any row is used
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise MigmError(
                f"shard {shard.name!r} is damaged (checksum mismatch); `migm verify {self.loc.url}` lists every bad shard, rerunning the dump rebuilds them"
            )
        os.replace(tmp, dest)
        return dest

    def _fetch(self, k: int) -> None:
        try:
            path = self._download(k)
        except BaseException:
            with self.lock:
                self.pending.pop(k, None)  # nothing held: asked for again, fetched (and reported) again
            raise
        with self.lock:
            self.pending.pop(k, None)
            self.held[k] = path

    def prefetch(self, upcoming: list[int]) -> None:
        """Fetch the next `ahead` of these shards in the background, where that needs no eviction
        of the shard being read (otherwise they are fetched when asked for)."""
        self._start()
        with self.lock:
            self.pinned = {self.current, *upcoming[: self.cfg.ahead]} - {None}
            for k in upcoming[: self.cfg.ahead]:
                if k in self.held or k in self.pending:
                    continue
                if not self._make_room(k):
                    break
                self.pending[k] = self.pool.submit(self._fetch, k)

    def get(self, k: int, upcoming: list[int] = ()) -> Path:
        """The local copy of shard k (fetched and checked now if needed); pins it and the next ones."""
        self._start()
        with self.lock:
            self.current = k
            self.pinned = {k, *list(upcoming)[: self.cfg.ahead]}
            stale = [f for j, f in self.pending.items() if j not in self.pinned]
        for f in stale:  # fetches nobody wants now: let them land, so that they can be evicted
            f.exception()
        with self.lock:
            future = self.pending.get(k)
            mine = future is None and k not in self.held
            if mine:
                self._make_room(k)
                self.pending[k] = future = Future()
                future.set_running_or_notify_cancel()
        if mine:
            try:
                self._fetch(k)
                future.set_result(None)
            except BaseException as e:
                future.set_exception(e)
        if future is not None:  # None: already held
            future.result()
        with self.lock:
            self.held.move_to_end(k)
            path = self.held[k]
        self.prefetch(list(upcoming))
        return path

    def evicted(self, k: int) -> bool:
        return k not in self.held
