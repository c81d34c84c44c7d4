"""Read rows of one Zarr shard: features by whole per-row chunks, the small fields loaded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from trajectories.errors import MigmError


class ZarrShardReader:
    def __init__(self, path: Path, fields: tuple[str, ...]):
        self.path = Path(path)
        try:
            group = zarr.open_group(str(self.path), mode="r", zarr_format=3)
            self.arrays = {name: group[name] for name in fields if name.startswith("features")}
            self.small = {name: group[name][:] for name in fields if not name.startswith("features")}
        except Exception as e:  # zarr raises many kinds for a damaged store
            raise MigmError(f"shard {self.path.name} cannot be opened ({type(e).__name__}: {e})") from None
        self.rows = len(self.small["tokens"])

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        try:
            big = {name: a[start:stop] for name, a in self.arrays.items()}
            return {**big, **{name: a[start:stop] for name, a in self.small.items()}}
        except Exception as e:
            raise MigmError(f"shard {self.path.name} is damaged ({type(e).__name__}: {e})") from None
