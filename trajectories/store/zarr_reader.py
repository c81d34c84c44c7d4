"""Read rows of one Zarr shard: features by whole per-row chunks, the small fields loaded once.

Opening checks the shard against the manifest: every field present with the manifest's shape and
dtype, and every chunk initialised (Zarr reads a missing chunk as its fill value, so a deleted chunk
file would otherwise read as zeros)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from migm.trajectories.errors import MigmError


class ZarrShardReader:
    def __init__(
        self, path: Path, specs: dict[str, tuple[tuple[int, ...], np.dtype]], rows: int, name: str | None = None
    ):
        # a local folder, or a zarr store (`FsspecStore` of a shard on an object store)
        self.path = Path(path) if isinstance(path, (str, Path)) else path
        self.name = name or getattr(self.path, "name", str(path))
        try:
            store = str(self.path) if isinstance(self.path, Path) else self.path
            group = zarr.open_group(store, mode="r", zarr_format=3)
            arrays = {field: group[field] for field in specs}
        except Exception as e:  # zarr raises many kinds for a damaged store
            raise MigmError(f"shard {self.name!r} cannot be opened ({type(e).__name__}: {e})") from None
        for field, (shape, dtype) in specs.items():
            a = arrays[field]
            if tuple(a.shape) != (rows, *shape) or a.dtype != dtype:
                raise MigmError(
                    f"shard {self.name!r}: field {field} is {a.dtype}{list(a.shape)}, the manifest says "
                    f"{dtype}{[rows, *shape]} (dims, codec or rows disagree with the data)"
                )
            if a.nchunks_initialized < a.nchunks:  # with sharding, counted per stored shard object
                raise MigmError(
                    f"shard {self.name!r} is damaged: field {field} has missing chunks "
                    f"({a.nchunks_initialized} of {a.nchunks} present)"
                )
        try:
            self.arrays = {f: a for f, a in arrays.items() if f.startswith("features")}
            self.small = {f: a[:] for f, a in arrays.items() if not f.startswith("features")}
        except Exception as e:
            raise MigmError(f"shard {self.name!r} is damaged ({type(e).__name__}: {e})") from None
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int, steps: slice | None = None) -> dict[str, np.ndarray]:
        """Rows [start, stop); features only at `steps` when given (only the chunks holding them are read)."""
        steps = slice(None) if steps is None else steps
        try:
            big = {name: a[start:stop, steps] for name, a in self.arrays.items()}
            return {**big, **{name: a[start:stop] for name, a in self.small.items()}}
        except Exception as e:
            raise MigmError(f"shard {self.name!r} is damaged ({type(e).__name__}: {e})") from None
