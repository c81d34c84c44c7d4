"""Read rows of one Parquet shard, one row group at a time (the last group read is cached).

Every group read checks each field's per-row shape against the manifest (the list lengths at every
nesting level), so a manifest whose dims disagree with the data is an error, not a reshaped mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from migm.trajectories.errors import MigmError


class ParquetShardReader:
    def __init__(
        self, path: Path, specs: dict[str, tuple[tuple[int, ...], np.dtype]], rows: int, name: str | None = None
    ):
        # a local file, or an object on a store (`dataset.RemoteFile`: its path and pyarrow filesystem)
        filesystem = getattr(path, "filesystem", None)
        self.path = Path(path) if filesystem is None else path
        self.name = name or Path(str(path)).name
        try:
            source = str(self.path) if filesystem is not None else self.path
            self.file = pq.ParquetFile(source, page_checksum_verification=True, filesystem=filesystem)
        except Exception as e:
            raise MigmError(f"shard {self.name!r} cannot be opened ({type(e).__name__}: {e})") from None
        self.fields = tuple(specs)
        self.shapes = specs
        missing = [f for f in self.fields if f not in self.file.schema_arrow.names]
        if missing:
            raise MigmError(f"shard {self.name!r} lacks field(s) {', '.join(missing)} the manifest's codec needs")
        meta = self.file.metadata
        self.group_rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self.group_start = np.cumsum([0, *self.group_rows])
        self.rows = int(self.group_start[-1])
        if self.rows != rows:
            raise MigmError(f"shard {self.name!r} has {self.rows} rows, the manifest says {rows}")
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None
        if self.rows:
            self._group(0)  # shapes checked on open; the group stays cached for the first read

    def __len__(self) -> int:
        return self.rows

    def _column(self, field: str, col: pa.Array, n: int) -> np.ndarray:
        shape, dtype = self.shapes[field]
        for level, size in enumerate(shape):
            lengths = pc.list_value_length(col)
            if len(lengths) and (pc.min(lengths).as_py() != size or pc.max(lengths).as_py() != size):
                raise MigmError(
                    f"shard {self.name!r}: field {field} does not have the manifest's shape {list(shape)} "
                    f"(axis {level}); dims or codec disagree with the data"
                )
            col = col.flatten()
        if col.type != pa.from_numpy_dtype(dtype):
            raise MigmError(f"shard {self.name!r}: field {field} holds {col.type}, the manifest says {dtype}")
        return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(n, *shape)

    def _group(self, g: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != g:
            try:
                table = self.file.read_row_group(g, columns=list(self.fields))
                columns = {f: table.column(f).combine_chunks() for f in self.fields}
            except Exception as e:
                raise MigmError(f"shard {self.name!r} is damaged ({type(e).__name__}: {e})") from None
            self._cache = (g, {f: self._column(f, col, len(table)) for f, col in columns.items()})
        return self._cache[1]

    def read(self, start: int, stop: int, steps: slice | None = None) -> dict[str, np.ndarray]:
        """Rows [start, stop); features only at `steps` when given (the row group is read whole)."""
        parts = []
        g = int(np.searchsorted(self.group_start, start, side="right") - 1)
        while start < stop:
            data = self._group(g)
            lo, hi = start - self.group_start[g], min(stop, self.group_start[g + 1]) - self.group_start[g]
            parts.append(
                {
                    k: v[lo:hi, steps] if steps is not None and k.startswith("features") else v[lo:hi]
                    for k, v in data.items()
                }
            )
            start = self.group_start[g] + hi
            g += 1
        return {k: np.concatenate([p[k] for p in parts]) for k in self.fields}
