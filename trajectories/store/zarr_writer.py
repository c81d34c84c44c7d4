"""Write one Zarr v3 shard (a group of arrays) under a temporary name; `commit` renames it.

Features are chunked one row per chunk (whole-sample reads are one decompression; with the delta codec
one keyframe group per chunk, so one step is read without the rest of the row) and packed into
Zarr shards of `rows_per_object` rows, so a dataset shard is a handful of files, not one per row.
The small per-row fields (tokens, order, ids) are one chunk each: readers load them once.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from migm.trajectories.store.codecs import Codec
from migm.trajectories.store.schema import Dims, field_specs


class ZarrShardWriter:
    def __init__(self, path: Path, rows: int, dims: Dims, codec: Codec, rows_per_object: int = 16, level: int = 3):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.group = zarr.open_group(str(self.tmp), mode="w", zarr_format=3)
        self.arrays = {}
        per_object = min(rows_per_object, rows)
        steps = codec.step_chunk(dims.N)  # delta: one chunk per keyframe group, so a step reads one group
        for name, (shape, dtype) in field_specs(dims, codec).items():
            per_row = name.startswith("features")
            compressors = ZstdCodec(level=level, checksum=True)  # a flipped byte fails loudly
            if name == "features_delta":  # small zigzag codes: bit planes compress far better than bytes
                compressors = [BloscCodec(typesize=1, cname="zstd", clevel=level, shuffle="bitshuffle"), Crc32cCodec()]
            self.arrays[name] = self.group.create_array(
                name,
                shape=(rows, *shape),
                dtype=dtype,
                # features: one chunk per row (per keyframe group for delta), packed into shard objects;
                # the small fields: one chunk
                chunks=(1, steps, *shape[1:]) if per_row else (rows, *shape),
                # a shard object spans whole rows: every step group (rounded up to whole groups)
                shards=(per_object, -(-shape[0] // steps) * steps, *shape[1:]) if per_row else None,
                compressors=compressors,
                fill_value=0,
                # every chunk is stored, zeros included, so readers can treat a missing chunk as damage
                config={"write_empty_chunks": True},
            )

    def write(self, start: int, fields: dict[str, np.ndarray]) -> None:
        """Rows [start, start + n) of every field."""
        for name, array in self.arrays.items():
            array[start : start + len(fields[name])] = fields[name]

    def commit(self) -> None:
        if self.path.exists():  # a stale shard from an overwritten dump
            shutil.rmtree(self.path)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
