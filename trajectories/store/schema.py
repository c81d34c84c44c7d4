"""The trajectory dataset schema: fields, shard names, the manifest (`dataset.json`), checksums.

One row is one trajectory (one sample, one CFG branch): `features` [N, L+C, D] (through the codec),
`tokens` [L], `order` [L], `cond`, `branch` (0 conditional, 1 unconditional), `sample_id`, `seed`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajectories.errors import MigmError
from trajectories.store.codecs import Codec, codec_from_dict

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

    @property
    def T(self) -> int:  # positions in a feature: image + condition
        return self.L + self.C


def field_specs(dims: Dims, codec: Codec) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Per-row shape and dtype of every stored field."""
    feats = {"features": ((dims.N, dims.T, dims.D), np.dtype(np.float16))}
    if codec.lossy:
        feats = {
            "features_q": ((dims.N, dims.T, dims.D), np.dtype(np.int8)),
            "features_scale": ((dims.N, dims.T), np.dtype(np.float16)),
        }
    return {
        **feats,
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_manifest(root: str | Path) -> dict:
    """Read and check `dataset.json`; every problem is a short MigmError."""
    root = Path(root)
    if not root.is_dir():
        raise MigmError(f"{str(root)!r} is not a dataset folder")
    path = root / MANIFEST
    if not path.exists():
        raise MigmError(f"{str(root)!r} has no {MANIFEST}: not a trajectory dataset, or its dump has not finished")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MigmError(f"{path} is not valid JSON ({e.msg})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise MigmError(f"{path}: schema version {version!r} is not supported (this migm reads {SCHEMA_VERSION})")
    for key in ("format", "dims", "codec", "shards"):
        if key not in manifest:
            raise MigmError(f"{path}: missing field {key!r}")
    if manifest["format"] not in FORMATS:
        raise MigmError(f"{path}: unknown format {manifest['format']!r}")
    return manifest


def dataset_fingerprint(manifest: dict) -> str:
    """sha256 over what defines a dataset's content: the plan and every shard's checksum."""
    keys = ("base", "sampler", "dims", "codec", "num_samples", "seed", "classes")
    content = {k: manifest.get(k) for k in keys} | {"shards": [s["sha256"] for s in manifest["shards"]]}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def manifest_dims(manifest: dict) -> Dims:
    return Dims(**manifest["dims"])


def manifest_codec(manifest: dict) -> Codec:
    return codec_from_dict(manifest["codec"])
