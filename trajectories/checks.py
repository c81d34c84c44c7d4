"""Option and path checks in one place: every command validates its input here before any work.

Each check raises `MigmError` with a one-line message naming the option, so the CLI prints
`error: …` and exits 2 (DESIGN.md, Conventions)."""

from __future__ import annotations

import math
import os
from pathlib import Path

from migm.trajectories.errors import MigmError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_finite(name: str, value: float | None, low: float | None = None, high: float | None = None) -> None:
    """A finite number within [low, high] (None: unset, allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MigmError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise MigmError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise MigmError(f"{name} must be at most {high}, got {value}")


def check_int(name: str, value: int | None, low: int = 1, high: int | None = None) -> None:
    """An integer within [low, high] (None: unset, allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise MigmError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise MigmError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise MigmError(f"{name} must be at most {high}, got {value}")


def check_prompts(texts: list[str]) -> None:
    """At least one prompt, none empty (a text base would condition on markup alone)."""
    if not texts:
        raise MigmError("no prompts given")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise MigmError(f"prompt {i + 1} is empty")


def check_seed(value: int) -> None:
    check_int("--seed", value, low=0, high=2**63 - 1)


# What marks a folder as a dataset (finished, or a dump in progress) or a zoo folder (exported, or
# training): files the tool wrote and reads back, which an output written among them would damage.
DATASET_MARKERS = ("dataset.json", ".migm-dump.json")
ZOO_MARKERS = (("config.json", "model.safetensors"), ("checkpoint", "train_state.json"))


def owned_folder(folder: Path) -> str | None:
    """'dataset' or 'zoo folder' when `folder` is one, else None."""
    if any((folder / m).is_file() for m in DATASET_MARKERS):
        return "dataset"
    if (folder / ZOO_MARKERS[0][0]).is_file() and (folder / ZOO_MARKERS[0][1]).is_file():
        return "zoo folder"
    return "zoo folder" if (folder / ZOO_MARKERS[1][0] / ZOO_MARKERS[1][1]).is_file() else None


def check_outside_data(path: str | Path, what: str, itself: bool = False) -> None:
    """Refuse an output path inside a dataset's or a zoo folder's own files (a plot written into a
    shard fails its checksum); with `itself`, also the dataset or zoo folder itself. Links are
    followed: a path is judged by where it writes."""
    real = Path(path).absolute().resolve()
    for folder in ([real] if itself else []) + list(real.parents):
        kind = owned_folder(folder)
        if kind is not None:
            raise MigmError(
                f"{what} {str(path)!r} lies inside the {kind} {str(folder)!r}, whose files this tool reads "
                "back; write it elsewhere"
            )


def writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """A folder to write into: created with its parents when missing (as `save_pretrained` does);
    refused when it is a file, not writable, or inside a dataset or zoo folder."""
    path = Path(path)
    check_outside_data(path, what)
    if path.exists() and not path.is_dir():
        raise MigmError(f"{what} {str(path)!r} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MigmError(f"cannot create {what} {str(path)!r}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise MigmError(f"{what} {str(path)!r} is not writable")
    return path


def output_file(path: str | Path, extensions: tuple[str, ...] | None = None, what: str = "output file") -> Path:
    """A file to write: known extension (when given), not a folder, not inside a dataset or zoo
    folder, its folder writable or creatable. Checked before any work (and creating nothing) so a
    bad path never wastes a run."""
    path = Path(path)
    check_outside_data(path, what)
    if extensions is not None and path.suffix.lower() not in extensions:
        raise MigmError(f"{what} {str(path)!r} needs one of the extensions {', '.join(extensions)}")
    if path.is_dir():
        raise MigmError(f"{what} {str(path)!r} is a folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise MigmError(f"{what} {str(path)!r} is not writable")
    check_writable_dir(path.parent, "folder")
    return path


# Bidirectional-text overrides: invisible, yet they reorder what a terminal shows.
_BIDI = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def inert(text: str) -> str:
    """`text` safe to print on a terminal: control characters (escape sequences, carriage returns,
    bells, bidi overrides) and lone surrogates (the bytes of a path that is not UTF-8) shown as
    visible `\\xNN` / `\\uNNNN` escapes; newlines and tabs kept."""
    import unicodedata

    def show(ch: str) -> str:
        if ch in "\n\t" or (unicodedata.category(ch) not in ("Cc", "Cs") and ch not in _BIDI):
            return ch
        return ascii(ch)[1:-1]

    return "".join(map(show, text))


def check_repo_id(repo_id: str) -> str:
    """A Hub repo id `user/name` the Hub accepts (huggingface_hub's own validator), before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise MigmError(f"repo id must look like 'user/name', got {inert(repr(repo_id))}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise MigmError(
            f"repo id {inert(repr(repo_id))} is not one the Hub accepts: 'user/name', at most 96 "
            "characters of letters, digits, '-', '_' and '.', no '--' or '..'"
        ) from None
    return repo_id


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """A folder that can be written, checked before any work and without creating anything: an
    existing writable folder, or a missing one whose nearest existing parent is a writable folder;
    never one inside a dataset or zoo folder."""
    path = Path(path)
    check_outside_data(path, what)
    if path.exists():
        if not path.is_dir():
            raise MigmError(f"{what} {str(path)!r} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise MigmError(f"{what} {str(path)!r} is not writable")
        return path
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise MigmError(f"cannot create {what} {str(path)!r}: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise MigmError(f"cannot create {what} {str(path)!r}: {str(parent)!r} is not writable")
    return path


def check_removable_dir(path: str | Path, what: str = "output folder") -> None:
    """A folder whose files `--overwrite` may remove: never a link (its target is not ours), the
    filesystem root, the home folder, or the current folder or one of its parents."""
    path = Path(path)
    if path.is_symlink():
        raise MigmError(f"{what} {str(path)!r} is a link; --overwrite does not remove files through links")
    real, cwd = path.resolve(), Path.cwd().resolve()
    if real == Path(real.anchor) or real == Path.home().resolve() or real == cwd or real in cwd.parents:
        raise MigmError(
            f"--overwrite refuses to clear {str(path)!r} (the root, home or current folder); choose a dataset folder"
        )
