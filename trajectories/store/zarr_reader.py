"""Read rows of one Zarr shard. A row's fields are whole per-row chunks: one read each."""

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
            self.arrays = {name: group[name] for name in fields}
        except Exception as e:  # zarr raises many kinds for a damaged store
            raise MigmError(f"shard {self.path.name} cannot be opened ({type(e).__name__}: {e})") from None
        self.rows = self.arrays["tokens"].shape[0]

    def __len__(self) -> int:
        return self.rows

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        try:
            return {name: a[start:stop] for name, a in self.arrays.items()}
        except Exception as e:
            raise MigmError(f"shard {self.path.name} is damaged ({type(e).__name__}: {e})") from None
