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
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from migm.trajectories import __version__
from migm.trajectories.checks import check_int, check_removable_dir, check_seed, check_writable_dir, writable_dir
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds, stack_cond
from migm.trajectories.schedule import steps_run
from migm.trajectories.store.codecs import parse_codec
from migm.trajectories.store.location import Location, open_location, writable_location
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
    sha256_path,
)
from migm.trajectories.store.zarr_writer import ZarrShardWriter

PENDING = ".migm-dump.json"  # the intended config, written first: what a rerun resumes against
CHECKSUM = ".sha256"  # beside each committed shard of an unfinished dump: its checksum, for the rerun
OWN_FILES = (MANIFEST, "README.md", PENDING)  # what this tool writes in a dataset folder besides shards
WRITERS = {"zarr": ZarrShardWriter, "parquet": ParquetShardWriter}


@dataclass
class DumpConfig:
    """What `dump-trajectories` writes: how many samples, at how many steps, where, in which format and
    codec; sampler options left None take the base's own defaults."""

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
    storage_options: dict | None = None  # for an fsspec URL in `out` (e.g. endpoint_url)


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
    check_every_step_runs(sampler, base)
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


def check_every_step_runs(sampler: SamplerConfig, base) -> None:
    """A trajectory holds a feature for each of the N steps: refuse an N whose published schedule commits
    every cell early (the loop stops there, leaving the last steps without a feature)."""
    L = base.L
    counts = base.rule.unmask_counts(L, sampler.steps)
    ran = steps_run(counts)
    if ran < sampler.steps:
        raise MigmError(
            f"with {sampler.steps} steps the published schedule commits all {L} cells after {ran} steps "
            f"(counts {counts}), so the loop stops there; choose fewer steps"
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


# ---- the output location: what this tool wrote there, and nothing else, may be replaced -----------


def is_ours(rel: str, plan: Plan | None) -> bool:
    """Whether `rel` (a path inside the dataset) is one this tool writes for `plan`: the manifest,
    card and state file, the format's shard folder, each shard (and everything inside a Zarr
    shard), its recorded checksum, and the temporary names of all of them."""
    if rel in OWN_FILES or (rel.endswith(".tmp") and is_ours(rel[:-4], plan)):
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


def foreign_entries(loc: Location, plan: Plan | None) -> list[str]:
    """Entries of the location this tool did not write for `plan` (links are not followed; a
    foreign folder is named once)."""
    container = {SUBDIR[plan.format]} if plan is not None else set()
    return [rel for rel in loc.entries(container) if not is_ours(rel, plan)]


def remove_ours(loc: Location, plan: Plan | None) -> None:
    """Remove what `is_ours` says this tool wrote (a link is removed, never followed)."""
    if not loc.local:  # a store has no folders: every object of ours, by name
        loc.delete([rel for rel in loc.entries(set()) if is_ours(rel, plan)])
        return
    out = loc.folder
    subs = [out / SUBDIR[plan.format]] if plan is not None else []
    for folder in subs:
        if folder.is_dir() and not folder.is_symlink():
            for entry in folder.iterdir():
                if is_ours(entry.relative_to(out).as_posix(), plan):
                    loc.remove(entry.relative_to(out).as_posix())
    for name in (*OWN_FILES, MANIFEST + ".tmp", PENDING + ".tmp"):
        if loc.exists(name):
            loc.remove(name)
    for folder in subs:
        if folder.is_symlink() or (folder.is_dir() and not any(folder.iterdir())):
            loc.remove(folder.relative_to(out).as_posix())


def read_previous(loc: Location) -> Plan | Manifest | None:
    """The finished manifest, else the state of an unfinished dump, else None."""
    if loc.exists(MANIFEST):
        return read_manifest(loc)
    if loc.exists(PENDING):
        return read_plan(loc, PENDING)
    return None


def listing(loc: Location) -> list[str] | None:
    """What the location holds now (None: a local folder that does not exist yet). On a store this
    is the first call: a missing bucket, bad credentials or an unreachable endpoint end here."""
    if loc.local:
        check_writable_dir(loc.folder, "--out")
        return loc.entries(set()) if loc.folder.is_dir() else None
    writable_location(loc)
    return loc.entries(set())


def check_out(out: str, storage_options: dict | None = None) -> Location:
    """`--out` checked before any work (a bad location never wastes a base load): a local folder
    that can be written, or a store location that answers (protocol, endpoint, credentials, bucket)."""
    loc = open_location(out, storage_options)
    listing(loc)
    return loc


def prepare_output(loc: Location, intended: Plan, overwrite: bool) -> Manifest | None:
    """Check an existing output against the plan and get it ready: returns the finished manifest
    if the same dataset is already there, else writes the state file and returns None.

    Another dataset is replaced only with `overwrite`, and only what this tool wrote for it is
    removed; a location holding anything else is refused, listing what. An unfinished dump that has
    not committed a shard yet holds nothing worth keeping, so a new config simply replaces it."""
    held = listing(loc)
    previous = read_previous(loc) if held else None
    if held:
        same = previous is not None and previous.plan_dict() == intended.plan_dict()
        if same and isinstance(previous, Manifest):
            return previous
        if not same:
            tops = {"/".join(rel.split("/")[:2]) for rel in held}  # a shard's name, from any of its objects
            committed = previous is not None and any(previous.shard_name(k) in tops for k in range(previous.num_shards))
            if not overwrite and (isinstance(previous, Manifest) or committed):
                raise MigmError(f"{loc} holds a dataset made with another config; pass --overwrite to replace it")
            foreign = foreign_entries(loc, previous)
            if foreign:
                shown = ", ".join(repr(f) for f in foreign[:5]) + (
                    f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
                )
                what = (
                    "is not empty and is not a migm dataset"
                    if previous is None
                    else "holds files this tool did not write"
                )
                raise MigmError(f"{loc} {what} ({shown}); move them away or choose another --out")
            if previous is not None:
                if overwrite and loc.local:
                    check_removable_dir(loc.folder, "--out")
                remove_ours(loc, previous)
    if loc.local:
        out = writable_dir(loc.folder, "--out")  # created with its parents when missing
        try:
            (out / SUBDIR[intended.format]).mkdir(exist_ok=True)
            for tmp in (out / SUBDIR[intended.format]).glob("*.tmp-*"):  # left by a killed run
                loc.remove(tmp.relative_to(out).as_posix())
        except OSError as e:
            raise MigmError(f"cannot write {e.filename or out}: {e.strerror or e}") from None
    loc.write_text(PENDING, json.dumps(intended.plan_dict(), indent=2, sort_keys=True) + "\n")
    return None


def recheck_finished(loc: Location, manifest: Manifest) -> Manifest | None:
    """A rerun of a finished dump: every shard is re-hashed against the manifest. All whole: the
    manifest is returned. Otherwise the dump goes back to unfinished, keeping the whole shards
    (with their checksums recorded) so that the missing and damaged ones are rebuilt."""
    good = {}
    for k, shard in enumerate(manifest.shards):
        try:
            if loc.exists(shard.name) and loc.sha256(shard.name) == shard.sha256:
                good[k] = shard.sha256
        except MigmError:  # a link inside the shard: rebuilt
            pass
    if len(good) == len(manifest.shards):
        return manifest
    loc.write_text(
        PENDING, json.dumps(manifest.plan_dict(), indent=2, sort_keys=True) + "\n"
    )  # first: a kill from here on resumes
    for k, sha in good.items():
        record_checksum(loc, manifest.shard_name(k), sha)
    loc.delete([MANIFEST])
    for k in range(manifest.num_shards):
        if k not in good:
            loc.remove(manifest.shard_name(k))
    return None


def record_checksum(loc: Location, name: str, sha: str) -> None:
    """The shard's sha256 beside it (`NAME.sha256`), written right after the shard is committed."""
    loc.write_text(name + CHECKSUM, sha + "\n")


def recorded_checksum(loc: Location, name: str) -> str | None:
    record = name + CHECKSUM
    if loc.local:
        path = loc.folder / record
        return path.read_text().strip() if path.is_file() and not path.is_symlink() else None
    if not loc.exists(record) or loc.size(record) > 256:  # a sha256 line; anything else is not ours
        return None
    return loc.read_bytes(record).decode("ascii", errors="replace").strip()


def keep_shard(loc: Location, plan: Plan, k: int) -> bool:
    """Whether shard k of an unfinished dump is whole: it exists and its bytes hash to the checksum
    recorded when it was committed. A shard that is not is removed, to be rebuilt."""
    name = plan.shard_name(k)
    if not loc.exists(name):
        return False
    recorded = recorded_checksum(loc, name)
    try:
        if recorded is not None and loc.sha256(name) == recorded:
            return True
    except MigmError:
        pass
    loc.remove(name)
    loc.delete([name + CHECKSUM])
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


def dump_shard(
    base, plan: Plan, k: int, loc: Location, batch_size: int, progress: Callable[[int], None] | None
) -> None:
    """Roll out shard k's samples and write it whole, then record its checksum: in a local folder
    under a temporary name then renamed; for a store, staged locally and uploaded whole under its
    final name. A write error (disk full, permissions) leaves no partial shard and is one line."""
    samples = plan.shard_samples(k)
    first, last = samples.start, samples.stop
    name = plan.shard_name(k)
    staged = loc.staging(name)
    prompt_ids = base.encode_prompts(plan.text["prompts"]) if plan.text is not None else None
    writer = None
    try:
        writer = WRITERS[plan.format](staged, plan.shard_rows(k), plan.dims, plan.codec)
        for start in range(first, last, batch_size):
            stop = min(start + batch_size, last)
            fields = rollout_rows(base, plan, start, stop, prompt_ids)
            fields.update(plan.codec.encode(fields.pop("features")))
            writer.write((start - first) * plan.branches, fields)
            if progress is not None:
                progress(stop - start)
        writer.commit()
        sha = sha256_path(staged)
        loc.publish(staged, name)
        record_checksum(loc, name, sha)
    except BaseException as e:
        if writer is not None:
            try:
                writer.abort()
            except OSError:
                pass
        loc.discard(staged)
        if isinstance(e, OSError):
            raise MigmError(
                f"cannot write shard {e.filename or loc.url_of(name)}: {e.strerror or e}; a rerun continues from the shards already written"
            ) from None
        raise


def dump_trajectories(
    cfg: DumpConfig, base, overwrite: bool = False, progress: Callable[[int], None] | None = None
) -> Manifest:
    """Dump `cfg.num_samples` trajectories of the loaded `base` to `cfg.out` (a folder or an fsspec
    URL); returns the manifest. Under torchrun each rank loads its base on its own device
    (`resolve_device` reads LOCAL_RANK); ranks share nothing but the output location."""
    from accelerate import PartialState

    state = PartialState(cpu=base.device.type == "cpu")
    loc = open_location(cfg.out, cfg.storage_options)
    if loc.local:
        check_writable_dir(loc.folder, "--out")
    else:
        writable_location(loc)
    intended = plan(cfg, base)
    created = loc.local and not loc.folder.exists()  # a folder this run makes is removed if left empty
    done = None
    if state.is_main_process:
        done = prepare_output(loc, intended, overwrite)
        if done is not None:
            done = recheck_finished(loc, done)
    state.wait_for_everyone()
    if done is None and not state.is_main_process and loc.exists(MANIFEST):
        done = read_manifest(loc)
    if done is not None:
        return done

    try:
        for k in range(state.process_index, intended.num_shards, state.num_processes):
            if keep_shard(loc, intended, k):
                if progress is not None:
                    progress(len(intended.shard_samples(k)))
                continue
            dump_shard(base, intended, k, loc, cfg.batch_size, progress)
    except BaseException:
        if state.num_processes == 1:
            abandon_if_empty(loc, intended, created)
        raise
    state.wait_for_everyone()

    manifest = None
    if state.is_main_process:
        manifest = finish(loc, intended, processes=state.num_processes)
    state.wait_for_everyone()
    return manifest or read_manifest(loc)


def abandon_if_empty(loc: Location, plan: Plan, created: bool) -> None:
    """A dump that failed before committing any shard leaves nothing behind, not even its state
    file (nor its folder, if this run created it), so the next run (with any config) starts cleanly."""
    try:
        if any(loc.exists(plan.shard_name(k)) for k in range(plan.num_shards)):
            return
        remove_ours(loc, plan)
        if created and not any(loc.folder.iterdir()):
            loc.folder.rmdir()
    except (OSError, MigmError):
        pass


def finish(loc: Location, plan: Plan, processes: int) -> Manifest:
    """Collect every shard's recorded checksum, write the card, then commit `dataset.json` (last)."""
    from migm.trajectories.store.card import dataset_card

    shards = []
    for k in range(plan.num_shards):
        name = plan.shard_name(k)
        sha = recorded_checksum(loc, name)
        if sha is None:
            raise MigmError(f"shard {name!r} has no recorded checksum; rerun the dump to rebuild it")
        shards.append(Shard(name=name, rows=plan.shard_rows(k), sha256=sha, bytes=loc.size(name)))
    manifest = Manifest(
        **vars(plan),
        shards=shards,
        rows=sum(s.rows for s in shards),
        created_by=f"migm {__version__}",
        processes=processes,
    )
    loc.write_text("README.md", dataset_card(manifest))
    write_manifest(loc, manifest)
    loc.delete([PENDING, *(plan.shard_name(k) + CHECKSUM for k in range(plan.num_shards))])
    return manifest
