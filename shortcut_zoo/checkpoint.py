"""Training checkpoints: everything `migm train --resume` reads back is safetensors + JSON written by
this tool, so no code ever runs on resume (accelerate's `save_state` pickles registered objects and
reloads them with a full unpickle; its RNG load skips a bad file silently).

    OUT/checkpoint/
      model.safetensors       the model's weights
      ema.safetensors         the EMA shadow that is exported
      optimizer.safetensors   AdamW's per-parameter tensors, keyed "<parameter index>.<name>"
      rng-<rank>.safetensors  each process's RNG states (torch, cuda, numpy, python)
      train_state.json        step, data position, losses; provenance (dataset fingerprint, arch and
                              its config); EMA and optimizer scalars; the sha256 of every file above

A save fills OUT/checkpoint.partial and renames it whole into place (the previous checkpoint sits at
OUT/checkpoint.old for the instant between the two renames), so a kill at any point leaves one whole
checkpoint. A resume checks every file against its recorded sha256, then each state's structure.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.checks import inert
from migm.trajectories.errors import MigmError, write_error
from migm.trajectories.safe_load import load_json
from migm.trajectories.store.schema import sha256_path

CHECKPOINT = "checkpoint"
PARTIAL = "checkpoint.partial"
OLD = "checkpoint.old"
FORMAT = 1
STATE = "train_state.json"
MODEL, EMA_WEIGHTS, OPTIMIZER = "model.safetensors", "ema.safetensors", "optimizer.safetensors"
EXTRA = "extra.safetensors"  # what else a run needs to resume exactly (on-policy: the rollout weights)
RNG = re.compile(r"rng-(\d+)\.safetensors")


def find_checkpoint(out: Path) -> Path | None:
    """The whole checkpoint in `out`: `checkpoint/`, or `checkpoint.old/` when a save was killed
    between its two renames."""
    for name in (CHECKPOINT, OLD):
        if (out / name).is_dir():
            return out / name
    return None


def check_out_folder(out: Path, resume: bool, marker: str) -> None:
    """`--out` is a folder to train into: with `resume`, one holding a checkpoint; otherwise missing,
    empty, or holding only a failed first save. A folder holding a checkpoint or the zoo config
    `marker` is a shortcut already; one with anything else is the user's, refused untouched."""
    if out.exists() and not out.is_dir():
        raise MigmError(f"--out {str(out)!r} is a file, not a folder")
    if resume:
        if find_checkpoint(out) is None:
            raise MigmError(f"nothing to resume: {out} has no {CHECKPOINT}/")
        return
    if not out.exists():
        return
    names = {p.name for p in out.iterdir()}
    if names & {CHECKPOINT, OLD, marker}:
        raise MigmError(f"{out} already holds a shortcut; pass --resume to continue it, or choose another --out")
    foreign = sorted(names - {PARTIAL})
    if foreign:
        listed = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise MigmError(
            inert(
                f"--out {out} is not empty and not a migm zoo folder (it holds {listed}); choose a new or empty folder"
            )
        )


def _remove(folder: Path) -> None:
    """Delete a checkpoint folder this tool wrote: its own file names only, then the folder (a file
    it did not write stops the removal, so nothing of the user's is ever deleted)."""
    for p in folder.iterdir():
        own = p.name in (STATE, MODEL, EMA_WEIGHTS, OPTIMIZER, EXTRA) or RNG.fullmatch(p.name)
        if not own or p.is_dir():
            raise MigmError(inert(f"{folder} holds {p.name}, which migm did not write; move it away and retry"))
        p.unlink()
    folder.rmdir()


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else is one line naming it."""
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise MigmError(f"{path} is not a readable safetensors file ({e})") from None


# ---------------------------------------------------------------------------------------- save


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    version, keys, gauss = random.getstate()
    name, np_keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(keys, dtype=torch.int64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
    }
    if torch.cuda.is_available():
        tensors |= {f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    meta = {
        "python": json.dumps([version, gauss]),
        "numpy": json.dumps([name, int(pos), int(has_gauss), float(cached)]),
    }
    return tensors, meta


def _optimizer_state(opt) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    if not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise TypeError("optimizer state holds non-tensor values; only tensors are checkpointed")
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in sd["param_groups"]]
    return _cpu(tensors), groups


def save_checkpoint(
    out: Path, accelerator, model, opt, ema, state: dict, provenance: dict, extra: dict | None = None
) -> Path:
    """Write a whole checkpoint of the run to `out/checkpoint` (every process calls this), with the
    main process's `extra` tensors when given. A write error (disk full, read-only) is one line naming
    the folder, and leaves the previous checkpoint."""
    partial, main = out / PARTIAL, accelerator.is_main_process
    try:
        if main:
            if partial.exists():  # a killed save's leftovers
                _remove(partial)
            if (out / OLD).exists():
                if (out / CHECKPOINT).exists():
                    _remove(out / OLD)
                else:  # killed between the renames: the old one is the whole checkpoint
                    os.replace(out / OLD, out / CHECKPOINT)
            partial.mkdir()
        accelerator.wait_for_everyone()
        tensors, meta = _rng_state()
        save_file(tensors, str(partial / f"rng-{accelerator.process_index}.safetensors"), metadata=meta)
        if main:
            save_file(_cpu(accelerator.unwrap_model(model).state_dict()), str(partial / MODEL))
            save_file(_cpu(ema.shadow), str(partial / EMA_WEIGHTS))
            opt_tensors, groups = _optimizer_state(opt)
            save_file(opt_tensors, str(partial / OPTIMIZER))
            if extra is not None:
                save_file(_cpu(extra), str(partial / EXTRA))
        accelerator.wait_for_everyone()
        if main:
            record = {
                "format": FORMAT,
                **state,
                **provenance,
                "processes": accelerator.num_processes,
                "ema": {"decay": ema.decay, "updates": ema.updates},
                "optimizer": {"param_groups": groups},
                "files": {p.name: sha256_path(p) for p in sorted(partial.iterdir())},
            }
            with open(partial / STATE, "w") as f:
                f.write(json.dumps(record, indent=1) + "\n")
                f.flush()
                os.fsync(f.fileno())
            if (out / CHECKPOINT).exists():
                os.replace(out / CHECKPOINT, out / OLD)
            os.replace(partial, out / CHECKPOINT)  # the commit: from here on the new checkpoint is the one
            if (out / OLD).exists():
                _remove(out / OLD)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        if main and partial.exists():
            try:
                _remove(partial)
            except (OSError, MigmError):
                pass  # the next save clears it; the error below is what the user needs
        kept = f"; {out / CHECKPOINT} is kept, --resume continues from it" if (out / CHECKPOINT).exists() else ""
        raise MigmError(f"cannot write checkpoint {partial}: {write_error(e)}{kept}") from None
    accelerator.wait_for_everyone()
    return out / CHECKPOINT


# ---------------------------------------------------------------------------------------- load


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_train_state(ckpt: Path) -> dict:
    """`train_state.json`, typed and checked: any damage is one line naming the file."""
    path = ckpt / STATE
    pickles = sorted(p.name for p in ckpt.iterdir() if p.suffix in (".pkl", ".bin"))
    older = MigmError(
        f"{ckpt} was written by an older migm as pickles ({', '.join(pickles[:3])}), which are "
        "never unpickled; train again into a new --out"
    )
    if not path.exists():
        raise older if pickles else MigmError(f"{ckpt} has no {STATE}: not a whole checkpoint")
    try:
        record = load_json(path)
    except MigmError as e:
        raise MigmError(f"{e}; the checkpoint is damaged") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        if pickles and isinstance(record, dict) and "format" not in record:
            raise older
        got = record.get("format") if isinstance(record, dict) else None
        raise MigmError(f"{path}: checkpoint format {got!r} is not supported (this migm reads {FORMAT})")
    bad = [k for k in ("step", "epoch", "batch_in_epoch") if not _is_count(record.get(k))]
    losses = record.get("losses")
    if not isinstance(losses, list) or len(losses) != record.get("step") or not all(map(_is_number, losses)):
        bad.append("losses")
    if not _is_count(record.get("processes")) or record["processes"] < 1:
        bad.append("processes")
    kinds = {"dataset": str, "arch": str, "arch_config": dict, "files": dict, "ema": dict, "optimizer": dict}
    for key, kind in kinds.items():
        if not isinstance(record.get(key), kind):
            bad.append(key)
    if not bad:
        ema = record["ema"]
        if not (_is_number(ema.get("decay")) and 0 <= ema["decay"] < 1 and _is_count(ema.get("updates"))):
            bad.append("ema")
        if not isinstance(record["optimizer"].get("param_groups"), list):
            bad.append("optimizer")
    if bad:
        raise MigmError(f"{path}: field(s) {', '.join(bad)} missing or malformed; the checkpoint is damaged")
    return record


def _check_provenance(ckpt: Path, record: dict, provenance: dict) -> None:
    """The checkpoint continues this run: same dataset (by fingerprint), arch, arch config and rollout."""
    if record["dataset"] != provenance["dataset"]:
        raise MigmError(
            f"{ckpt} was trained on another dataset (fingerprint {record['dataset'][:12]}, this --data has "
            f"{provenance['dataset'][:12]}); resume with the same --data, or train into a new --out"
        )
    if record["arch"] != provenance["arch"]:
        raise MigmError(
            f"{ckpt} was trained with --arch {record['arch']}, not {provenance['arch']}; "
            f"resume with --arch {record['arch']}"
        )
    now = json.loads(json.dumps(provenance["arch_config"]))
    if record["arch_config"] != now:
        keys = sorted(k for k in {*now, *record["arch_config"]} if now.get(k) != record["arch_config"].get(k))
        was = " ".join(f"-a {k}={json.dumps(record['arch_config'].get(k))}" for k in keys)
        raise MigmError(inert(f"{ckpt} was trained with other arch options; resume with {was}"))
    was = record.get("rollout", 1)  # checkpoints from before rollout training trained one-step pairs
    if was != provenance.get("rollout", 1):  # another window size reads the data in another order
        raise MigmError(f"{ckpt} was trained with --rollout {was}; resume with --rollout {was}")


def _check_files(ckpt: Path, record: dict, rank: int) -> None:
    """Every file recorded is there with its sha256, and nothing else is: a torn or mixed checkpoint
    (files of two saves) or a planted file is refused before anything is read."""
    expected = {STATE, *record["files"]}
    extra = sorted({p.name for p in ckpt.iterdir()} - expected)
    if extra:
        raise MigmError(inert(f"{ckpt} holds {extra[0]}, which its {STATE} does not list; the checkpoint is not whole"))
    for name, digest in record["files"].items():
        path = ckpt / name
        if path.is_symlink() or not path.is_file():
            raise MigmError(inert(f"{ckpt} is missing {name}; the checkpoint is not whole"))
        if sha256_path(path) != digest:
            raise MigmError(inert(f"{path} does not match the sha256 in {STATE}; the checkpoint is torn or damaged"))
    for name in (MODEL, EMA_WEIGHTS, OPTIMIZER):
        if name not in record["files"]:
            raise MigmError(f"{ckpt} is missing {name}; the checkpoint is not whole")
    if f"rng-{rank}.safetensors" not in record["files"]:
        raise MigmError(
            f"{ckpt} was written by {record['processes']} process(es) and holds no RNG state for "
            f"rank {rank}; resume with at most {record['processes']} process(es)"
        )


def _load_optimizer(opt, path: Path, groups: list) -> None:
    tensors, _ = _read(path)
    bad = MigmError(f"{path} does not fit this optimizer; the checkpoint is damaged")
    current = opt.state_dict()["param_groups"]
    if len(groups) != len(current):
        raise bad
    for saved, now in zip(groups, current):
        if not isinstance(saved, dict) or not set(saved) <= set(now) or saved.get("params") != now["params"]:
            raise bad
        for k, v in saved.items():
            ref = now[k]
            if isinstance(ref, tuple):
                if not (isinstance(v, list) and len(v) == len(ref) and all(map(_is_number, v))):
                    raise bad
                saved[k] = tuple(v)
            elif isinstance(ref, bool) or ref is None:
                if not (v is None or isinstance(v, bool)):
                    raise bad
            elif isinstance(ref, (int, float)):
                if not _is_number(v):
                    raise bad
            elif type(v) is not type(ref):
                raise bad
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdigit() or int(index) >= len(params) or not name or not t.is_floating_point():
            raise bad
        if t.dim() and t.shape != params[int(index)].shape or not torch.isfinite(t).all():
            raise bad
        state.setdefault(int(index), {})[name] = t
    try:
        opt.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError, RuntimeError):
        raise bad from None


def _load_ema(ema, model, path: Path, record: dict) -> None:
    shadow, _ = _read(path)
    own = model.state_dict()
    if set(shadow) != set(own) or any(shadow[k].shape != v.shape or shadow[k].dtype != v.dtype for k, v in own.items()):
        raise MigmError(f"{path} does not fit this model; the checkpoint is damaged")
    ema.shadow = {k: shadow[k].to(v.device) for k, v in own.items()}
    ema.decay, ema.updates = record["ema"]["decay"], record["ema"]["updates"]


def _load_rng(path: Path) -> None:
    tensors, meta = _read(path)
    try:
        version, gauss = json.loads(meta["python"])
        keys = tensors["python"].tolist()
        name, pos, has_gauss, cached = json.loads(meta["numpy"])
        np_keys = tensors["numpy"]
        if np_keys.dtype != torch.int64 or np_keys.min() < 0 or np_keys.max() >= 2**32:
            raise ValueError("numpy key out of range")
        random.setstate((version, tuple(keys), gauss))
        np.random.set_state((name, np_keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(tensors["torch"])
        cuda = [tensors[f"cuda.{i}"] for i in range(torch.cuda.device_count()) if f"cuda.{i}" in tensors]
        if torch.cuda.is_available() and cuda:
            torch.cuda.set_rng_state_all(cuda)
    except (KeyError, ValueError, TypeError, RuntimeError, OverflowError, json.JSONDecodeError) as e:
        raise MigmError(f"{path} is not a valid RNG state ({e}); the checkpoint is damaged") from None


def load_checkpoint(out: Path, accelerator, model, opt, ema, provenance: dict) -> dict:
    """Restore model, optimizer, EMA and this process's RNG from `out`'s checkpoint, after checking it
    is whole and continues this run; returns the train state (step, data position, losses)."""
    ckpt = find_checkpoint(out)
    if ckpt is None:
        raise MigmError(f"nothing to resume: {out} has no {CHECKPOINT}/")
    record = read_train_state(ckpt)
    _check_provenance(ckpt, record, provenance)
    _check_files(ckpt, record, accelerator.process_index)
    unwrapped = accelerator.unwrap_model(model)
    load_state_dict_strict(unwrapped, _read(ckpt / MODEL)[0], str(ckpt / MODEL))
    _load_ema(ema, unwrapped, ckpt / EMA_WEIGHTS, record)
    _load_optimizer(opt, ckpt / OPTIMIZER, record["optimizer"]["param_groups"])
    _load_rng(ckpt / f"rng-{accelerator.process_index}.safetensors")
    return {k: record[k] for k in ("step", "epoch", "batch_in_epoch", "losses")}


def read_extra(out: Path) -> dict[str, torch.Tensor]:
    """The `extra` tensors of `out`'s checkpoint (after `load_checkpoint` checked it; {}: none saved)."""
    ckpt = find_checkpoint(out)
    if ckpt is None or not (ckpt / EXTRA).is_file():
        return {}
    return _read(ckpt / EXTRA)[0]
