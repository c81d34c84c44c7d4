"""Issue 30: untrusted data, bounded work. One test (or a few) per numbered cause, named after the
behaviour it guards: a hostile file or an absurd number is one `error:` line and exit 2, never a
traceback, and nothing already written is damaged."""

import json
import shutil

import numpy as np
import pytest
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


def one_line_error(code, stderr, *fragments):
    assert code == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, (code, stderr)
    assert "Traceback" not in stderr
    for f in fragments:
        assert f in stderr, (f, stderr)


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
    one_line_error(
        *cli("train", "--data", ds, "--out", out, "--steps", 2, "--device", "cpu", "-q")[::2], name, "row 2", message
    )
    assert sorted(p.name for p in ds.rglob("*")) == before and not (out / "config.json").exists()
