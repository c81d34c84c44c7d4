"""Sharing on the Hugging Face Hub (the one place that uses the network): datasets and zoo folders."""

from __future__ import annotations

import tempfile
from pathlib import Path

from migm.trajectories.checks import check_repo_id, inert
from migm.trajectories.errors import MigmError
from migm.trajectories.safe_load import read_text
from migm.trajectories.store.location import Location, open_location
from migm.trajectories.store.manifest import read_manifest, shard_path
from migm.trajectories.store.schema import MANIFEST, sha256_path
from migm.trajectories.store.verify import verify_dataset


def dataset_files(root: str | Path) -> list[str]:
    """Exactly what a dataset push uploads: `dataset.json`, `README.md` and the files of every shard
    the manifest lists (a Zarr shard is a folder: its files), all plain files inside the folder."""
    root = Path(root)
    manifest = read_manifest(root)
    files = [MANIFEST, "README.md"]
    for shard in manifest.shards:
        path = shard_path(root, shard.name)
        if path.is_dir():
            links = [p for p in path.rglob("*") if p.is_symlink()]
            if links:
                raise MigmError(
                    f"shard {shard.name!r} holds a link ({inert(str(links[0].relative_to(root)))!r}); push uploads plain files only"
                )
            files += sorted(p.relative_to(root).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            files.append(shard.name)
    return files


def push_dataset(
    root: str | Path,
    repo_id: str,
    private: bool = True,
    dry_run: bool = False,
    token: str | None = None,
    storage_options: dict | None = None,
) -> dict:
    """Verify every shard (every row), then upload exactly the dataset's files as a Hub dataset repo.
    A dataset at a URL is downloaded to a temporary folder first (and its shards checked again there)."""
    check_repo_id(repo_id)
    report = verify_dataset(root, storage_options)
    if not report["ok"]:
        bad = [s["name"] for s in report["shards"] if not s["ok"]]
        raise MigmError(
            f"refusing to push a dataset with bad shards: {', '.join(map(repr, bad))} (see `migm verify {root}`)"
        )
    loc = open_location(root, storage_options)
    if loc.local:
        return upload_files(root, dataset_files(root), repo_id, "dataset", private, dry_run, token=token)
    with tempfile.TemporaryDirectory(prefix="migm-push-") as tmp:
        files = download_dataset(loc, Path(tmp))
        return upload_files(tmp, files, repo_id, "dataset", private, dry_run, token=token)


def download_dataset(loc: Location, dest: Path) -> list[str]:
    """The manifest, card and every shard object of a store dataset, copied into `dest` and each
    shard checked against the manifest there; returns the relative names."""
    manifest = read_manifest(loc)
    files = [MANIFEST, "README.md"]
    for shard in manifest.shards:
        files += [f"{shard.name}/{rel}" if rel else shard.name for rel in loc.files(shard.name)]
    with loc.guard("read"):
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            loc.fs.get_file(loc.path(name), str(dest / name))
    for shard in manifest.shards:
        if sha256_path(dest / shard.name) != shard.sha256:
            raise MigmError(f"shard {shard.name!r} changed while it was downloaded from {loc.url}; push again")
    return files


def upload_files(
    root: str | Path,
    files: list[str],
    repo_id: str,
    repo_type: str,
    private: bool = True,
    dry_run: bool = False,
    token: str | None = None,
) -> dict:
    """Upload exactly `files` (plain names inside `root`, no links) in one commit, to a repo created
    private unless asked otherwise. With `dry_run`, only report what would go up."""
    root = Path(root)
    check_repo_id(repo_id)
    for name in files:
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise MigmError(f"{name!r} is not a plain name inside {root}")
        if path.is_symlink() or not path.is_file():
            what = "a link" if path.is_symlink() else "missing or not a file"
            raise MigmError(f"{path} is {what}; push uploads plain files only")
    card = read_text(root / "README.md", what="card") if "README.md" in files else ""  # the Hub shows UTF-8
    result = {
        "repo_id": repo_id,
        "repo_type": repo_type,
        "private": private,
        "files": list(files),
        "bytes": sum((root / f).stat().st_size for f in files),
        "card": card,
    }
    if dry_run:
        return {**result, "dry_run": True}
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.create_commit(
            repo_id,
            repo_type=repo_type,
            commit_message="Upload with migm",
            operations=[CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(root / f)) for f in files],
        )
    except Exception as e:  # network, auth and permission errors all end the same way for the user
        raise MigmError(f"upload to {repo_id} failed: {type(e).__name__}: {e}") from None
    return {**result, "dry_run": False, "url": str(url), "commit": getattr(commit, "oid", None)}
