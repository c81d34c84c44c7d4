"""CLI wiring of the dataset commands: dump-trajectories, verify, inspect, push --dry-run."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migm.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "ds"
    args = [
        "dump-trajectories",
        "--out",
        str(out),
        "--num-samples",
        "6",
        "--steps",
        "4",
        "--shard-size",
        "4",
        "--format",
        "parquet",
        "--codec",
        "quant:bits=6",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 12 and summary["shards"] == 2 and summary["codec"] == "quant"
    return out


def test_verify_and_inspect(dataset):
    ok = runner.invoke(app, ["verify", str(dataset)])
    assert ok.exit_code == 0 and "ok" in ok.stdout
    info = runner.invoke(app, ["inspect", str(dataset), "--json"])
    assert info.exit_code == 0
    info = json.loads(info.stdout)
    assert info["rows"] == 12 and info["codec"] == "quant:bits=6"
    # the plot goes to a temporary file by default: inspect never writes into the dataset
    assert Path(info["plot"]).stat().st_size > 1000 and not (dataset / "smoothness.png").exists()
    Path(info["plot"]).unlink()


def test_push_dry_run_shows_files_and_card(dataset):
    result = runner.invoke(app, ["push", str(dataset), "--repo-id", "someone/digits-n4", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would upload" in result.stdout and "data/train-00000-of-00002.parquet" in result.stdout
    assert "dataset.json" in result.stdout and "configs:" in result.stdout


def test_push_refuses_a_bad_repo_id(dataset):
    result = runner.invoke(app, ["push", str(dataset), "--repo-id", "no-slash", "--dry-run"])
    assert result.exit_code == 2 and result.stderr.startswith("error: repo id must look like")


@pytest.mark.parametrize("cmd", ["verify", "inspect"])
def test_not_a_dataset_is_a_short_error(tmp_path, cmd):
    missing = runner.invoke(app, [cmd, str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ") and "not a dataset folder" in missing.stderr
    empty = runner.invoke(app, [cmd, str(tmp_path)])
    assert empty.exit_code == 2 and "no dataset.json" in empty.stderr


def test_wrong_schema_version_is_a_short_error(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    m = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps({**m, "schema_version": 0}))
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 2 and "schema version 0 is not supported" in result.stderr


def test_verify_exits_2_naming_the_bad_shard(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    shard = copy / "data" / "train-00001-of-00002.parquet"
    shard.write_bytes(shard.read_bytes()[:-100])
    result = runner.invoke(app, ["verify", str(copy)])
    assert result.exit_code == 2 and "train-00001-of-00002.parquet" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "tar"], "format must be one of zarr, parquet"),
        (["--codec", "gzip"], "unknown codec 'gzip'"),
        (["--steps", "0"], "steps must be between 1 and 64"),
        (["--num-samples", "0"], "num-samples must be at least 1"),
        (["--model", "nope"], "unknown model"),
    ],
)
def test_bad_dump_input_is_a_short_error(tmp_path, args, message):
    out = tmp_path / "ds"
    result = runner.invoke(app, ["dump-trajectories", "--out", str(out), "--num-samples", "2", *args])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert not out.exists()


def test_dump_into_a_foreign_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "notes.txt").write_text("mine")
    result = runner.invoke(
        app, ["dump-trajectories", "--out", str(tmp_path / "ds"), "--num-samples", "2", "--steps", "2"]
    )
    assert result.exit_code == 2 and "not a migm dataset" in result.stderr
    assert (tmp_path / "ds" / "notes.txt").read_text() == "mine"
