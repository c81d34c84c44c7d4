"""Write one Parquet shard (the Hub's layout) under a temporary name; `commit` renames it.

Columns follow `datasets`' own storage: `features` is a nested list of float16 that `datasets`
reads back as `Array3D` (the schema carries the `huggingface` feature metadata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from migm.trajectories.store.codecs import Codec
from migm.trajectories.store.schema import Dims, field_specs


def nested_list(values: np.ndarray) -> pa.Array:
    """[rows, *shape] numpy -> arrow list<list<…>> with one outer entry per row."""
    arr = pa.array(values.reshape(-1))
    for size in reversed(values.shape[1:]):
        count = len(arr) // size
        arr = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * size), arr)
    return arr


def hf_features(dims: Dims, codec: Codec) -> dict:
    """The `datasets.Features` of a row, as the dict `datasets` stores in Parquet metadata."""
    import datasets

    kinds = {1: datasets.Sequence, 2: datasets.Array2D, 3: datasets.Array3D}
    out = {}
    for name, (shape, dtype) in field_specs(dims, codec).items():
        if len(shape) == 0:
            out[name] = datasets.Value(dtype.name)
        elif len(shape) == 1:
            out[name] = datasets.Sequence(datasets.Value(dtype.name), length=shape[0])
        else:
            out[name] = kinds[len(shape)](shape=shape, dtype=dtype.name)
    return datasets.Features(out)


def arrow_schema(dims: Dims, codec: Codec) -> pa.Schema:
    features = hf_features(dims, codec)
    fields = []
    for name, (shape, dtype) in field_specs(dims, codec).items():
        t = pa.from_numpy_dtype(dtype)
        if len(shape) == 1:
            t = pa.list_(t, shape[0])
        else:
            for _ in shape:
                t = pa.list_(t)
        fields.append(pa.field(name, t))
    meta = {"huggingface": json.dumps({"info": {"features": features.to_dict()}})}
    return pa.schema(fields, metadata=meta)


class ParquetShardWriter:
    def __init__(self, path: Path, rows: int, dims: Dims, codec: Codec, rows_per_group: int = 16, level: int = 3):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        self.specs = field_specs(dims, codec)
        self.schema = arrow_schema(dims, codec)
        self.rows_per_group = rows_per_group
        self.written = 0
        # Parquet widens uint8 to 32-bit integers: byte-split streams keep the zero high bytes apart,
        # so the delta codes compress as bytes (signed quant codes would split into sign bytes: not used)
        split = {}
        if "features_delta" in self.specs:
            split = {"features_delta" + ".list.element" * len(self.specs["features_delta"][0]): "BYTE_STREAM_SPLIT"}
        self.writer = pq.ParquetWriter(
            self.tmp,
            self.schema,
            compression="zstd",
            compression_level=level,
            use_dictionary=False,
            write_statistics=False,
            write_page_checksum=True,
            column_encoding=split or None,
        )

    def write(self, start: int, fields: dict[str, np.ndarray]) -> None:
        """Rows are appended in order (Parquet cannot seek); `start` must follow the last write."""
        assert start == self.written, f"parquet rows must be written in order ({start} != {self.written})"
        self.written += len(fields["tokens"])
        columns = []
        for name, (shape, dtype) in self.specs.items():
            values = np.ascontiguousarray(fields[name], dtype=dtype)
            if len(shape) == 0:
                columns.append(pa.array(values))
            elif len(shape) == 1:
                columns.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), shape[0]))
            else:
                columns.append(nested_list(values))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self.writer.write_table(table, row_group_size=self.rows_per_group)

    def commit(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
