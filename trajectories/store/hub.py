"""Sharing on the Hugging Face Hub (the one place that uses the network): datasets and zoo folders."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

from trajectories.errors import MigmError
from trajectories.store.verify import verify_dataset


def upload_folder(root: str | Path, repo_id: str, repo_type: str, private: bool = False, dry_run: bool = False,
                  ignore: tuple[str, ...] = (), token: str | None = None) -> dict:  # fmt: skip
    """`create_repo` + `upload_folder`. With `dry_run`, only report what would go up."""
    root = Path(root)
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise MigmError(f"repo id must look like 'user/name', got {repo_id!r}")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    files = [f for f in files if not any(fnmatch(f, pattern) for pattern in ignore)]
    card = (root / "README.md").read_text() if (root / "README.md").exists() else ""
    result = {"repo_id": repo_id, "repo_type": repo_type, "private": private, "files": files,
              "bytes": sum((root / f).stat().st_size for f in files), "card": card}  # fmt: skip
    if dry_run:
        return {**result, "dry_run": True}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(root), repo_id=repo_id, repo_type=repo_type,
                                   ignore_patterns=list(ignore) or None, commit_message="Upload with migm")  # fmt: skip
    except Exception as e:  # network, auth and permission errors all end the same way for the user
        raise MigmError(f"upload to {repo_id} failed: {type(e).__name__}: {e}") from None
    return {**result, "dry_run": False, "url": str(url), "commit": getattr(commit, "oid", None)}


def push_dataset(root: str | Path, repo_id: str, private: bool = False, dry_run: bool = False, token: str | None = None) -> dict:
    """Verify every shard, then upload the dataset folder as a Hub dataset repo."""
    report = verify_dataset(root)
    if not report["ok"]:
        bad = [s["name"] for s in report["shards"] if not s["ok"]]
        raise MigmError(f"refusing to push a dataset with bad shards: {', '.join(bad)} (see `migm verify {root}`)")
    return upload_folder(root, repo_id, "dataset", private, dry_run, ignore=(".migm-*",), token=token)


def upload_files(root: str | Path, files: list[str], repo_id: str, repo_type: str, private: bool = True,
                 dry_run: bool = False, token: str | None = None) -> dict:  # fmt: skip
    """Upload exactly `files` (plain names inside `root`, no links) in one commit, to a repo created
    private unless asked otherwise. With `dry_run`, only report what would go up."""
    from trajectories.checks import check_repo_id

    root = Path(root)
    check_repo_id(repo_id)
    for name in files:
        path = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise MigmError(f"{name!r} is not a plain name inside {root}")
        if path.is_symlink() or not path.is_file():
            raise MigmError(f"{path} is {'a link' if path.is_symlink() else 'missing or not a file'}; push uploads plain files only")
    card = (root / "README.md").read_text() if "README.md" in files else ""
    result = {"repo_id": repo_id, "repo_type": repo_type, "private": private, "files": list(files),
              "bytes": sum((root / f).stat().st_size for f in files), "card": card}  # fmt: skip
    if dry_run:
        return {**result, "dry_run": True}
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.create_commit(repo_id, repo_type=repo_type, commit_message="Upload with migm",
                                   operations=[CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(root / f)) for f in files])  # fmt: skip
    except Exception as e:  # network, auth and permission errors all end the same way for the user
        raise MigmError(f"upload to {repo_id} failed: {type(e).__name__}: {e}") from None
    return {**result, "dry_run": False, "url": str(url), "commit": getattr(commit, "oid", None)}
