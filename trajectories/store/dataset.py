"""Random access to a trajectory dataset by row, for both backends: `open_dataset(DIR)`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trajectories.errors import MigmError
from trajectories.store.parquet_reader import ParquetShardReader
from trajectories.store.schema import field_specs, manifest_codec, manifest_dims, read_manifest, sha256_path
from trajectories.store.zarr_reader import ZarrShardReader


class TrajectoryDataset:
    """Rows in manifest order; `features` decoded to float16 [N, L+C, D] whatever the codec."""

    def __init__(self, root: str | Path, manifest: dict):
        self.root = Path(root)
        self.manifest = manifest
        self.dims = manifest_dims(manifest)
        self.codec = manifest_codec(manifest)
        self.specs = field_specs(self.dims, self.codec)
        self.shards = manifest["shards"]
        self.starts = np.cumsum([0] + [s["rows"] for s in self.shards])
        self._readers: dict[int, object] = {}  # opened lazily, so each worker process opens its own

    def __len__(self) -> int:
        return int(self.starts[-1])

    def reader(self, k: int):
        if k not in self._readers:
            path = self.root / self.shards[k]["name"]
            if not path.exists():
                raise MigmError(f"shard {self.shards[k]['name']} is missing")
            fields = tuple(self.specs)
            if self.manifest["format"] == "zarr":
                self._readers[k] = ZarrShardReader(path, fields)
            else:
                self._readers[k] = ParquetShardReader(path, fields, self.specs)
            if len(self._readers[k]) != self.shards[k]["rows"]:
                raise MigmError(f"shard {self.shards[k]['name']} has {len(self._readers[k])} rows, the manifest says {self.shards[k]['rows']}")
        return self._readers[k]

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
            n = min(stop - start, self.shards[k]["rows"] - local)
            parts.append(self.reader(k).read(local, local + n))
            start += n
        raw = {name: np.concatenate([p[name] for p in parts]) for name in self.specs}
        out = {k: v for k, v in raw.items() if k not in self.codec.stored_fields()}
        out["features"] = self.codec.decode(raw)
        return out

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.rows(i, i + 1).items()}

    def checksum_problem(self, k: int) -> str | None:
        """Why shard k's bytes do not match the manifest ("missing", "checksum mismatch"), or None."""
        path = self.root / self.shards[k]["name"]
        if not path.exists():
            return "missing"
        return None if sha256_path(path) == self.shards[k]["sha256"] else "checksum mismatch"

    def verify(self) -> list[str]:
        """Names of shards whose bytes do not match the manifest's sha256 (or that are missing)."""
        return [s["name"] for k, s in enumerate(self.shards) if self.checksum_problem(k)]


def open_dataset(root: str | Path, verify: bool = False) -> TrajectoryDataset:
    """Open a dataset folder; with `verify`, every shard's checksum is checked first."""
    ds = TrajectoryDataset(root, read_manifest(root))
    if verify:
        bad = ds.verify()
        if bad:
            raise MigmError(f"{len(bad)} bad shard(s) in {root}: {', '.join(bad)}")
    return ds
