"""`migm dump-trajectories`: roll out a base with a recorder and stream every step's features to
whole shards (Zarr or Parquet), resumable and data-parallel.

Shard k holds samples [k·S, (k+1)·S), each as one row per CFG branch (conditional first). A shard is
written under a temporary name and renamed when complete; `dataset.json` is written last. A rerun
of the same command keeps the shards that exist and makes the rest; every sample draws its noise
from its own seed, so the result equals an uninterrupted run. Under torchrun / accelerate, rank r
writes the shards k ≡ r (mod world) and rank 0 writes the manifest after a barrier.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from migm.trajectories import __version__
from migm.trajectories.checks import check_int, check_removable_dir, check_seed, check_writable_dir, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds, stack_cond
from migm.trajectories.store.codecs import parse_codec
from migm.trajectories.store.manifest import (
    SUBDIR,
    BaseInfo,
    Manifest,
    Plan,
    Shard,
    read_manifest,
    read_plan,
    write_manifest,
)
from migm.trajectories.store.parquet_writer import ParquetShardWriter
from migm.trajectories.store.schema import (
    FORMATS,
    MANIFEST,
    SCHEMA_VERSION,
    Dims,
    path_size,
    sha256_path,
    write_json_atomic,
)
from migm.trajectories.store.zarr_writer import ZarrShardWriter

PENDING = ".migm-dump.json"  # the intended config, written first: what a rerun resumes against
CHECKSUM = ".sha256"  # beside each committed shard of an unfinished dump: its checksum, for the rerun
OWN_FILES = (MANIFEST, "README.md", PENDING)  # what this tool writes in a dataset folder besides shards
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
    prompts: list[str] | None = None  # text bases: sample i is conditioned on prompts[i % len(prompts)]
    guidance: float | None = None
    r_temp: float | None = None
    sm_temp: float | None = None
    temperature: float | None = None


def plan(cfg: DumpConfig, base) -> Plan:
    """Everything that defines the dataset's content: equal plans give equal datasets."""
    if cfg.format not in FORMATS:
        raise MigmError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    for name in ("num_samples", "shard_size", "batch_size"):
        check_int(name.replace("_", "-"), getattr(cfg, name), low=1)
    check_seed(cfg.seed)
    codec = parse_codec(cfg.codec)
    sampler = SamplerConfig.for_base(
        base, cfg.steps, guidance=cfg.guidance, r_temp=cfg.r_temp, sm_temp=cfg.sm_temp, temperature=cfg.temperature
    )
    branches = 2 if sampler.guidance > 0 else 1
    if base.text:
        classes, text, dims = text_layout(cfg, base, branches)
    else:
        if cfg.prompts:
            raise MigmError(f"--model {base.name} is class-conditional: give --classes, not prompts")
        classes = sorted(set(cfg.classes)) if cfg.classes else list(range(base.num_classes))
        bad = [c for c in classes if not 0 <= c < base.num_classes]
        if bad:
            raise MigmError(f"classes must be in 0-{base.num_classes - 1}, got {bad}")
        text, dims = None, Dims(N=cfg.steps, L=base.L, C=base.C, D=base.D, V=base.V)
    return Plan(
        schema_version=SCHEMA_VERSION,
        format=cfg.format,
        base=BaseInfo(name=base.name, fingerprint=base.fingerprint, precision=base.precision),
        sampler=sampler,
        dims=dims,
        codec=codec,
        num_samples=cfg.num_samples,
        shard_size=cfg.shard_size,
        seed=cfg.seed,
        classes=classes,
        branches=branches,
        text=text,
    )


def text_layout(cfg: DumpConfig, base, branches: int) -> tuple[list[int], dict, Dims]:
    """A text base's prompts as the plan stores them: classes index the prompts, features are padded
    to the longest row of any prompt (either branch), prompt ids to the widest branch prompt."""
    if cfg.classes:
        raise MigmError(
            f"--model {base.name} is text-to-image: give prompts (--prompt / --prompts FILE), not --classes"
        )
    prompts = list(cfg.prompts or getattr(base, "default_prompts", None) or [])  # an embedded base brings its own
    if not prompts:
        raise MigmError(f"--model {base.name} is text-to-image: give --prompt TEXT or --prompts FILE")
    ids = base.encode_prompts(prompts)
    rows = stack_cond(ids, base.null_cond(len(ids))) if branches == 2 else ids
    T = int(base.feature_valid(rows).shape[1])
    dims = Dims(N=cfg.steps, L=base.L, C=T - base.L, D=base.D, V=base.V, P=int(rows.shape[1]))
    text = {"prompts": prompts, "image_offset": base.image_offset}  # None: new tokens are the grid's cells
    return list(range(len(prompts))), text, dims


# ---- the output folder: what this tool wrote there, and nothing else, may be replaced -------------


def is_ours(rel: str, plan: Plan | None) -> bool:
    """Whether `rel` (a path inside the dataset folder) is one this tool writes for `plan`: the
    manifest, card and state file, the format's shard folder, each shard (and everything inside a
    Zarr shard), its recorded checksum and its temporary names."""
    if rel in OWN_FILES or rel == MANIFEST + ".tmp":
        return True
    if plan is None:
        return False
    if rel == SUBDIR[plan.format]:
        return True
    for k in range(plan.num_shards):
        name = plan.shard_name(k)
        if rel == name or rel.startswith(name + "/") or rel == name + CHECKSUM or rel.startswith(name + ".tmp-"):
            return True
    return False


def foreign_entries(out: Path, plan: Plan | None) -> list[str]:
    """Entries of `out` this tool did not write for `plan` (links are not followed)."""
    found = []
    container = SUBDIR[plan.format] if plan is not None else None
    for dirpath, dirnames, filenames in os.walk(out):
        here = Path(dirpath).relative_to(out)
        for name in sorted(dirnames) + sorted(filenames):
            rel = (here / name).as_posix()
            if not is_ours(rel, plan):
                found.append(rel)
            if name in dirnames and rel != container:
                dirnames.remove(name)  # a shard's insides are ours; a foreign folder is named once
    return found


def remove_ours(out: Path, plan: Plan | None) -> None:
    """Remove what `is_ours` says this tool wrote (a link is removed, never followed)."""
    subs = [out / SUBDIR[plan.format]] if plan is not None else []
    for folder in subs:
        if folder.is_dir() and not folder.is_symlink():
            for entry in folder.iterdir():
                if is_ours(entry.relative_to(out).as_posix(), plan):
                    remove_path(entry)
    for name in (*OWN_FILES, MANIFEST + ".tmp"):
        if (out / name).exists() or (out / name).is_symlink():
            remove_path(out / name)
    for folder in subs:
        if folder.is_symlink() or (folder.is_dir() and not any(folder.iterdir())):
            remove_path(folder)


def remove_path(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def read_previous(out: Path) -> Plan | Manifest | None:
    """The finished manifest, else the state of an unfinished dump, else None."""
    if (out / MANIFEST).exists():
        return read_manifest(out)
    if (out / PENDING).exists():
        return read_plan(out / PENDING)
    return None


def prepare_output(out: Path, intended: Plan, overwrite: bool) -> Manifest | None:
    """Check an existing output against the plan and get the folder ready: returns the finished
    manifest if the same dataset is already there, else writes the state file and returns None.

    Another dataset is replaced only with `overwrite`, and only what this tool wrote for it is
    removed; a folder holding anything else is refused, listing what. An unfinished dump that has
    not committed a shard yet holds nothing worth keeping, so a new config simply replaces it."""
    check_writable_dir(out, "--out")
    previous = read_previous(out) if out.is_dir() else None
    if out.is_dir() and any(out.iterdir()):
        same = previous is not None and previous.plan_dict() == intended.plan_dict()
        if same and isinstance(previous, Manifest):
            return previous
        if not same:
            committed = previous is not None and any(
                (out / previous.shard_name(k)).exists() for k in range(previous.num_shards)
            )
            if not overwrite and (isinstance(previous, Manifest) or committed):
                raise MigmError(f"{out} holds a dataset made with another config; pass --overwrite to replace it")
            foreign = foreign_entries(out, previous)
            if foreign:
                shown = ", ".join(repr(f) for f in foreign[:5]) + (
                    f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                )
                what = (
                    "is not empty and is not a migm dataset"
                    if previous is None
                    else "holds files this tool did not write"
                )
                raise MigmError(f"{out} {what} ({shown}); move them away or choose another --out")
            if previous is not None:
                if overwrite:
                    check_removable_dir(out, "--out")
                remove_ours(out, previous)
    writable_dir(out, "--out")  # created with its parents when missing
    try:
        (out / SUBDIR[intended.format]).mkdir(exist_ok=True)
        for tmp in (out / SUBDIR[intended.format]).glob("*.tmp-*"):  # left by a killed run
            remove_path(tmp)
    except OSError as e:
        raise MigmError(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    write_json_atomic(out / PENDING, intended.plan_dict())
    return None


def recheck_finished(out: Path, manifest: Manifest) -> Manifest | None:
    """A rerun of a finished dump: every shard is re-hashed against the manifest. All whole: the
    manifest is returned. Otherwise the dump goes back to unfinished, keeping the whole shards
    (with their checksums recorded) so that the missing and damaged ones are rebuilt."""
    good = {}
    for k, shard in enumerate(manifest.shards):
        path = out / shard.name
        try:
            if path.exists() and not path.is_symlink() and sha256_path(path) == shard.sha256:
                good[k] = shard.sha256
        except MigmError:  # a link inside the shard: rebuilt
            pass
    if len(good) == len(manifest.shards):
        return manifest
    write_json_atomic(out / PENDING, manifest.plan_dict())  # first: a kill from here on resumes
    for k, sha in good.items():
        record_checksum(out / manifest.shard_name(k), sha)
    (out / MANIFEST).unlink()
    for k in range(manifest.num_shards):
        if k not in good:
            remove_path(out / manifest.shard_name(k))
    return None


def record_checksum(path: Path, sha: str) -> None:
    """The shard's sha256 beside it, written right after the shard is committed."""
    (path.parent / (path.name + CHECKSUM)).write_text(sha + "\n")


def recorded_checksum(path: Path) -> str | None:
    record = path.parent / (path.name + CHECKSUM)
    return record.read_text().strip() if record.is_file() and not record.is_symlink() else None


def keep_shard(out: Path, plan: Plan, k: int) -> bool:
    """Whether shard k of an unfinished dump is whole: it exists and its bytes hash to the checksum
    recorded when it was committed. A shard that is not is removed, to be rebuilt."""
    path = out / plan.shard_name(k)
    if not path.exists() and not path.is_symlink():
        return False
    recorded = recorded_checksum(path)
    try:
        if recorded is not None and not path.is_symlink() and sha256_path(path) == recorded:
            return True
    except MigmError:
        pass
    remove_path(path)
    (path.parent / (path.name + CHECKSUM)).unlink(missing_ok=True)
    return False


def sample_major(a: np.ndarray, branches: int) -> np.ndarray:
    """Rollout rows are branch-major (all conditional, then all unconditional); dataset rows are
    sample-major (each sample's branches side by side)."""
    return a.reshape(branches, -1, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


class StepRecorder:
    """Collects every step's feature of one batch as float16 [samples·branches, N, T, D] on the host,
    sample-major; text rows shorter than T stay zero-padded. The batch is the only thing held in
    memory: peak host memory is set by --batch-size, not the dataset."""

    def __init__(self, samples: int, branches: int, dims: Dims):
        self.samples, self.branches = samples, branches
        self.features = np.zeros((samples * branches, dims.N, dims.T, dims.D), dtype=np.float16)

    def __call__(self, step: int, feature: torch.Tensor, new_ids: torch.Tensor, new_pos: torch.Tensor) -> None:
        f = feature.to(torch.float16).cpu().numpy()
        self.features[:, step, : f.shape[1]] = sample_major(f, self.branches)


def text_fields(base, cond: torch.Tensor, branches: int, dims: Dims) -> dict[str, np.ndarray]:
    """Per row of a text batch (sample-major): its length, the feature position of each image cell,
    and its branch's prompt ids padded to P with -1."""
    rows = stack_cond(cond, base.null_cond(len(cond))) if branches == 2 else cond
    rows = rows.to(base.device)
    ids = torch.nn.functional.pad(rows, (0, dims.P - rows.shape[1]), value=-1)
    fields = {
        "length": base.feature_valid(rows).sum(1),
        "cells": base.cells(rows),
        "prompt_ids": ids,
    }
    return {k: sample_major(v.cpu().numpy(), branches).astype(np.int32) for k, v in fields.items()}


def rollout_rows(
    base,
    plan: Plan,
    start: int,
    stop: int,
    prompt_ids: torch.Tensor | None = None,
    predictor=None,
    budget: int | None = None,
) -> dict[str, np.ndarray]:
    """Samples [start, stop) of `plan` rolled out with a recorder: one row per sample and CFG branch
    (sample-major) with every field a dataset row holds, `features` as float16 before any codec.
    Sample i uses its own seed (from the plan's seed and i) and condition classes[i % len(classes)],
    so these rows equal the dump's rows of those samples (live training uses them unstored).
    Text bases: `prompt_ids` is `base.encode_prompts(plan.text["prompts"])` (encoded once by the caller).
    With a `predictor` and a `budget` B < N, only B steps run the base (on-policy live training): the
    features recorded are the ones the sampler used, the predictor's at its steps."""
    branches, classes, dims = plan.branches, plan.classes, plan.dims
    if plan.text is not None and prompt_ids is None:
        prompt_ids = base.encode_prompts(plan.text["prompts"])
    ids = np.arange(start, stop)
    seeds = sample_seeds(plan.seed, start, stop - start)
    labels = torch.tensor([classes[i % len(classes)] for i in ids])
    cond = prompt_ids[labels] if plan.text is not None else labels
    rec = StepRecorder(stop - start, branches, dims)
    sampler = plan.sampler if budget is None else replace(plan.sampler, budget=budget)
    result = rollout(base, cond, seeds, sampler, predictor=predictor, recorder=rec)
    rep = lambda a: np.repeat(np.asarray(a), branches, axis=0)  # noqa: E731
    return {
        "features": rec.features,
        **(text_fields(base, cond, branches, dims) if plan.text is not None else {}),
        "tokens": rep(result.tokens.cpu().numpy()).astype(np.int16),
        "order": rep(result.order.cpu().numpy()).astype(np.int16),
        "cond": rep(labels.numpy()).astype(np.int32),
        "branch": np.tile(np.arange(branches), stop - start).astype(np.uint8),
        "sample_id": rep(ids).astype(np.int64),
        "seed": rep(np.array(seeds, dtype=np.uint64)),
    }


def dump_shard(base, plan: Plan, k: int, out: Path, batch_size: int, progress: Callable[[int], None] | None) -> None:
    """Roll out shard k's samples and write it whole (temporary name, then renamed), then record its
    checksum. A write error (disk full, permissions) leaves no partial shard and is one line."""
    samples = plan.shard_samples(k)
    first, last = samples.start, samples.stop
    path = out / plan.shard_name(k)
    prompt_ids = base.encode_prompts(plan.text["prompts"]) if plan.text is not None else None
    writer = None
    try:
        writer = WRITERS[plan.format](path, plan.shard_rows(k), plan.dims, plan.codec)
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            fields = rollout_rows(base, plan, start, stop, prompt_ids)
            fields.update(plan.codec.encode(fields.pop("features")))
            writer.write((start - first) * plan.branches, fields)
            if progress is not None:
                progress(stop - start)
        writer.commit()
        record_checksum(path, sha256_path(path))
    except BaseException as e:
        if writer is not None:
            try:
                writer.abort()
            except OSError:
                pass
        if isinstance(e, OSError):
            raise MigmError(
                f"cannot write shard {e.filename or path}: {e.strerror or e}; a rerun continues from the shards already written"
            ) from None
        raise


def dump_trajectories(
    cfg: DumpConfig, base, overwrite: bool = False, progress: Callable[[int], None] | None = None
) -> Manifest:
    """Dump `cfg.num_samples` trajectories of the loaded `base` to `cfg.out`; returns the manifest.
    Under torchrun each rank loads its base on its own device (`resolve_device` reads LOCAL_RANK)."""
    from accelerate import PartialState

    state = PartialState(cpu=base.device.type == "cpu")
    out = Path(cfg.out)
    check_writable_dir(out, "--out")
    intended = plan(cfg, base)
    created = not out.exists()  # a folder this run makes is removed again if the run leaves it empty
    done = None
    if state.is_main_process:
        done = prepare_output(out, intended, overwrite)
        if done is not None:
            done = recheck_finished(out, done)
    state.wait_for_everyone()
    if done is None and not state.is_main_process and (out / MANIFEST).exists():
        done = read_manifest(out)
    if done is not None:
        return done

    try:
        for k in range(state.process_index, intended.num_shards, state.num_processes):
            if keep_shard(out, intended, k):
                if progress is not None:
                    progress(len(intended.shard_samples(k)))
                continue
            dump_shard(base, intended, k, out, cfg.batch_size, progress)
    except BaseException:
        if state.num_processes == 1:
            abandon_if_empty(out, intended, created)
        raise
    state.wait_for_everyone()

    manifest = None
    if state.is_main_process:
        manifest = finish(out, intended, processes=state.num_processes)
    state.wait_for_everyone()
    return manifest or read_manifest(out)


def abandon_if_empty(out: Path, plan: Plan, created: bool) -> None:
    """A dump that failed before committing any shard leaves nothing behind, not even its state
    file (nor `out`, if this run created it), so the next run (with any config) starts cleanly."""
    if any((out / plan.shard_name(k)).exists() for k in range(plan.num_shards)):
        return
    try:
        remove_ours(out, plan)
        if created and not any(out.iterdir()):
            out.rmdir()
    except OSError:
        pass


def finish(out: Path, plan: Plan, processes: int) -> Manifest:
    """Collect every shard's recorded checksum, render the card, then commit `dataset.json` (last)."""
    from migm.trajectories.store.card import dataset_card

    shards = []
    for k in range(plan.num_shards):
        path = out / plan.shard_name(k)
        sha = recorded_checksum(path)
        if sha is None:
            raise MigmError(f"shard {plan.shard_name(k)!r} has no recorded checksum; rerun the dump to rebuild it")
        shards.append(Shard(name=plan.shard_name(k), rows=plan.shard_rows(k), sha256=sha, bytes=path_size(path)))
    manifest = Manifest(
        **vars(plan),
        shards=shards,
        rows=sum(s.rows for s in shards),
        created_by=f"migm {__version__}",
        processes=processes,
    )
    try:
        (out / "README.md").write_text(dataset_card(manifest))
    except OSError as e:
        raise MigmError(f"cannot write {out / 'README.md'}: {e.strerror or e}") from None
    write_manifest(out, manifest)
    (out / PENDING).unlink(missing_ok=True)
    for k in range(plan.num_shards):
        path = out / plan.shard_name(k)
        (path.parent / (path.name + CHECKSUM)).unlink(missing_ok=True)
    return manifest
