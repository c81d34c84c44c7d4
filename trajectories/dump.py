"""`migm dump-trajectories`: roll out a base with a recorder and stream every step's features to
whole shards (Zarr or Parquet), resumable and data-parallel.

Shard k holds samples [k·S, (k+1)·S), each as one row per CFG branch (conditional first). A shard is
written under a temporary name and renamed when complete; `dataset.json` is written last. A rerun
of the same command keeps the shards that exist and makes the rest; every sample draws its noise
from its own seed, so the result equals an uninterrupted run. Under torchrun / accelerate, rank r
writes the shards k ≡ r (mod world) and rank 0 writes the manifest after a barrier.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from trajectories.errors import MigmError
from trajectories import __version__
from trajectories.rollout import SamplerConfig, rollout, sample_seeds
from trajectories.store.codecs import codec_from_dict, parse_codec
from trajectories.store.parquet_writer import ParquetShardWriter
from trajectories.store.zarr_writer import ZarrShardWriter
from trajectories.store.schema import (
    FORMATS, MANIFEST, SCHEMA_VERSION, Dims, path_size, shard_name, sha256_path, write_json_atomic,
)  # fmt: skip

PENDING = ".migm-dump.json"  # the intended config, written first: what a rerun resumes against
WRITERS = {"zarr": ZarrShardWriter, "parquet": ParquetShardWriter}


@dataclass
class DumpConfig:
    num_samples: int = 2048
    steps: int = 16
    out: str = "data/digits-n16"
    format: str = "zarr"
    codec: str = "lossless"
    shard_size: int = 256  # samples per shard; a shard has one row per sample and CFG branch
    batch_size: int = 64
    seed: int = 0
    classes: list[int] | None = None  # default: every class of the base
    guidance: float | None = None
    r_temp: float | None = None
    sm_temp: float | None = None


def plan(cfg: DumpConfig, base) -> dict:
    """Everything that defines the dataset's content: equal plans give equal datasets."""
    if cfg.format not in FORMATS:
        raise MigmError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    for name in ("num_samples", "shard_size", "batch_size"):
        if getattr(cfg, name) < 1:
            raise MigmError(f"{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    codec = parse_codec(cfg.codec)
    sampler = SamplerConfig.for_base(base, cfg.steps, guidance=cfg.guidance, r_temp=cfg.r_temp, sm_temp=cfg.sm_temp)
    classes = sorted(set(cfg.classes)) if cfg.classes else list(range(base.num_classes))
    bad = [c for c in classes if not 0 <= c < base.num_classes]
    if bad:
        raise MigmError(f"classes must be in 0-{base.num_classes - 1}, got {bad}")
    dims = Dims(N=cfg.steps, L=base.L, C=base.C, D=base.D, V=base.V)
    return {
        "schema_version": SCHEMA_VERSION,
        "format": cfg.format,
        "base": {"name": base.name, "fingerprint": base.fingerprint, "precision": base.precision},
        "sampler": sampler.to_dict(),
        "dims": dims.__dict__,
        "codec": codec.to_dict(),
        "num_samples": cfg.num_samples,
        "shard_size": cfg.shard_size,
        "seed": cfg.seed,
        "classes": classes,
        "branches": 2 if sampler.guidance > 0 else 1,
    }


def prepare_output(out: Path, intended: dict, overwrite: bool) -> dict | None:
    """Check an existing output against the plan. Returns the finished manifest if already done."""
    if not out.parent.is_dir():
        raise MigmError(f"output directory {str(out.parent)!r} does not exist")
    if out.exists() and any(out.iterdir()):
        previous = None
        for name in (MANIFEST, PENDING):
            if (out / name).exists():
                previous = json.loads((out / name).read_text())
                break
        same = previous is not None and {k: previous.get(k) for k in intended} == intended
        if not same and not overwrite:
            what = "holds a dataset made with another config" if previous else "is not empty and is not a migm dataset"
            raise MigmError(f"{out} {what}; pass --overwrite to replace it")
        if not same:
            shutil.rmtree(out)
        elif (out / MANIFEST).exists():
            return previous
    for sub in ("shards", "data"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for tmp in (out / sub).glob("*.tmp-*"):  # left by a killed run
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    write_json_atomic(out / PENDING, intended)
    return None


def shard_samples(k: int, plan: dict) -> range:
    """The sample indices of shard k."""
    S = plan["shard_size"]
    return range(k * S, min((k + 1) * S, plan["num_samples"]))


class StepRecorder:
    """Collects every step's feature of one batch as float16 [samples·branches, N, L+C, D] on the host,
    sample-major (rollout rows are branch-major: all conditional, then all unconditional). The batch
    is the only thing held in memory: peak host memory is set by --batch-size, not the dataset."""

    def __init__(self, samples: int, branches: int, dims: Dims):
        self.samples, self.branches = samples, branches
        self.features = np.empty((samples * branches, dims.N, dims.T, dims.D), dtype=np.float16)

    def __call__(self, step: int, feature: torch.Tensor, new_ids: torch.Tensor, new_pos: torch.Tensor) -> None:
        f = feature.to(torch.float16).cpu().numpy()
        self.features[:, step] = f.reshape(self.branches, self.samples, *f.shape[1:]).swapaxes(0, 1).reshape(f.shape)


def dump_shard(base, intended: dict, k: int, out: Path, batch_size: int, progress: Callable[[int], None] | None) -> None:
    n, S, seed = intended["num_samples"], intended["shard_size"], intended["seed"]
    samples = shard_samples(k, intended)
    first, last = samples.start, samples.stop
    branches, classes = intended["branches"], intended["classes"]
    dims, codec, sampler = Dims(**intended["dims"]), codec_from_dict(intended["codec"]), SamplerConfig(**intended["sampler"])
    path = out / shard_name(intended["format"], k, -(-n // S))
    writer = WRITERS[intended["format"]](path, (last - first) * branches, dims, codec)
    try:
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            ids = np.arange(start, stop)
            seeds = sample_seeds(seed, start, stop - start)
            cond = torch.tensor([classes[i % len(classes)] for i in ids])
            b = stop - start
            rec = StepRecorder(b, branches, dims)
            result = rollout(base, cond, seeds, sampler, recorder=rec)
            rep = lambda a: np.repeat(np.asarray(a), branches, axis=0)  # noqa: E731
            fields = {
                **codec.encode(rec.features),
                "tokens": rep(result.tokens.cpu().numpy()).astype(np.int16),
                "order": rep(result.order.cpu().numpy()).astype(np.int16),
                "cond": rep(cond.numpy()).astype(np.int32),
                "branch": np.tile(np.arange(branches), b).astype(np.uint8),
                "sample_id": rep(ids).astype(np.int64),
                "seed": rep(np.array(seeds, dtype=np.uint64)),
            }
            writer.write((start - first) * branches, fields)
            if progress is not None:
                progress(b)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def dump_trajectories(cfg: DumpConfig, base, overwrite: bool = False,
                      progress: Callable[[int], None] | None = None) -> dict:  # fmt: skip
    """Dump `cfg.num_samples` trajectories of the loaded `base` to `cfg.out`; returns the manifest.
    Under torchrun each rank loads its base on its own device (`resolve_device` reads LOCAL_RANK)."""
    from accelerate import PartialState

    state = PartialState(cpu=base.device.type == "cpu")
    intended = plan(cfg, base)
    out = Path(cfg.out)
    done = None
    if state.is_main_process:
        done = prepare_output(out, intended, overwrite)
    state.wait_for_everyone()
    if done is None and not state.is_main_process and (out / MANIFEST).exists():
        done = json.loads((out / MANIFEST).read_text())
    if done is not None:
        return done

    total = -(-cfg.num_samples // cfg.shard_size)
    for k in range(state.process_index, total, state.num_processes):
        if (out / shard_name(cfg.format, k, total)).exists():  # whole: only complete shards get this name
            if progress is not None:
                progress(len(shard_samples(k, intended)))
            continue
        dump_shard(base, intended, k, out, cfg.batch_size, progress)
    state.wait_for_everyone()

    manifest = None
    if state.is_main_process:
        manifest = finish(out, intended, total, processes=state.num_processes)
    state.wait_for_everyone()
    return manifest or json.loads((out / MANIFEST).read_text())


def finish(out: Path, intended: dict, total: int, processes: int) -> dict:
    """Checksum every shard, render the card, then commit `dataset.json` (written last)."""
    from cards import render_dataset_card

    shards = []
    for k in range(total):
        name = shard_name(intended["format"], k, total)
        rows = len(shard_samples(k, intended)) * intended["branches"]
        shards.append({"name": name, "rows": rows, "sha256": sha256_path(out / name), "bytes": path_size(out / name)})
    manifest = {**intended, "shards": shards, "rows": sum(s["rows"] for s in shards), "created_by": f"migm {__version__}",
                "processes": processes}  # fmt: skip
    (out / "README.md").write_text(render_dataset_card(manifest))
    write_json_atomic(out / MANIFEST, manifest)
    (out / PENDING).unlink(missing_ok=True)
    for sub in ("shards", "data"):
        if (out / sub).is_dir() and not any((out / sub).iterdir()):
            (out / sub).rmdir()
    return manifest
