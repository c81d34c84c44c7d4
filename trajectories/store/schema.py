"""The trajectory dataset schema: fields, shard names, checksums (the manifest is in `manifest.py`).

One row is one trajectory (one sample, one CFG branch): `features` [N, L+C, D] (through the codec),
`tokens` [L], `order` [L], `cond` (class id, or prompt index for text bases), `branch` (0 conditional,
1 unconditional), `sample_id`, `seed`; text rows also `length`, `cells` [L] and `prompt_ids` [P].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from migm.trajectories.errors import MigmError
from migm.trajectories.store.codecs import Codec

SCHEMA_VERSION = 1
MANIFEST = "dataset.json"
FORMATS = ("zarr", "parquet")


@dataclass(frozen=True)
class Dims:
    N: int
    L: int
    C: int
    D: int
    V: int
    P: int = 0  # text bases: width of the stored prompt ids (0: class-conditional)

    @property
    def T(self) -> int:  # positions in a feature: image + condition (text rows: the longest row)
        return self.L + self.C


def field_specs(dims: Dims, codec: Codec) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-row shape and dtype of every stored field."""
    feats = {"features": ((dims.N, dims.T, dims.D), np.dtype(np.float16))}
    if codec.lossy:
        codes = {"quant": ("features_q", np.int8), "delta": ("features_delta", np.uint8)}[codec.name]
        feats = {
            codes[0]: ((dims.N, dims.T, dims.D), np.dtype(codes[1])),
            "features_scale": ((dims.N, dims.T), np.dtype(np.float16)),
        }
    # Text rows differ in length: features are right-padded to T with zeros, and each row carries its
    # length, the feature position of each image cell, and its branch's prompt ids (-1 padded to P).
    text = {}
    if dims.P:
        text = {
            "length": ((), np.dtype(np.int32)),
            "cells": ((dims.L,), np.dtype(np.int32)),
            "prompt_ids": ((dims.P,), np.dtype(np.int32)),
        }
    return {
        **feats,
        **text,
        "tokens": ((dims.L,), np.dtype(np.int16)),
        "order": ((dims.L,), np.dtype(np.int16)),
        "cond": ((), np.dtype(np.int32)),
        "branch": ((), np.dtype(np.uint8)),
        "sample_id": ((), np.dtype(np.int64)),
        "seed": ((), np.dtype(np.uint64)),
    }


def shard_name(fmt: str, index: int, total: int) -> str:
    if fmt == "zarr":
        return f"shards/shard-{index:05d}.zarr"
    return f"data/train-{index:05d}-of-{total:05d}.parquet"


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and bytes, in sorted order)."""
    h = hashlib.sha256()
    if path.is_symlink() or (path.is_dir() and any(p.is_symlink() for p in path.rglob("*"))):
        raise MigmError(f"{str(path)!r} is or holds a link; a shard is plain files only")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if f != path:
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def path_size(path: Path) -> int:
    """Bytes of a file, or of all files under a folder."""
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write to a temporary name, flush to disk, rename: a reader sees the old file or the new one.
    A write error (disk full, read-only folder) is one line naming the file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """`write_json_atomic` for any text."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MigmError(f"cannot write {path}: {e.strerror or e}") from None
