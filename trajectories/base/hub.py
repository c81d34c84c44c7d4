"""Hugging Face Hub references for checkpoints: `hf://ORG/NAME[@REVISION][/PATH]`, resolved through
huggingface_hub's cache to a local path that the loaders read exactly as a local one.

- `hf://amused/amused-256`: the repository's snapshot folder.
- `hf://ORG/NAME/dir/file.pth` (a last part with a suffix): that one file.
- `hf://ORG/NAME/dir` (no suffix): the snapshot with only that folder, and the path to it.

The cache is HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default, read when a reference is
resolved; with HF_HUB_OFFLINE=1 nothing is downloaded and a reference missing from the cache is a
one-line error naming it. Downloads show huggingface_hub's progress bar.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from migm.trajectories.errors import MigmError

PREFIX = "hf://"
TRUE = {"1", "ON", "YES", "TRUE"}


def is_reference(value: str | None) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def parse(ref: str) -> tuple[str, str | None, str]:
    """hf://ORG/NAME[@REV][/PATH] -> (repo_id, revision, path inside the repository or '')."""
    parts = ref[len(PREFIX) :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]) or any(p in ("", ".", "..") for p in parts):
        raise MigmError(f"{ref}: a Hub reference looks like hf://ORG/NAME[@REVISION][/PATH]")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, "/".join(parts[2:])


def cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None  # huggingface_hub's default


def offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in TRUE


def resolve(ref: str) -> str:
    """A Hub reference -> the local path of the cached file or folder (downloaded unless offline)."""
    repo_id, revision, path = parse(ref)
    try:
        from huggingface_hub import hf_hub_download, snapshot_download
    except ImportError:
        raise MigmError(f"{ref}: Hub references need huggingface_hub (pip install huggingface_hub)") from None
    common = {"repo_id": repo_id, "revision": revision, "cache_dir": cache_dir(), "local_files_only": offline()}
    try:
        if path and PurePosixPath(path).suffix:
            return hf_hub_download(filename=path, **common)
        folder = snapshot_download(allow_patterns=[f"{path}/*"] if path else None, **common)
    except Exception as e:  # huggingface_hub raises many kinds (offline, missing, gated, network)
        why = "not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline() else first_line(e)
        raise MigmError(f"{ref}: {why}") from None
    target = Path(folder) / path
    if not target.exists():
        raise MigmError(f"{ref}: the repository has no {path!r}")
    return str(target)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:160]}" if text else type(e).__name__


def local(value: str | None) -> str | None:
    """A path as given, or the local path a Hub reference resolves to."""
    return resolve(value) if is_reference(value) else value
