"""`migm push`: share a dataset folder on the Hugging Face Hub (the one command that uses the network)."""

from __future__ import annotations

from pathlib import Path

from trajectories.errors import MigmError
from trajectories.store.verify import verify_dataset


def push_dataset(root: str | Path, repo_id: str, private: bool = False, dry_run: bool = False, token: str | None = None) -> dict:
    """Verify, then `create_repo` + `upload_folder`. With `dry_run`, only report what would go up."""
    root = Path(root)
    report = verify_dataset(root)
    if not report["ok"]:
        bad = [s["name"] for s in report["shards"] if not s["ok"]]
        raise MigmError(f"refusing to push a dataset with bad shards: {', '.join(bad)} (see `migm verify {root}`)")
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise MigmError(f"repo id must look like 'user/name', got {repo_id!r}")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    result = {"repo_id": repo_id, "private": private, "files": files,
              "bytes": sum((root / f).stat().st_size for f in files), "card": (root / "README.md").read_text()}  # fmt: skip
    if dry_run:
        return {**result, "dry_run": True}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(folder_path=str(root), repo_id=repo_id, repo_type="dataset",
                                   commit_message="Upload trajectory dataset with migm")  # fmt: skip
    except Exception as e:  # network, auth and permission errors all end the same way for the user
        raise MigmError(f"upload to {repo_id} failed: {type(e).__name__}: {e}") from None
    return {**result, "dry_run": False, "url": str(url), "commit": getattr(commit, "oid", None)}
