"""Where a dataset lives: a local folder or an fsspec URL (`s3://`, `gs://`, `az://`, `hf://`,
`memory://`, `file://`), behind the one small interface the store code talks to.

A local folder keeps its own rules (links never followed, temporary name then rename). On an object
store there is no rename: a finished shard, written to a local staging folder by the same writers,
is uploaded whole under its final name (one object per file: a Parquet shard is one object, put in
one single- or multi-part upload that the store makes visible at once; a Zarr shard is a group of a
few objects, uploaded in sorted order), and only then its checksum object is written. A shard is
whole when its bytes hash to its checksum; the hash of a Zarr shard runs over its member objects in
sorted order (relative name, then bytes), the same on a store as in a folder, so a shard has one
sha256 wherever it lies.

Credentials come the way each protocol's users expect (s3fs: AWS environment variables, config
files and profiles; gcsfs / adlfs theirs); `--storage-option KEY=VALUE` adds to them. Object-store
calls get short timeouts and few retries, so an unreachable endpoint is an error in seconds, not a hang.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from migm.trajectories.errors import MigmError

# Bounded waits for the stores tests and users meet most; any of them can be overridden by an option.
DEFAULTS = {"s3": {"config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 2}}}}
RETRIES = 2  # s3fs's own retry loop (an attribute, not an argument: its default 5 waits ~2 s more)
READ_ONLY = ("hf", "http", "https")  # protocols this tool only reads from


def parse_storage_options(items: list[str] | None) -> dict:
    """['endpoint_url=http://…', 'anon=true'] -> {'endpoint_url': 'http://…', 'anon': True} (values
    parsed as JSON where they can be: numbers, booleans, objects)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MigmError(f"--storage-option takes KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def protocol_of(url: str) -> str | None:
    """'s3' for 's3://bucket/x'; None for a local path (a `file://` URL is a local path)."""
    if "://" not in str(url):
        return None
    proto = str(url).split("://", 1)[0]
    return None if proto in ("file", "local") else proto


def local_path(url: str | Path) -> Path:
    text = str(url)
    return Path(text.split("://", 1)[1]) if text.startswith(("file://", "local://")) else Path(text)


def reason(e: BaseException) -> str:
    """One line saying why a storage call failed, in the user's terms."""
    name = type(e).__name__
    text = " ".join(str(e).split()) or name
    if name == "NoCredentialsError" or "Unable to locate credentials" in text:
        return "no credentials found (set them as your store's tools expect, e.g. AWS_ACCESS_KEY_ID / a profile)"
    if isinstance(e, PermissionError) or "AccessDenied" in text or "Forbidden" in text:
        return f"access denied ({text})"
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return f"the bucket does not exist ({text})"
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError"):
        return f"cannot reach the endpoint ({text})"
    if isinstance(e, FileNotFoundError):
        return f"not found ({text})"
    return f"{name}: {text}"


def storage_error(url: str, action: str, e: BaseException) -> MigmError:
    return MigmError(f"cannot {action} {url}: {reason(e)}")


@dataclass
class Location:
    """A dataset's place: `url` as the user gave it (messages name it), its fsspec filesystem and
    the path of its root inside it. `local` folders are handled with `pathlib` directly."""

    url: str
    options: dict = field(default_factory=dict)
    root: str = ""
    protocol: str | None = None
    _fs: object = None
    _pid: int | None = None

    @property
    def fs(self):
        """The fsspec filesystem, made once per process (a forked DataLoader worker makes its own:
        an async client's connections and event loop do not survive a fork)."""
        if self._fs is None or self._pid != os.getpid():
            self._fs, self._pid = filesystem(self.protocol, self.url, self.options), os.getpid()
        return self._fs

    @property
    def local(self) -> bool:
        return self.protocol is None

    @property
    def folder(self) -> Path:  # local only
        return local_path(self.url)

    def __str__(self) -> str:
        return self.url

    def __getstate__(self) -> dict:  # an fsspec filesystem is rebuilt in each process from its options
        return {**self.__dict__, "_fs": None, "_pid": None}

    def async_fs(self):
        """The same filesystem for asyncio users (zarr's `FsspecStore`): an async instance of an
        async implementation (s3fs, gcsfs, adlfs), else fsspec's wrapper around this one."""
        if self.fs.async_impl:
            return filesystem(self.protocol, self.url, {**self.options, "asynchronous": True})
        from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

        return AsyncFileSystemWrapper(self.fs, asynchronous=True)

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if name else self.root

    def url_of(self, name: str) -> str:
        return f"{self.url.rstrip('/')}/{name}"

    def guard(self, action: str, name: str = ""):
        return _Guard(self.url_of(name) if name else self.url, action)

    # ---- reading ---------------------------------------------------------------------------------

    def exists(self, name: str) -> bool:
        if self.local:
            p = self.folder / name
            return p.exists() or p.is_symlink()
        with self.guard("read", name):
            return self.fs.exists(self.path(name))

    def read_bytes(self, name: str) -> bytes:
        if self.local:
            return (self.folder / name).read_bytes()
        with self.guard("read", name):
            return self.fs.cat_file(self.path(name))

    def files(self, name: str) -> list[str]:
        """Relative names (inside `name`) of the objects of a file or a tree; [] when missing."""
        if self.local:
            p = self.folder / name
            if p.is_file():
                return [""]
            return [q.relative_to(p).as_posix() for q in p.rglob("*") if q.is_file()] if p.is_dir() else []
        with self.guard("read", name):
            found = self.fs.find(self.path(name), detail=True)
        base = self.path(name).rstrip("/")
        return [
            "" if k.rstrip("/") == base else k[len(base) + 1 :] for k, v in found.items() if v["type"] != "directory"
        ]

    def sha256(self, name: str) -> str:
        """The shard checksum: a file's bytes, or a tree's (relative name, bytes) in sorted order,
        the order of `schema.sha256_path` (path parts compared one by one)."""
        if self.local:
            from migm.trajectories.store.schema import sha256_path

            return sha256_path(self.folder / name)
        h = hashlib.sha256()
        for rel in sorted(self.files(name), key=lambda r: r.split("/")):
            if rel:
                h.update(rel.encode() + b"\0")
            with self.guard("read", name), self.fs.open(self.path(f"{name}/{rel}" if rel else name), "rb") as f:
                for block in iter(lambda f=f: f.read(1 << 22), b""):
                    h.update(block)
        return h.hexdigest()

    def size(self, name: str) -> int:
        if self.local:
            from migm.trajectories.store.schema import path_size

            return path_size(self.folder / name)
        with self.guard("read", name):
            return int(self.fs.du(self.path(name)))

    def entries(self, keep_whole: set[str]) -> list[str]:
        """Every entry under the root, relative; a local folder is walked without following links
        and a folder not in `keep_whole` (a container) is named once, not its insides."""
        if not self.local:
            return sorted(self.files(""))
        root, found = self.folder, []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath).relative_to(root)
            for name in sorted(dirnames) + sorted(filenames):
                rel = (here / name).as_posix()
                found.append(rel)
                if name in dirnames and rel not in keep_whole:
                    dirnames.remove(name)
        return found

    # ---- writing ---------------------------------------------------------------------------------

    def write_text(self, name: str, text: str) -> None:
        """Local: temporary name, fsync, rename. Store: one put, visible at once."""
        if self.local:
            from migm.trajectories.store.schema import write_text_atomic

            write_text_atomic(self.folder / name, text)
            return
        with self.guard("write", name):
            self.fs.pipe_file(self.path(name), text.encode())

    def remove(self, name: str) -> None:
        """A file or a whole tree (a local link is removed, never followed)."""
        if self.local:
            p = self.folder / name
            if p.is_symlink() or not p.is_dir():
                p.unlink(missing_ok=True)
            else:
                shutil.rmtree(p)
            return
        with self.guard("delete", name):
            keys = [self.path(f"{name}/{r}" if r else name) for r in self.files(name)]
            if keys:
                self.fs.rm(keys)

    def delete(self, names: list[str]) -> None:
        """Plain files / objects by name; missing ones are skipped (a local link is removed, not followed)."""
        if self.local:
            for name in names:
                p = self.folder / name
                if p.is_symlink() or p.is_file():
                    p.unlink()
            return
        if names:
            with self.guard("delete", names[0] if len(names) == 1 else ""):
                self.fs.rm([self.path(n) for n in names])

    def staging(self, name: str) -> Path:
        """Where a writer builds shard `name`: in place (it renames its temporary name there) for a
        local folder; a fresh local temporary folder for a store (uploaded by `publish`)."""
        if self.local:
            return self.folder / name
        return Path(tempfile.mkdtemp(prefix="migm-shard-")) / Path(name).name

    def publish(self, staged: Path, name: str) -> None:
        """Upload a finished staged shard whole under its final name (store only), then drop the copy."""
        if self.local:
            return
        try:
            files = [staged] if staged.is_file() else sorted(p for p in staged.rglob("*") if p.is_file())
            with self.guard("write", name):
                for f in files:
                    rel = f.relative_to(staged).as_posix() if f != staged else ""
                    self.fs.put_file(str(f), self.path(f"{name}/{rel}" if rel else name))
        finally:
            shutil.rmtree(staged.parent, ignore_errors=True)

    def discard(self, staged: Path) -> None:
        if not self.local:
            shutil.rmtree(staged.parent, ignore_errors=True)


class _Guard:
    """Turns any storage failure inside it into one `MigmError` line naming the URL."""

    def __init__(self, url: str, action: str):
        self.url, self.action = url, action

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if e is None or isinstance(e, (MigmError, KeyboardInterrupt, SystemExit, GeneratorExit)):
            return False
        raise storage_error(self.url, self.action, e) from None


def filesystem(protocol: str, url: str, options: dict):
    import fsspec

    try:
        cls = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise MigmError(f"unknown storage protocol {protocol!r} in {url} (fsspec knows no such protocol)") from None
    except ImportError as e:
        raise MigmError(f"{url} needs a package for {protocol}:// that is not installed ({e})") from None
    opts = {**DEFAULTS.get(protocol, {}), **options}
    retries = opts.pop("retries", RETRIES)
    try:
        fs = cls(**opts)
    except Exception as e:
        raise MigmError(f"cannot open {url}: {reason(e)}") from None
    if hasattr(fs, "retries"):
        fs.retries = int(retries)
    return fs


def open_location(url: str | Path | Location, storage_options: dict | None = None) -> Location:
    """A dataset location from a local path or an fsspec URL (no network call yet)."""
    if isinstance(url, Location):
        return url
    text = str(url)
    protocol = protocol_of(text)
    if protocol is None:
        return Location(url=str(local_path(text)), options={}, protocol=None)
    options = dict(storage_options or {})
    fs = filesystem(protocol, text, options)
    root = fs._strip_protocol(text).rstrip("/")
    if not root or root == "/":
        raise MigmError(f"{text} names no bucket or folder")
    return Location(url=text.rstrip("/"), options=options, root=root, protocol=protocol, _fs=fs, _pid=os.getpid())


def writable_location(loc: Location) -> None:
    """A store location this tool may write to (local folders are checked by `checks`)."""
    if loc.protocol in READ_ONLY:
        raise MigmError(
            f"{loc.url}: {loc.protocol}:// is read-only here; dump to a folder or a bucket, then `migm push`"
        )
