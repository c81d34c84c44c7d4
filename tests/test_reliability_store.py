"""Issue 16, dataset side: nothing lost, nothing run, nothing silently wrong. One test (or a few)
per numbered item, each named after it."""

import errno
import json
import os
import shutil

import numpy as np
import pytest
from helpers import one_line_error
from typer.testing import CliRunner

from migm.cli.main import app
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import PENDING, DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError
from migm.trajectories.pairs import PairStream, pair_loader
from migm.trajectories.rollout import SamplerConfig
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.verify import verify_dataset

runner = CliRunner()
DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
SMALL = dict(num_samples=6, steps=3, shard_size=2, batch_size=2, seed=5)  # 3 shards of 4 rows
CLI_SMALL = ["--num-samples", "4", "--steps", "3", "--shard-size", "2", "--quiet"]


def dump(out, overwrite=False, **kw):
    return dump_trajectories(DumpConfig(out=str(out), **{**SMALL, **kw}), DIGITS, overwrite=overwrite)


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    for fmt in ("zarr", "parquet"):
        dump(root / fmt, format=fmt)
    return {fmt: root / fmt for fmt in ("zarr", "parquet")}


def copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def content(path) -> dict:
    ds = open_dataset(path)
    return ds.rows(0, len(ds))


def same(a, b) -> bool:
    ra, rb = content(a), content(b)
    return ra.keys() == rb.keys() and all(np.array_equal(ra[k], rb[k]) for k in ra)


def manifest(path) -> dict:
    return json.loads((path / "dataset.json").read_text())


def files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ---- item 2: --overwrite removes only what the dump wrote ----------------------------------------


def test_overwrite_keeps_user_files(tmp_path):
    u = tmp_path / "u"
    u.mkdir()
    (u / "thesis.txt").write_text("x")
    r = runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(u), "--overwrite"])
    one_line_error(r, "thesis.txt", "not a migm dataset")
    assert files(u) == ["thesis.txt"] and (u / "thesis.txt").read_text() == "x"


def test_overwrite_replaces_a_dataset_but_refuses_one_holding_other_files(tmp_path, refs):
    ds = copy(refs["zarr"], tmp_path / "ds")
    (ds / "notes.md").write_text("mine")
    (ds / "shards" / "extra.bin").write_bytes(b"mine")
    before = files(ds)
    with pytest.raises(MigmError, match="did not write.*notes.md.*shards/extra.bin"):
        dump(ds, overwrite=True, seed=6)
    assert files(ds) == before  # refused: nothing removed
    (ds / "notes.md").unlink()
    (ds / "shards" / "extra.bin").unlink()
    dump(ds, overwrite=True, seed=6, format="parquet")
    assert open_dataset(ds).manifest.seed == 6 and not (ds / "shards").exists()  # the old shards went, all of them
    assert verify_dataset(ds)["ok"]


def test_overwrite_never_clears_the_current_folder_or_a_link(tmp_path, refs, monkeypatch):
    ds = copy(refs["zarr"], tmp_path / "ds")
    before = files(ds)
    monkeypatch.chdir(ds)
    r = runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", ".", "--overwrite"])
    one_line_error(r, "refuses to clear")
    link = tmp_path / "link"
    link.symlink_to(ds)
    r = runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(link), "--overwrite"])
    one_line_error(r, "is a link")
    assert files(ds) == before


# ---- item 3: a missing Zarr chunk is damage, named with the shard --------------------------------


@pytest.mark.parametrize("field", ["features", "tokens"])
def test_missing_zarr_chunk_is_named_by_inspect_and_train(tmp_path, refs, field):
    ds = copy(refs["zarr"], tmp_path / "ds")
    chunk = ds / "shards" / "shard-00001.zarr" / field / "c" / "0" / "0"
    chunk = next(p for p in sorted(chunk.parent.rglob("*")) if p.is_file()) if not chunk.is_file() else chunk
    chunk.unlink()
    r = runner.invoke(app, ["inspect", str(ds), "--json"])
    one_line_error(r, "shards/shard-00001.zarr", "missing chunks")
    with pytest.raises(MigmError, match="shard-00001.zarr.*missing chunks"):
        PairStream(ds, batch_size=4)
    one_line_error(runner.invoke(app, ["verify", str(ds)]), "shard-00001.zarr")


# ---- item 4: verify reads every row; reruns and readers check shards before trusting them --------


def test_verify_reads_every_row(tmp_path, refs):
    """A shard whose last row is wrong (and whose checksum was recomputed, as an old rerun did) fails."""
    import zarr

    from migm.trajectories.store.schema import sha256_path

    ds = copy(refs["zarr"], tmp_path / "ds")
    shard = ds / "shards" / "shard-00001.zarr"
    zarr.open_group(str(shard), mode="r+")["sample_id"][3] = 0
    m = manifest(ds)
    m["shards"][1]["sha256"] = sha256_path(shard)
    (ds / "dataset.json").write_text(json.dumps(m))
    report = verify_dataset(ds)
    assert not report["ok"] and [s["name"] for s in report["shards"] if not s["ok"]] == ["shards/shard-00001.zarr"]
    assert "rows 0-3" in report["shards"][1]["problem"]


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_rerun_of_a_finished_dump_rebuilds_a_deleted_shard(tmp_path, refs, fmt):
    ds = copy(refs[fmt], tmp_path / "ds")
    victim = ds / manifest(ds)["shards"][1]["name"]
    shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    dump(ds, format=fmt)
    assert verify_dataset(ds)["ok"] and same(ds, refs[fmt])
    assert not list(ds.rglob("*.sha256")) and not (ds / PENDING).exists()


def test_rerun_rechecks_kept_shards_of_an_unfinished_dump(tmp_path, refs, monkeypatch):
    """A dump killed after its first shard, whose kept shard is then damaged: the rerun rebuilds it."""
    import migm.trajectories.dump as dump_module

    ds = tmp_path / "ds"
    real, calls = dump_module.rollout, []

    def dies_on_second_shard(*args, **kw):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(dump_module, "rollout", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        dump(ds)
    monkeypatch.setattr(dump_module, "rollout", real)
    kept = ds / "shards" / "shard-00000.zarr"
    assert kept.is_dir() and not (ds / "dataset.json").exists()
    chunk = next(p for p in sorted((kept / "features").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.unlink()  # the kept shard is damaged between the runs
    dump(ds)
    assert verify_dataset(ds)["ok"] and same(ds, refs["zarr"])


def test_readers_check_checksums_once_before_use(tmp_path, refs, monkeypatch):
    import zarr

    import migm.trajectories.store.dataset as dataset_module

    ds = copy(refs["zarr"], tmp_path / "ds")
    zarr.open_group(str(ds / "shards" / "shard-00002.zarr"), mode="r+")["features"][0, 0, 0, 0] = (
        7.0  # valid bytes, not the dumped ones
    )
    with pytest.raises(MigmError, match="shard-00002.zarr.*checksum mismatch"):
        open_dataset(ds).rows(0, 12)
    with pytest.raises(MigmError, match="shard-00002.zarr.*checksum mismatch"):
        PairStream(ds)
    r = runner.invoke(app, ["inspect", str(ds)])
    one_line_error(r, "checksum mismatch")

    # a whole dataset: each shard hashed once per open, however many batches and epochs are read
    hashed = []
    real = dataset_module.sha256_path
    monkeypatch.setattr(dataset_module, "sha256_path", lambda p: hashed.append(p.name) or real(p))
    stream = PairStream(refs["zarr"], batch_size=4, block_rows=2)
    for epoch in range(2):
        stream.set_epoch(epoch)
        assert sum(len(b["step"]) for b in pair_loader(stream)) == 12 * 2
    assert sorted(hashed) == ["shard-00000.zarr", "shard-00001.zarr", "shard-00002.zarr"]


# ---- item 5: one manifest validator ---------------------------------------------------------------


def _edit(m: dict, how: str):
    if how == "list":
        return [m]
    if how == "traversal":
        m["shards"][0]["name"] = "../outside.zarr"
    elif how == "absolute":
        m["shards"][0]["name"] = "/etc/passwd"
    elif how == "duplicate":
        m["shards"][1] = dict(m["shards"][0])
    elif how == "empty":
        m["shards"] = []
    elif how == "negative rows":
        m["shards"][0]["rows"] = -4
    elif how == "missing sha256":
        del m["shards"][0]["sha256"]
    elif how == "extra dims key":
        m["dims"]["X"] = 1
    elif how == "rows vs samples":
        m["num_samples"] = 5
    return m


@pytest.mark.parametrize(
    "how, message",
    [
        ("list", "must be a JSON object"),
        ("traversal", "not a plain name inside"),
        ("absolute", "not a plain name inside"),
        ("duplicate", "listed twice"),
        ("empty", "lists no shards"),
        ("negative rows", "must not be negative"),
        ("missing sha256", "missing key(s) 'sha256'"),
        ("extra dims key", "unknown key(s) 'X' in dims"),
        ("rows vs samples", "has 4 rows; its 1 samples"),
        ("garbage", "is not valid JSON"),
    ],
)
def test_bad_manifests_are_one_line_errors(tmp_path, refs, how, message):
    ds = copy(refs["zarr"], tmp_path / "ds")
    text = "{not json" if how == "garbage" else json.dumps(_edit(manifest(ds), how))
    (ds / "dataset.json").write_text(text)
    for cmd in (["verify", str(ds)], ["inspect", str(ds)], ["push", str(ds), "--repo-id", "a/b", "--dry-run"]):
        one_line_error(runner.invoke(app, cmd), "dataset.json", message)
    with pytest.raises(MigmError, match="dataset.json"):
        PairStream(ds)


def test_a_shard_that_links_out_of_the_folder_is_refused(tmp_path, refs):
    ds = copy(refs["zarr"], tmp_path / "ds")
    outside = tmp_path / "outside.zarr"
    shutil.move(ds / "shards" / "shard-00000.zarr", outside)
    (ds / "shards" / "shard-00000.zarr").symlink_to(outside)
    r = runner.invoke(app, ["verify", str(ds), "--json"])
    assert r.exit_code == 2 and "shard-00000.zarr" in r.stderr
    assert "is a link" in json.loads(r.stdout)["shards"][0]["problem"]
    one_line_error(runner.invoke(app, ["push", str(ds), "--repo-id", "a/b", "--dry-run"]), "shard-00000.zarr")
    with pytest.raises(MigmError, match="is a link"):
        open_dataset(ds).rows(0, 1)


# ---- item 7: NaN / inf / negative sampler settings ------------------------------------------------


@pytest.mark.parametrize(
    "option, value", [("--guidance", "nan"), ("--r-temp", "inf"), ("--sm-temp", "-1"), ("--guidance", "-2")]
)
def test_non_finite_or_negative_sampler_settings_are_refused(tmp_path, option, value):
    out = tmp_path / "ds"
    r = runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(out), option, value])
    one_line_error(r, option.lstrip("-"))
    assert not out.exists()


def test_sampler_config_is_validated_wherever_it_is_made(tmp_path, refs):
    for bad in (
        dict(guidance=float("nan")),
        dict(r_temp=float("inf")),
        dict(sm_temp=-1.0),
        dict(steps=0),
        dict(budget=0),
    ):
        with pytest.raises(MigmError):
            SamplerConfig(**bad)
    ds = copy(refs["zarr"], tmp_path / "ds")
    m = manifest(ds)
    m["sampler"]["guidance"] = float("nan")
    (ds / "dataset.json").write_text(json.dumps(m))  # json writes NaN, which Python reads back
    one_line_error(runner.invoke(app, ["verify", str(ds)]), "sampler", "guidance")


# ---- item 8: user-supplied names are printed as inert plain text ----------------------------------


def test_escape_sequences_and_markup_in_names_are_inert(tmp_path, refs):
    name = "ds[/bold]\x1b[2J"
    ds = copy(refs["zarr"], tmp_path / name)
    r = runner.invoke(app, ["verify", str(ds)])
    assert r.exit_code == 0 and "\x1b" not in r.output
    r = runner.invoke(app, ["inspect", str(ds)])
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "[/bold]" in r.stdout and "\\x1b" in r.stdout
    m = manifest(ds)
    m["shards"][0]["name"] = "shards/\x1b[31mred[/bold].zarr"
    (ds / "dataset.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["verify", str(ds)])
    one_line_error(r, "\\x1b[31mred[/bold]")
    assert "\x1b" not in r.output
    (ds / "dataset.json").write_text("{broken")  # an error message that quotes the folder's path
    r = runner.invoke(app, ["inspect", str(ds)])
    one_line_error(r, "not valid JSON", "[/bold]\\x1b[2J")
    assert "\x1b" not in r.output


# ---- item 9: push uploads exactly the manifest's files --------------------------------------------


def test_push_lists_only_manifest_files_and_no_links(tmp_path, refs):
    ds = copy(refs["parquet"], tmp_path / "ds")
    secret = tmp_path / "credentials"
    secret.write_text("token")
    (ds / "notes.txt").write_text("not for the Hub")
    (ds / "data" / "creds").symlink_to(secret)
    r = runner.invoke(app, ["push", str(ds), "--repo-id", "someone/digits", "--dry-run"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()[1:]
    listed = [line.strip() for line in lines[: next(i for i, line in enumerate(lines) if not line.startswith("  "))]]
    expected = ["dataset.json", "README.md"] + [s["name"] for s in manifest(ds)["shards"]]
    assert listed == expected and "(private)" in r.stdout
    r = runner.invoke(app, ["push", str(ds), "--repo-id", "someone/digits", "--dry-run", "--public"])
    assert r.exit_code == 0 and "(public)" in r.stdout
    (ds / "README.md").unlink()
    (ds / "README.md").symlink_to(secret)
    one_line_error(runner.invoke(app, ["push", str(ds), "--repo-id", "someone/digits", "--dry-run"]), "link")


def test_zarr_push_lists_every_file_of_each_shard(tmp_path, refs):
    from migm.trajectories.store.hub import push_dataset

    ds = copy(refs["zarr"], tmp_path / "ds")
    (ds / "shards" / "stray.txt").write_text("x")
    result = push_dataset(ds, "someone/digits", dry_run=True)
    shard_files = sorted(
        str(p.relative_to(ds)) for p in (ds / "shards").rglob("*") if p.is_file() and ".zarr/" in str(p)
    )
    assert result["files"] == ["dataset.json", "README.md", *shard_files] and result["private"]


@pytest.mark.parametrize("repo_id", ["user/na me", "user/..", "u/" + "a" * 200, "no-slash"])
def test_repo_ids_the_hub_rejects_are_refused(refs, repo_id):
    one_line_error(runner.invoke(app, ["push", str(refs["zarr"]), "--repo-id", repo_id, "--dry-run"]), "repo id")


# ---- item 10: one-line errors instead of tracebacks; a rerun continues ----------------------------


@pytest.mark.parametrize(
    "args, message",
    [(["--seed", "-1"], "--seed must be at least 0"), (["--batch-size", "0"], "batch-size must be at least 1")],
)
def test_bad_sizes_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "ds"
    one_line_error(runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(out), *args]), message)
    assert not out.exists()


def test_out_that_is_a_file_is_a_one_line_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    one_line_error(runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(f)]), "is a file")
    one_line_error(runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(f / "ds")]), "is a file")
    assert f.read_text() == "mine"


def test_missing_parent_folders_are_created(tmp_path):
    out = tmp_path / "a" / "b" / "ds"
    r = runner.invoke(app, ["dump-trajectories", *CLI_SMALL, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert verify_dataset(out)["ok"]


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_disk_full_while_writing_is_one_line_and_a_rerun_continues(tmp_path, refs, monkeypatch, fmt, code):
    import pyarrow.parquet as pq
    import zarr.storage._local as zarr_local

    def fail(path):
        if "00001" in str(path):  # the second shard: the first is whole by then
            raise OSError(code, os.strerror(code))

    if fmt == "zarr":
        real = zarr_local._put
        monkeypatch.setattr(zarr_local, "_put", lambda path, *a, **kw: fail(path) or real(path, *a, **kw))
    else:
        real = pq.ParquetWriter.write_table
        monkeypatch.setattr(
            pq.ParquetWriter, "write_table", lambda self, *a, **kw: fail(self.where) or real(self, *a, **kw)
        )
    ds = tmp_path / "ds"
    r = runner.invoke(
        app,
        [
            "dump-trajectories",
            "--out",
            str(ds),
            "--format",
            fmt,
            "--quiet",
            *[x for k, v in SMALL.items() for x in (f"--{k.replace('_', '-')}", str(v))],
        ],
    )
    one_line_error(r, "cannot write shard", "00001", os.strerror(code))
    assert not [p for p in ds.rglob("*") if ".tmp-" in p.name]  # no partial shard left
    monkeypatch.undo()
    r = runner.invoke(
        app,
        [
            "dump-trajectories",
            "--out",
            str(ds),
            "--format",
            fmt,
            "--quiet",
            *[x for k, v in SMALL.items() for x in (f"--{k.replace('_', '-')}", str(v))],
        ],
    )
    assert r.exit_code == 0, r.output
    assert verify_dataset(ds)["ok"] and same(ds, refs[fmt])


def test_inspect_never_writes_into_the_dataset(tmp_path, refs):
    ds = copy(refs["zarr"], tmp_path / "ds")
    before = files(ds)
    r = runner.invoke(app, ["inspect", str(ds), "--json"])
    assert r.exit_code == 0 and files(ds) == before
    os.unlink(json.loads(r.stdout)["plot"])
    plot = tmp_path / "missing" / "folder" / "s.png"
    r = runner.invoke(app, ["inspect", str(ds), "--plot", str(plot)])
    assert r.exit_code == 0 and plot.stat().st_size > 1000
    one_line_error(runner.invoke(app, ["inspect", str(ds), "--plot", str(tmp_path / "s.txt")]), "--plot", ".png")


# ---- item 11: silently accepted no more --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_manifest_dims_that_disagree_with_the_shards_are_caught(tmp_path, refs, fmt):
    ds = copy(refs[fmt], tmp_path / "ds")
    m = manifest(ds)
    m["dims"]["D"] = 32
    (ds / "dataset.json").write_text(json.dumps(m))
    r = runner.invoke(app, ["verify", str(ds), "--json"])
    assert r.exit_code == 2 and "manifest" in json.loads(r.stdout)["shards"][0]["problem"]
    one_line_error(runner.invoke(app, ["inspect", str(ds)]), "manifest")
    with pytest.raises(MigmError, match="manifest"):
        PairStream(ds)


def test_a_failed_dump_leaves_no_state_that_refuses_the_next_run(tmp_path, monkeypatch):
    import migm.trajectories.dump as dump_module

    def broken(*args, **kw):
        raise MigmError("the base failed")

    ds = tmp_path / "ds"
    monkeypatch.setattr(dump_module, "rollout", broken)
    with pytest.raises(MigmError, match="the base failed"):
        dump(ds, num_samples=2)
    monkeypatch.undo()
    assert not ds.exists()  # the failed run made the folder and leaves nothing, not even its state file
    dump(ds, num_samples=2, seed=9)  # another config, no --overwrite: nothing of the failed run to keep
    assert open_dataset(ds).manifest.seed == 9

    # a state file left by a killed run that committed nothing does not refuse another config either
    other = tmp_path / "other"
    other.mkdir()
    (other / PENDING).write_text(json.dumps(open_dataset(ds).manifest.plan_dict()))
    dump(other, num_samples=2, seed=1)
    assert open_dataset(other).manifest.seed == 1
