"""The dataset manifest (`dataset.json`) as one typed record: read, written and validated here.

A `Plan` is what defines a dataset's content (equal plans give equal datasets); it is also the
dump's state file while a dump runs. A `Manifest` is a plan plus every shard with its row count and
sha256. Reading checks every key and type, refuses unknown keys, and checks that the shard list is
the one the plan implies: plain names inside the dataset's sub-folder, no duplicates, rows matching
`num_samples × branches`. Every problem is one `MigmError` line naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path, PurePosixPath

from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import LEGACY_SAMPLER, SamplerConfig
from migm.trajectories.safe_load import load_json
from migm.trajectories.store.codecs import Codec, parse_codec
from migm.trajectories.store.location import Location, open_location
from migm.trajectories.store.schema import FORMATS, MANIFEST, SCHEMA_VERSION, Dims, shard_name

SUBDIR = {"zarr": "shards", "parquet": "data"}  # where each format keeps its shards
SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BaseInfo:
    name: str
    fingerprint: str
    precision: str


@dataclass(frozen=True)
class Shard:
    name: str  # relative to the dataset folder, e.g. shards/shard-00000.zarr
    rows: int
    sha256: str
    bytes: int


@dataclass
class Plan:
    """Everything that defines a dataset's content."""

    schema_version: int
    format: str
    base: BaseInfo
    sampler: SamplerConfig
    dims: Dims
    codec: Codec
    num_samples: int
    shard_size: int  # samples per shard
    seed: int
    classes: list[int]  # sample i is conditioned on classes[i % len(classes)] (text: a prompt index)
    branches: int  # rows per sample: 2 with classifier-free guidance (conditional first), else 1
    text: dict | None  # text bases: {"prompts": [...], "image_offset": id of image code 0 or None}; else None

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_name(self, k: int) -> str:
        return shard_name(self.format, k, self.num_shards)

    def shard_samples(self, k: int) -> range:
        """The sample indices of shard k."""
        return range(k * self.shard_size, min((k + 1) * self.shard_size, self.num_samples))

    def shard_rows(self, k: int) -> int:
        return len(self.shard_samples(k)) * self.branches

    def plan_dict(self) -> dict:
        """The plan as JSON values (also the part of a manifest a rerun compares)."""
        return {
            "schema_version": self.schema_version,
            "format": self.format,
            "base": asdict(self.base),
            "sampler": self.sampler.to_dict(),
            "dims": {k: v for k, v in asdict(self.dims).items() if k != "P" or v},
            "codec": self.codec.to_dict(),
            "num_samples": self.num_samples,
            "shard_size": self.shard_size,
            "seed": self.seed,
            "classes": list(self.classes),
            "branches": self.branches,
            # class datasets keep the keys they had before text bases (and so their fingerprints)
            **({"text": self.text} if self.text is not None else {}),
        }

    def to_dict(self) -> dict:
        return self.plan_dict()

    def plan(self) -> Plan:
        return Plan(**{f.name: getattr(self, f.name) for f in fields(Plan)})


@dataclass
class Manifest(Plan):
    """A finished dataset: the plan and every shard, as written by the dump."""

    shards: list[Shard]
    rows: int
    created_by: str
    processes: int

    def to_dict(self) -> dict:
        return {
            **self.plan_dict(),
            "shards": [asdict(s) for s in self.shards],
            "rows": self.rows,
            "created_by": self.created_by,
            "processes": self.processes,
        }

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    def fingerprint(self) -> str:
        """sha256 over what defines the content: the plan (less format and layout) and every shard's checksum."""
        d = self.to_dict()
        keys = ("base", "sampler", "dims", "codec", "num_samples", "seed", "classes")
        content = {k: d[k] for k in keys if k in d} | {"shards": [s.sha256 for s in self.shards]}
        if "text" in d:
            content["text"] = d["text"]
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


# ---- validation: JSON -> typed record ------------------------------------------------------------

# key -> kind: int, float (int accepted), str, list, dict, "int?" (int or null)
BASE_KEYS = {"name": str, "fingerprint": str, "precision": str}
SAMPLER_KEYS = {
    "steps": int,
    "budget": "int?",
    "guidance": float,
    "r_temp": float,
    "sm_temp": float,
    "rule": str,
    "temperature": float,
}
DIMS_KEYS = {"N": int, "L": int, "C": int, "D": int, "V": int, "P": int}
TEXT_KEYS = {"prompts": list, "image_offset": "int?"}  # None: the feature is the image grid alone
SHARD_KEYS = {"name": str, "rows": int, "sha256": str, "bytes": int}
PLAN_KEYS = {
    "schema_version": int,
    "format": str,
    "base": dict,
    "sampler": dict,
    "dims": dict,
    "codec": dict,
    "num_samples": int,
    "shard_size": int,
    "seed": int,
    "classes": list,
    "branches": int,
    "text": "dict?",
}
MANIFEST_KEYS = {**PLAN_KEYS, "shards": list, "rows": int, "created_by": str, "processes": int}


def _is(value, kind) -> bool:
    if kind == "int?":
        return value is None or _is(value, int)
    if kind == "dict?":
        return value is None or isinstance(value, dict)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


def _keys(obj, spec: dict, where: str) -> dict:
    """`obj` is a JSON object with exactly the keys of `spec`, each of its kind."""
    inside = f" in {where}" if where else ""
    if not isinstance(obj, dict):
        raise ValueError(f"{where or 'the file'} must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in spec if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(map(repr, missing))}{inside}")
    unknown = [k for k in obj if k not in spec]
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}{inside}")
    for key, kind in spec.items():
        if not _is(obj[key], kind):
            want = {
                "int?": "an integer or null",
                "dict?": "an object or null",
                int: "an integer",
                float: "a finite number",
                str: "a string",
                list: "a list",
                dict: "an object",
            }[kind]
            raise ValueError(f"{where}{'.' if where else ''}{key} must be {want}, got {obj[key]!r}")
    return obj


def _codec(d: dict) -> Codec:
    name = d.get("name") if isinstance(d, dict) else None
    keys = {
        "quant": {"name": str, "bits": int},
        "delta": {"name": str, "bits": float, "keyframe": int},
    }.get(name, {"name": str})
    _keys(d, keys, "codec")
    try:
        return parse_codec(name + "".join(f"{',' if i else ':'}{k}={d[k]}" for i, k in enumerate(list(keys)[1:])))
    except MigmError as e:
        raise ValueError(f"codec: {e}") from None


def _plan(d: dict, keys: dict) -> Plan:
    if not isinstance(d, dict):
        raise ValueError(f"the file must be a JSON object, got a JSON {type(d).__name__}")
    version = d.get("schema_version")
    if version != SCHEMA_VERSION:  # first: a newer file is named as such, not as a list of odd keys
        raise ValueError(f"schema version {version!r} is not supported (this migm reads {SCHEMA_VERSION})")
    d = {"text": None, **d}  # absent from datasets written before text bases
    _keys(d, keys, "")
    if d["format"] not in FORMATS:
        raise ValueError(f"unknown format {d['format']!r}")
    dims = _keys({"P": 0, **d["dims"]} if isinstance(d["dims"], dict) else d["dims"], DIMS_KEYS, "dims")
    bad = [k for k, v in dims.items() if v < (0 if k in ("P", "C") else 1)]  # C = 0: aMUSEd's feature is the grid
    if bad:
        raise ValueError(f"dims {', '.join(bad)} must be at least {0 if bad[0] in ('P', 'C') else 1}")
    text = d["text"]
    if text is not None:
        _keys(text, TEXT_KEYS, "text")
        if not text["prompts"] or not all(isinstance(p, str) for p in text["prompts"]):
            raise ValueError("text.prompts must be a non-empty list of strings")
        if (text["image_offset"] is not None and text["image_offset"] < 0) or dims["P"] < 1:
            raise ValueError("a text dataset needs image_offset >= 0 and dims P >= 1")
        if any(c >= len(text["prompts"]) for c in d["classes"] if _is(c, int)):
            raise ValueError("classes of a text dataset index its prompts")
    elif dims["P"]:
        raise ValueError("dims P is set but the dataset has no text section")
    try:
        given = d["sampler"] if not isinstance(d["sampler"], dict) else {**LEGACY_SAMPLER, **d["sampler"]}
        sampler = SamplerConfig(**_keys(given, SAMPLER_KEYS, "sampler"))
    except MigmError as e:
        raise ValueError(f"sampler: {e}") from None
    if sampler.steps != dims["N"]:
        raise ValueError(f"sampler steps {sampler.steps} differ from dims N {dims['N']}")
    for key in ("num_samples", "shard_size"):
        if d[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {d[key]}")
    if d["seed"] < 0:
        raise ValueError(f"seed must be at least 0, got {d['seed']}")
    if not d["classes"] or not all(_is(c, int) and c >= 0 for c in d["classes"]):
        raise ValueError("classes must be a non-empty list of non-negative integers")
    if d["branches"] != (2 if sampler.guidance > 0 else 1):
        raise ValueError(f"branches {d['branches']} do not match guidance {sampler.guidance}")
    return Plan(
        schema_version=version,
        format=d["format"],
        base=BaseInfo(**_keys(d["base"], BASE_KEYS, "base")),
        sampler=sampler,
        dims=Dims(**dims),
        codec=_codec(d["codec"]),
        num_samples=d["num_samples"],
        shard_size=d["shard_size"],
        seed=d["seed"],
        classes=list(d["classes"]),
        branches=d["branches"],
        text=text,
    )


def plain_shard_name(name: str, fmt: str) -> bool:
    """A plain relative name one level inside the format's sub-folder: no `..`, no absolute path,
    no backslash or control character."""
    p = PurePosixPath(name)
    printable = name.isprintable() and "\\" not in name
    return (
        printable
        and not p.is_absolute()
        and len(p.parts) == 2
        and p.parts[0] == SUBDIR[fmt]
        and p.parts[1] not in (".", "..")
    )


def _shards(entries: list, plan: Plan) -> list[Shard]:
    if not entries:
        raise ValueError("lists no shards")
    shards = [Shard(**_keys(e, SHARD_KEYS, f"shards[{i}]")) for i, e in enumerate(entries)]
    seen = set()
    for s in shards:
        if not plain_shard_name(s.name, plan.format):
            raise ValueError(
                f"shard name {s.name!r} is not a plain name inside the dataset's {SUBDIR[plan.format]}/ folder"
            )
        if s.name in seen:
            raise ValueError(f"shard {s.name!r} is listed twice")
        seen.add(s.name)
        if s.rows < 0 or s.bytes < 0:
            raise ValueError(f"shard {s.name!r}: rows and bytes must not be negative")
        if not SHA256.fullmatch(s.sha256):
            raise ValueError(f"shard {s.name!r}: sha256 must be 64 lowercase hex digits")
    if len(shards) != plan.num_shards:
        raise ValueError(
            f"lists {len(shards)} shard(s); {plan.num_samples} samples in shards of {plan.shard_size} make {plan.num_shards}"
        )
    for k, s in enumerate(shards):
        if s.name != plan.shard_name(k):
            raise ValueError(f"shard {k} is named {s.name!r}, expected {plan.shard_name(k)!r}")
        if s.rows != plan.shard_rows(k):
            raise ValueError(
                f"shard {s.name!r} has {s.rows} rows; its {len(plan.shard_samples(k))} samples × {plan.branches} branch(es) make {plan.shard_rows(k)}"
            )
    return shards


def manifest_from_dict(d, where: str | Path = MANIFEST) -> Manifest:
    """Check a parsed `dataset.json` and type it; a problem is one MigmError naming `where`."""
    try:
        plan = _plan(d, MANIFEST_KEYS)
        shards = _shards(d["shards"], plan)
        if d["rows"] != plan.num_samples * plan.branches:
            raise ValueError(
                f"rows {d['rows']} differ from num_samples × branches = {plan.num_samples * plan.branches}"
            )
        if d["processes"] < 1:
            raise ValueError(f"processes must be at least 1, got {d['processes']}")
    except ValueError as e:
        raise MigmError(f"{where}: {e}") from None
    return Manifest(**vars(plan), shards=shards, rows=d["rows"], created_by=d["created_by"], processes=d["processes"])


def plan_from_dict(d, where: str | Path) -> Plan:
    try:
        return _plan(d, PLAN_KEYS)
    except ValueError as e:
        raise MigmError(f"{where}: {e}") from None


def read_json(path: Path):
    """A JSON file read back within the safe loader's limits (size, UTF-8, depth, integers)."""
    return load_json(path)


def read_manifest(root: str | Path | Location, storage_options: dict | None = None) -> Manifest:
    """Read and check `ROOT/dataset.json` (ROOT: a folder or an fsspec URL)."""
    loc = open_location(root, storage_options)
    if loc.local:
        root = loc.folder
        if not root.is_dir():
            raise MigmError(f"{str(root)!r} is not a dataset folder")
        path = root / MANIFEST
        if not path.is_file():
            raise MigmError(f"{str(root)!r} has no {MANIFEST}: not a trajectory dataset, or its dump has not finished")
        return manifest_from_dict(read_json(path), path)
    return manifest_from_dict(read_store_json(loc, MANIFEST), loc.url_of(MANIFEST))


def read_store_json(loc: Location, name: str):
    """A JSON object of a store location, within the safe loader's limits (size, UTF-8, depth,
    integers); a missing one names the location."""
    from migm.trajectories.safe_load import MAX_JSON_BYTES, parse_json

    where = loc.url_of(name)
    if not loc.exists(name):
        raise MigmError(f"{loc.url} has no {name}: not a trajectory dataset, or its dump has not finished")
    size = loc.size(name)
    if size > MAX_JSON_BYTES:
        raise MigmError(f"JSON file {where} is {size:,} bytes, more than the {MAX_JSON_BYTES:,} this tool reads")
    try:
        text = loc.read_bytes(name).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MigmError(f"JSON file {where} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    return parse_json(text, where)


def read_plan(loc: Location, name: str) -> Plan:
    """The plan a dump's state file `name` holds."""
    if loc.local:
        return plan_from_dict(read_json(loc.folder / name), loc.folder / name)
    return plan_from_dict(read_store_json(loc, name), loc.url_of(name))


def write_manifest(root: str | Path | Location, manifest: Manifest) -> None:
    """Validate, then write `dataset.json` whole (a folder: temporary name and rename; a store:
    one put): a reader sees the old file or the new one."""
    loc = open_location(root)
    manifest_from_dict(manifest.to_dict(), loc.url_of(MANIFEST))
    loc.write_text(MANIFEST, json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")


def shard_path(root: str | Path, name: str) -> Path:
    """The path of a (validated) shard name, refusing a link: shards are plain files / folders inside
    the dataset, so a reader never follows a name out of it."""
    root = Path(root)
    path = root / name
    if path.is_symlink() or (path.exists() and not path.resolve().is_relative_to(root.resolve())):
        raise MigmError(
            f"shard {name!r} is a link or lies outside {str(root)!r}; shards must be plain files or folders inside it"
        )
    return path
