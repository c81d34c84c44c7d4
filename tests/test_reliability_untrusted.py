"""Issue 30: untrusted data, bounded work. One test (or a few) per numbered cause, named after the
behaviour it guards: a hostile file or an absurd number is one `error:` line and exit 2, never a
traceback, and nothing already written is damaged."""

import json
import shutil

import numpy as np
import pytest
from helpers import one_line_stderr
from typer.testing import CliRunner

from migm.cli.main import app
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.store.dataset import READERS
from migm.trajectories.store.parquet_writer import ParquetShardWriter
from migm.trajectories.store.schema import field_specs, sha256_path
from migm.trajectories.store.verify import verify_dataset
from migm.trajectories.store.zarr_writer import ZarrShardWriter

runner = CliRunner()
DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
WRITERS = {"zarr": ZarrShardWriter, "parquet": ParquetShardWriter}


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Tiny datasets: zarr and parquet lossless, zarr quant; 2 shards of 4 rows (CFG: 2 rows a sample)."""
    root = tmp_path_factory.mktemp("untrusted")
    out = {}
    for name, fmt, codec in (
        ("zarr", "zarr", "lossless"),
        ("parquet", "parquet", "lossless"),
        ("quant", "zarr", "quant"),
    ):
        cfg = DumpConfig(
            num_samples=4, steps=4, shard_size=2, batch_size=2, format=fmt, codec=codec, out=str(root / name)
        )
        dump_trajectories(cfg, DIGITS)
        out[name] = root / name
    return out


def copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def rewrite_shard(ds, k: int, field: str, row: int, value) -> str:
    """Rewrite shard k with one value changed, as a buggy third-party writer would (the format's own
    writer, valid structure), and re-record its sha256 in the manifest: the checksum matches."""
    from migm.trajectories.store.manifest import read_manifest

    m = read_manifest(ds)
    shard = m.shards[k]
    specs = field_specs(m.dims, m.codec)
    data = READERS[m.format](ds / shard.name, specs, shard.rows).read(0, shard.rows)
    data[field] = data[field].copy()
    data[field][(row,) + (0,) * (data[field].ndim - 1)] = value
    (ds / shard.name).unlink() if m.format == "parquet" else shutil.rmtree(ds / shard.name)
    writer = WRITERS[m.format](ds / shard.name, shard.rows, m.dims, m.codec)
    writer.write(0, data)
    writer.commit()
    raw = json.loads((ds / "dataset.json").read_text())
    raw["shards"][k]["sha256"] = sha256_path(ds / shard.name)
    (ds / "dataset.json").write_text(json.dumps(raw))
    return shard.name


# ---- cause 1: a shard whose checksum matches is still checked for content -------------------------

HOSTILE = [
    ("zarr", "tokens", 10_000, "field tokens"),
    ("zarr", "tokens", -3, "field tokens"),
    ("zarr", "order", 99, "field order"),
    ("zarr", "cond", 12345, "field cond"),
    ("zarr", "branch", 7, "field branch"),
    ("zarr", "features", np.inf, "field features"),
    ("zarr", "features", np.nan, "field features"),
    ("parquet", "tokens", 10_000, "field tokens"),
    ("parquet", "order", -1, "field order"),
    ("parquet", "features", -np.inf, "field features"),
    ("quant", "features_q", -128, "field features_q"),
    ("quant", "features_scale", np.nan, "field features_scale"),
]


@pytest.mark.parametrize("which, field, value, message", HOSTILE)
def test_cause1_a_rehashed_hostile_shard_is_refused_by_verify_and_train(
    datasets, tmp_path, which, field, value, message
):
    ds = copy(datasets[which], tmp_path / "ds")
    name = rewrite_shard(ds, 1, field, 2, value)
    report = verify_dataset(ds)
    bad = [s for s in report["shards"] if not s["ok"]]
    assert [s["name"] for s in bad] == [name]
    assert "row 2" in bad[0]["problem"] and message in bad[0]["problem"]
    code, _, stderr = cli("verify", ds)
    assert code == 2 and name in stderr and "Traceback" not in stderr
    before = sorted(p.name for p in ds.rglob("*"))
    out = tmp_path / "z"
    one_line_stderr(
        *cli("train", "--data", ds, "--out", out, "--steps", 2, "--device", "cpu", "-q")[::2], name, "row 2", message
    )
    assert sorted(p.name for p in ds.rglob("*")) == before and not (out / "config.json").exists()


# ---- cause 2: hostile metadata files are one line, never a traceback -------------------------------

DEEP = "[" * 100_000 + "]" * 100_000
LONG_INT = "1" * 5000
ZOO = {
    "zoo_format": 2,
    "arch": "mlp",
    "arch_config": {"dim": 8},
    "base": {"name": "maskgit-digits", "fingerprint": "ab"},
}
HOSTILE_CONFIGS = [
    (json.dumps({**ZOO, "metrics": []}), "field 'metrics'"),
    (json.dumps({**ZOO, "metrics": {"overall": {"cos": "high"}}}), "metrics.overall.cos"),
    (json.dumps({**ZOO, "cost": {"parameters": "12"}}), "cost.parameters"),
    (json.dumps({**ZOO, "arch_config": [1, 2]}), "field 'arch_config'"),
    (json.dumps({**ZOO, "arch": ["mlp"]}), "field 'arch'"),
    (json.dumps([ZOO]), "must be a JSON object"),
    (json.dumps(ZOO).encode()[:-1] + b', "x": "\xff\xfe"}', "not UTF-8"),
    (json.dumps({**ZOO, "cost": {"parameters": 0}})[:-1] + f', "n": {LONG_INT}}}', "number too long"),
    (json.dumps(ZOO)[:-1] + f', "n": {DEEP}}}', "nests deeper"),
]


@pytest.mark.parametrize("text, message", HOSTILE_CONFIGS)
def test_cause2_a_hostile_zoo_config_is_one_line_for_list_and_show(tmp_path, text, message):
    folder = tmp_path / "zoo" / "z"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    (folder / "README.md").write_text("# card\n")
    one_line_stderr(*cli("zoo", "list", tmp_path / "zoo")[::2], message)
    one_line_stderr(*cli("zoo", "show", folder)[::2], message)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t[:-2] + b', "x": "\xc3\x28"}', "not UTF-8"),
        (lambda t: t[:-2] + f', "seed": {LONG_INT}}}'.encode(), "number too long"),
        (lambda t: t[:-2] + f', "x": {DEEP}}}'.encode(), "nests deeper"),
        (lambda t: t.replace(b'"seed": ', b'"seed": 1' + b"0" * 100 + b', "y": '), "at most 2**64"),
    ],
)
def test_cause2_a_hostile_dataset_json_is_one_line_for_verify(datasets, tmp_path, edit, message):
    ds = copy(datasets["zarr"], tmp_path / "ds")
    raw = (ds / "dataset.json").read_bytes().rstrip()
    (ds / "dataset.json").write_bytes(edit(raw))
    one_line_stderr(*cli("verify", ds)[::2], "dataset.json", message)


def test_cause2_a_readme_in_invalid_utf8_is_one_line_for_push_dry_run(datasets, tmp_path):
    ds = copy(datasets["parquet"], tmp_path / "ds")
    (ds / "README.md").write_bytes(b"# card \xff\xfe broken\n")
    one_line_stderr(*cli("push", ds, "--repo-id", "me/ds", "--dry-run")[::2], "README.md", "not UTF-8")


def test_cause2_a_fid_reference_of_strings_is_refused(tmp_path):
    from migm.shortcut_zoo.image_metrics import FeatureStats
    from migm.trajectories.errors import MigmError

    np.savez(tmp_path / "ref.npz", mu=np.array(["a"] * 64), sigma=np.zeros((64, 64)))
    with pytest.raises(MigmError, match="array 'mu' holds <U1, not numbers"):
        FeatureStats.load(tmp_path / "ref.npz", dims=64)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_cause2_a_decompression_bomb_png_is_refused_before_decoding(tmp_path):
    from migm.shortcut_zoo.image_metrics import read_image
    from migm.trajectories.errors import MigmError

    (tmp_path / "bomb.png").write_bytes(png_claiming(40_000, 40_000))
    with pytest.raises(MigmError, match="bomb.png is too large to decode"):
        read_image(tmp_path / "bomb.png")
    (tmp_path / "big.png").write_bytes(png_claiming(10_000, 10_000))  # past PIL's warning limit only
    with pytest.raises(MigmError, match="big.png is too large to decode"):
        read_image(tmp_path / "big.png")


# ---- cause 3: work a user asks for by mistake is refused, not run -----------------------------------


def test_cause3_bench_bootstrap_beyond_its_bound_is_refused(tmp_path):
    out = tmp_path / "b"
    args = ["bench", "--configs", "N4", "--predictors", "cache", "--samples", 4, "--out", out, "--device", "cpu"]
    code, _, stderr = cli(*args, "--bootstrap", 10_000_000)
    one_line_stderr(code, stderr.lstrip("\n"), "--bootstrap must be at most 10000")  # bench opens with a blank line
    assert not out.exists()


def test_cause3_zoo_show_refuses_a_card_too_large_to_render(tmp_path):
    folder = tmp_path / "z"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(ZOO))
    (folder / "README.md").write_text("# card\n" + "word " * 200_000)  # 1 MB
    one_line_stderr(*cli("zoo", "show", folder)[::2], "model card", "more than the 262,144")
    (folder / "README.md").write_bytes(b"# card \xff in Latin-1\n")  # read as text: shown with a replacement mark
    code, stdout, _ = cli("zoo", "show", folder)
    assert code == 0 and "card" in stdout and "\ufffd" in stdout


def test_cause3_a_prompt_longer_than_the_base_takes_is_refused_before_sampling(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("seven " * 200_000 + "\n")  # one line of 1.2 MB
    out = tmp_path / "g.png"
    one_line_stderr(
        *cli("generate", "--model", "dimoo-digits", "--prompts", prompts, "--out", out, "--device", "cpu")[::2],
        "prompt 1 is",
        "more than the 4,096 dimoo-digits takes",
    )
    assert not out.exists()


def test_cause3_a_class_range_too_large_to_hold_is_refused(tmp_path):
    out = tmp_path / "g.png"
    one_line_stderr(
        *cli("generate", "--classes", "0-100000000000", "--out", out, "--device", "cpu")[::2], "--classes range"
    )
    assert not out.exists()


@pytest.mark.parametrize("value", ["1" * 5000, "1" + "0" * 30])
def test_cause3_arch_sizes_of_any_length_are_one_line(datasets, tmp_path, value):
    out = tmp_path / "z"
    args = ["train", "--data", datasets["zarr"], "--out", out, "--steps", 2, "--device", "cpu", "-q"]
    one_line_stderr(*cli(*args, "-a", f"blocks={value}")[::2], "blocks")
    assert not out.exists()


# ---- cause 4: a full disk while saving is one line; the last checkpoint stays whole ---------------

# What safetensors raises on a full filesystem (measured on a 64 KB tmpfs, safetensors 0.8).
ENOSPC = "Error while serializing: I/O error: No space left on device (os error 28)"
TRAIN = [
    "--steps",
    4,
    "--batch-size",
    16,
    "--save-every",
    2,
    "--val-fraction",
    0.25,
    "--warmup",
    1,
    "--device",
    "cpu",
    "-q",
]


def disk_full_after(monkeypatch, writes: int) -> None:
    """safetensors' writer fails like a full disk after `writes` more files."""
    import safetensors.torch
    from safetensors import SafetensorError

    real, count = safetensors.torch.serialize_file, [0]

    def serialize_file(*args, **kwargs):
        count[0] += 1
        if count[0] > writes:
            raise SafetensorError(ENOSPC)
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "serialize_file", serialize_file)


def digests(folder) -> dict:
    return {p.name: sha256_path(p) for p in sorted(folder.iterdir())}


def test_cause4_disk_full_during_a_checkpoint_or_export_keeps_the_last_checkpoint_and_resume_continues(
    datasets, tmp_path, monkeypatch
):
    data, out, straight = datasets["zarr"], tmp_path / "z", tmp_path / "straight"
    assert cli("train", "--data", data, "--out", straight, *TRAIN)[0] == 0
    assert cli("train", "--data", data, "--out", out, *TRAIN, "--stop-at", 2)[0] == 0
    before = digests(out / "checkpoint")

    disk_full_after(monkeypatch, 1)  # the step-4 save writes its RNG state, then the disk is full
    code, _, stderr = cli("train", "--data", data, "--out", out, *TRAIN, "--resume")
    one_line_stderr(code, stderr, "cannot write checkpoint", "checkpoint.partial", "No space left on device", "is kept")
    assert digests(out / "checkpoint") == before and sorted(p.name for p in out.iterdir()) == ["checkpoint"]

    monkeypatch.undo()
    disk_full_after(monkeypatch, 4)  # the step-4 checkpoint is written whole; the zoo export then fails
    code, _, stderr = cli("train", "--data", data, "--out", out, *TRAIN, "--resume")
    one_line_stderr(code, stderr, f"cannot write zoo folder {out}", "No space left on device")
    assert not (out / "config.json").exists()

    monkeypatch.undo()  # space again: the rerun continues from the step-4 checkpoint and exports
    code, _, stderr = cli("train", "--data", data, "--out", out, *TRAIN, "--resume")
    assert code == 0, stderr
    from safetensors.torch import load_file

    a, b = load_file(str(out / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # as if never interrupted


# ---- cause 5: no output is written among a dataset's or a zoo folder's own files --------------------


def test_cause5_outputs_inside_a_dataset_or_zoo_folder_are_refused(datasets, tmp_path):
    ds = copy(datasets["zarr"], tmp_path / "ds")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "config.json").write_text(json.dumps(ZOO))
    (zoo / "model.safetensors").write_bytes(b"")
    (tmp_path / "link").symlink_to(ds / "shards")
    before = {p: p.stat().st_mtime_ns for p in [*ds.rglob("*"), *zoo.rglob("*")]}
    shard = ds / "shards" / "shard-00000.zarr"
    for args, where in [
        (["inspect", ds, "--plot", shard / "x.png"], "the dataset"),
        (["inspect", ds, "--plot", ds / "x.png"], "the dataset"),
        (["inspect", ds, "--plot", tmp_path / "link" / "x.png"], "the dataset"),
        (["generate", "--out", zoo / "grid.png", "--device", "cpu"], "the zoo folder"),
        (["dump-trajectories", "--out", ds / "shards" / "more", "--num-samples", 2, "-q"], "the dataset"),
        (["train", "--data", ds, "--out", ds / "z", "--steps", 2, "--device", "cpu", "-q"], "the dataset"),
        (["bench", "--configs", "N4", "--predictors", "cache", "--samples", 4, "--out", ds], "the dataset"),
    ]:
        code, _, stderr = cli(*args)
        one_line_stderr(code, stderr.lstrip("\n"), "lies inside", where)
    assert {p: p.stat().st_mtime_ns for p in [*ds.rglob("*"), *zoo.rglob("*")]} == before
    assert verify_dataset(ds)["ok"]
    code, _, stderr = cli("inspect", ds, "--plot", tmp_path / "plots" / "x.png")  # beside it: fine
    assert code == 0 and (tmp_path / "plots" / "x.png").is_file(), stderr


# ---- cause 6: bad numbers are refused where options are checked, and broken weights nowhere pass ----


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--grad-clip", "nan", "--grad-clip must be a finite number"),
        ("--kl-weight", "nan", "--kl-weight must be a finite number"),
        ("--warmup", str(10**20), "--warmup must be at most"),
        ("--weight-decay", "nan", "--weight-decay must be a finite number"),
        ("--weight-decay", "-1", "--weight-decay must be at least 0"),
        ("--lr", "nan", "--lr must be a finite number"),
        ("--ema", "nan", "--ema must be a finite number"),
        ("--mse-weight", "inf", "--mse-weight must be a finite number"),
        ("--kl-temperature", "nan", "--kl-temperature must be a finite number"),
        ("--lr-decay-step", str(10**20), "--lr-decay-step must be at most"),
    ],
)
def test_cause6_non_finite_or_absurd_training_numbers_are_refused_before_any_work(
    datasets, tmp_path, option, value, message
):
    out = tmp_path / "z"
    args = ["train", "--data", datasets["zarr"], "--out", out, "--steps", 2, "--device", "cpu", "-q"]
    one_line_stderr(*cli(*args, option, value)[::2], message)
    assert not out.exists()


@pytest.fixture
def published(tmp_path):
    """A published-layout MaskGIT shortcut for the digits base, random weights (torch file)."""
    import torch
    from conftest import published_shortcut_layout

    g = torch.Generator().manual_seed(0)
    layout = published_shortcut_layout(D=DIGITS.D, H=DIGITS.D // 2, blocks=1, time_hidden=30)
    return {k: 0.05 * torch.randn(shape, generator=g) for k, shape in layout.items()}


def zoo_import(state, tmp_path, out):
    import torch

    torch.save(state, tmp_path / "sc.pth")
    return cli("zoo", "import", "--published", tmp_path / "sc.pth", "--out", out, "--base", "maskgit-digits")


def test_cause6_a_published_shortcut_with_nan_weights_is_refused_on_import(published, tmp_path):
    key = next(iter(published))
    published[key][0] = float("nan")
    one_line_stderr(*zoo_import(published, tmp_path, tmp_path / "z")[::2], "NaN or infinite", key)
    assert not (tmp_path / "z").exists()


def test_cause6_push_refuses_a_zoo_folder_with_nan_weights_or_a_lying_header(published, tmp_path):
    import struct

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "z"
    assert zoo_import(published, tmp_path, folder)[0] == 0
    assert cli("push", folder, "--repo-id", "me/sc", "--dry-run")[0] == 0
    weights = folder / "model.safetensors"
    good = weights.read_bytes()

    state = load_file(str(weights))
    state[next(iter(state))][0] = torch.inf
    save_file(state, str(weights))
    one_line_stderr(*cli("push", folder, "--repo-id", "me/sc", "--dry-run")[::2], "NaN or infinite")

    n = struct.unpack("<Q", good[:8])[0]  # a header whose first tensor's offsets run past the data
    header = json.loads(good[8 : 8 + n])
    first = next(k for k in header if k != "__metadata__")
    header[first]["data_offsets"][1] += 4
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + good[8 + n :])
    one_line_stderr(*cli("push", folder, "--repo-id", "me/sc", "--dry-run")[::2], "not a safetensors file")


def test_cause6_a_zoo_folder_path_that_is_not_utf8_gets_a_utf8_card(published, tmp_path):
    import os

    out = tmp_path / os.fsdecode(b"sc-\xff")
    code, _, stderr = zoo_import(published, tmp_path, out)
    assert code == 0, stderr
    card = (out / "README.md").read_bytes().decode("utf-8")  # valid UTF-8, the odd byte shown escaped
    assert "sc-\\udcff" in card
