"""Read rows of one Parquet shard, one row group at a time (the last group read is cached)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from trajectories.errors import MigmError


class ParquetShardReader:
    def __init__(self, path: Path, fields: tuple[str, ...], shapes: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self.path = Path(path)
        try:
            self.file = pq.ParquetFile(self.path, page_checksum_verification=True)
        except Exception as e:
            raise MigmError(f"shard {self.path.name} cannot be opened ({type(e).__name__}: {e})") from None
        self.fields = fields
        self.shapes = shapes
        meta = self.file.metadata
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_start = np.cumsum([0, *self.group_rows])
        self.rows = int(self.group_start[-1])
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    def __len__(self) -> int:
        return self.rows

    def _group(self, g: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != g:
            try:
                table = self.file.read_row_group(g, columns=list(self.fields))
            except Exception as e:
                raise MigmError(f"shard {self.path.name} is damaged ({type(e).__name__}: {e})") from None
            out = {}
            for name in self.fields:
                shape, dtype = self.shapes[name]
                col = table.column(name).combine_chunks()
                for _ in shape:
                    col = col.flatten()
                out[name] = col.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(len(table), *shape)
            self._cache = (g, out)
        return self._cache[1]

    def read(self, start: int, stop: int) -> dict[str, np.ndarray]:
        parts = []
        g = int(np.searchsorted(self.group_start, start, side="right") - 1)
        while start < stop:
            data = self._group(g)
            lo, hi = start - self.group_start[g], min(stop, self.group_start[g + 1]) - self.group_start[g]
            parts.append({k: v[lo:hi] for k, v in data.items()})
            start = self.group_start[g] + hi
            g += 1
        return {k: np.concatenate([p[k] for p in parts]) for k in self.fields}
