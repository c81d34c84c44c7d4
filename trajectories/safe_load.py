"""Reading back files anyone may have written: JSON, text, `.npz` arrays and images, bounded.

Every file the tool reads back (manifests, zoo configs, training state, FID references, cards)
comes through here: a size limit before reading, strict UTF-8, JSON nesting at most `MAX_DEPTH`
deep and integers at most `MAX_INT` in size (Python's own int-string limit and its recursion limit
otherwise surface as tracebacks), `.npz` arrays numeric and never unpickled, and images within
PIL's decompression-bomb limit (as an error, not a warning). Every problem is one `MigmError` line naming the file; the typed
checks of what the JSON means stay with its reader (`store.manifest`, `shortcut_zoo.zoo_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from migm.trajectories.errors import MigmError

MAX_JSON_BYTES = 64 << 20  # a manifest lists every shard and prompt: megabytes at most
MAX_TEXT_BYTES = 4 << 20  # cards and READMEs
MAX_DEPTH = 64
MAX_INT = 2**64


def read_bytes(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a plain file of at most `limit` bytes."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise MigmError(f"{what} {path} is {size:,} bytes, more than the {limit:,} this tool reads")
        with open(path, "rb") as f:
            return f.read(limit + 1)[:limit]
    except OSError as e:
        raise MigmError(f"cannot read {path}: {e.strerror or e}") from None


def read_text(path: str | Path, limit: int = MAX_TEXT_BYTES, what: str = "file") -> str:
    """A UTF-8 text file of at most `limit` bytes; anything else is one line naming it."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MigmError(f"{what} {path} is not UTF-8 text (byte {e.start}: {e.reason})") from None


def parse_json(text: str, where: str | Path):
    """JSON text -> value, within the depth and integer limits; a problem is one line naming `where`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise MigmError(f"{where} is not valid JSON ({e.msg}, line {e.lineno})") from None
    except RecursionError:
        raise MigmError(f"{where} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # Python's int-string conversion limit (4300 digits)
        raise MigmError(f"{where} holds a number too long to read ({str(e).split(';')[0]})") from None
    check_json_value(value, where)
    return value


def check_json_value(value, where: str | Path) -> None:
    """No nesting deeper than MAX_DEPTH, no integer beyond ±MAX_INT (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise MigmError(f"{where} nests deeper than {MAX_DEPTH} levels")
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))
        elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
            raise MigmError(f"{where} holds an integer of {len(str(abs(v)))} digits; at most 2**64 is read")


def load_json(path: str | Path, limit: int = MAX_JSON_BYTES):
    """A JSON file read back safely (size, UTF-8, depth and integer limits)."""
    return parse_json(read_text(path, limit, "JSON file"), path)


def load_npz(path: str | Path, what: str = "file") -> dict[str, np.ndarray]:
    """The arrays of a `.npz`, never unpickled, each a number array (bool, int, unsigned, float)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, KeyError) as e:
        raise MigmError(f"cannot read {what} {str(path)!r}: {str(e).splitlines()[0] if str(e) else e}") from None
    except Exception as e:  # zipfile raises BadZipFile, NotImplementedError and more for a damaged archive
        raise MigmError(f"cannot read {what} {str(path)!r}: {type(e).__name__}") from None
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise MigmError(f"{what} {str(path)!r}: array {name!r} holds {a.dtype}, not numbers")
    return arrays


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]. More pixels than PIL's `Image.MAX_IMAGE_PIXELS` (about
    89 million: a decompression bomb, refused from its header before decoding) or anything
    unreadable is one line naming it."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB")).copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MigmError(f"image {path} is too large to decode ({e})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, MemoryError) as e:
        raise MigmError(f"cannot read the image {path}: {e}") from None
