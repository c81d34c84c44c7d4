"""Datasets on an object store: a real S3-protocol server on localhost (moto's ThreadedMotoServer),
reached through s3fs exactly as a cloud bucket would be. Nothing of ours is mocked.

The store's copy of a dataset must equal a local folder's byte for byte (same shard sha256), train
the same weights with the same seed, and survive kills, damage and foreign objects as a folder does."""

import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from migm.cli.main import app

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

runner = CliRunner()
SMALL = ["--num-samples", "6", "--steps", "4", "--shard-size", "2", "--batch-size", "2", "--seed", "5", "--quiet"]
TRAIN = ["--steps", "3", "--batch-size", "8", "--warmup", "1", "--val-fraction", "0.2", "--quiet", "--json"]
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A local S3 server with one bucket; fake credentials in the environment (subprocesses inherit them)."""
    import s3fs

    patch = pytest.MonkeyPatch()
    for key, value in FAKE_AWS.items():
        patch.setenv(key, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir("bucket")
    yield SimpleNamespace(endpoint=endpoint, fs=fs, opt=["--storage-option", f"endpoint_url={endpoint}"])
    server.stop()
    patch.undo()


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def one_line_error(result, *fragments) -> str:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in result.stderr, (f, result.stderr)
    return result.stderr


def shard_shas(manifest: dict) -> list[tuple[str, str]]:
    return [(s["name"], s["sha256"]) for s in manifest["shards"]]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_manifest(s3, prefix: str) -> dict:
    return json.loads(s3.fs.cat(f"bucket/{prefix}/dataset.json"))


@pytest.mark.parametrize(
    "fmt, codec, cache, workers",
    [("zarr", "lossless", "2GB", 0), ("parquet", "lossless", "0", 0), ("zarr", "delta", "tight", 2)],
)
def test_dump_verify_inspect_train_sample_at_s3_equal_a_local_folder(tmp_path, s3, fmt, codec, cache, workers):
    local, url = tmp_path / "local", f"s3://bucket/round-{fmt}-{codec}"
    dump = ["dump-trajectories", *SMALL, "--format", fmt, "--codec", codec]
    ok(runner.invoke(app, [*dump, "--out", str(local)]))
    ok(runner.invoke(app, [*dump, "--out", url, *s3.opt]))
    want = json.loads((local / "dataset.json").read_text())
    got = store_manifest(s3, url[len("s3://bucket/") :])
    assert got == want  # the same shards, byte for byte (sha256), and the same manifest

    report = json.loads(ok(runner.invoke(app, ["verify", url, "--json", *s3.opt])).stdout)
    assert report["ok"] and [s["name"] for s in report["shards"]] == [s["name"] for s in want["shards"]]
    info = {k: v for k, v in json.loads(ok(runner.invoke(app, ["inspect", url, "--json", *s3.opt])).stdout).items()}
    info_local = json.loads(ok(runner.invoke(app, ["inspect", str(local), "--json"])).stdout)
    for key in ("rows", "bytes", "smoothness", "codec"):
        assert info[key] == info_local[key], key

    if cache == "tight":  # room for the shard being read and one ahead only: shards are evicted and fetched again
        cache = str(2 * max(s["bytes"] for s in want["shards"]))
    zoo_local, zoo_s3 = tmp_path / "zoo-local", tmp_path / "zoo-s3"
    train = [*TRAIN, "--workers", str(workers)]
    ok(runner.invoke(app, ["train", "--data", str(local), *train, "--out", str(zoo_local)]))
    cache_dir = tmp_path / "cache"
    s3_train = ["train", "--data", url, *s3.opt, *train, "--out", str(zoo_s3), "--cache-size", cache]
    ok(runner.invoke(app, [*s3_train, "--cache-dir", str(cache_dir)]))
    assert sha(zoo_s3 / "model.safetensors") == sha(zoo_local / "model.safetensors")
    if workers:  # both workers removed their cache folders when they ended; this process's (validation) goes at exit
        assert len(list(cache_dir.iterdir())) == 1
    assert "endpoint_url" not in (zoo_s3 / "config.json").read_text()  # storage options are not recorded

    sample = ["sample", "--model", "maskgit-digits", "--steps", "4", "--budget", "2", "--classes", "0-1"]
    sample += ["--per-class", "2", "--seed", "1", "--device", "cpu", "--json"]
    ok(runner.invoke(app, [*sample, "--shortcut", str(zoo_local), "--out", str(tmp_path / "a.png")]))
    ok(runner.invoke(app, [*sample, "--shortcut", str(zoo_s3), "--out", str(tmp_path / "b.png")]))
    assert sha(tmp_path / "a.png") == sha(tmp_path / "b.png")


def test_datasets_load_dataset_reads_the_parquet_set_from_the_server(tmp_path, s3):
    import datasets

    url = "s3://bucket/hf-parquet"
    ok(runner.invoke(app, ["dump-trajectories", *SMALL, "--format", "parquet", "--out", url, *s3.opt]))
    ds = datasets.load_dataset(
        "parquet",
        data_files=f"{url}/data/*.parquet",
        storage_options={"endpoint_url": s3.endpoint},
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    from migm.trajectories.store.dataset import open_dataset

    ours = open_dataset(url, storage_options={"endpoint_url": s3.endpoint})
    rows = ours.rows(0, len(ours))
    assert len(ds) == len(ours) == 12
    hf = ds.with_format("numpy", dtype=None)
    assert np.array_equal(hf["sample_id"][:], rows["sample_id"])
    for i in (0, 7, 11):
        assert hf[i]["features"].dtype == np.float16 and np.array_equal(hf[i]["features"], rows["features"][i])


def test_a_damaged_or_deleted_shard_object_is_named_by_verify_and_refused_by_train(tmp_path, s3):
    url = "s3://bucket/damage"
    ok(runner.invoke(app, ["dump-trajectories", *SMALL, "--format", "parquet", "--out", url, *s3.opt]))
    names = [s["name"] for s in store_manifest(s3, "damage")["shards"]]
    body = bytearray(s3.fs.cat(f"bucket/damage/{names[1]}"))
    body[len(body) // 2] ^= 0xFF
    s3.fs.pipe_file(f"bucket/damage/{names[1]}", bytes(body))  # one flipped byte
    s3.fs.rm(f"bucket/damage/{names[2]}")

    result = runner.invoke(app, ["verify", url, *s3.opt])
    one_line_error(result, "2 bad shard(s)", names[1], names[2])
    assert "checksum mismatch" in result.stdout and "missing" in result.stdout

    for cache in ("2GB", "0"):
        result = runner.invoke(app, ["train", "--data", url, *s3.opt, *TRAIN, "--out", str(tmp_path / cache)])
        one_line_error(result, names[2])  # named before any batch: the missing one
    s3.fs.copy(f"bucket/damage/{names[0]}", f"bucket/damage/{names[2]}")  # present again, but not its bytes
    for cache in ("2GB", "0"):
        result = runner.invoke(app, ["train", "--data", url, *s3.opt, *TRAIN, "--out", str(tmp_path / f"b{cache}")])
        one_line_error(result, "damaged", "checksum mismatch")


def test_overwrite_leaves_a_foreign_object_untouched_and_refuses(tmp_path, s3):
    url, prefix = "s3://bucket/foreign", "bucket/foreign"
    ok(runner.invoke(app, ["dump-trajectories", *SMALL, "--out", url, *s3.opt]))
    s3.fs.pipe_file(f"{prefix}/notes.txt", b"mine")
    before = sorted(s3.fs.find(prefix))
    other = [*SMALL[:-3], "--seed", "6", "--quiet"]
    result = runner.invoke(app, ["dump-trajectories", *other, "--out", url, *s3.opt, "--overwrite"])
    one_line_error(result, url, "notes.txt", "did not write")
    assert sorted(s3.fs.find(prefix)) == before and s3.fs.cat(f"{prefix}/notes.txt") == b"mine"
    one_line_error(runner.invoke(app, ["dump-trajectories", *other, "--out", url, *s3.opt]), "--overwrite")

    # a prefix holding only someone else's objects is not a dataset: refused, as a folder is
    s3.fs.pipe_file("bucket/theirs/a.bin", b"x")
    one_line_error(
        runner.invoke(app, ["dump-trajectories", *SMALL, "--out", "s3://bucket/theirs", *s3.opt]),
        "not a migm dataset",
        "a.bin",
    )
    # without the foreign object, --overwrite replaces exactly the dataset's own objects
    s3.fs.rm(f"{prefix}/notes.txt")
    ok(runner.invoke(app, ["dump-trajectories", *other, "--out", url, *s3.opt, "--overwrite"]))
    assert store_manifest(s3, "foreign")["seed"] == 6
    assert ok(runner.invoke(app, ["verify", url, *s3.opt]))


def counted_shards(s3, prefix: str) -> int:
    return sum(k.endswith(".sha256") for k in s3.fs.find(prefix))


def test_sigkill_mid_dump_then_rerun_gives_the_same_dataset(tmp_path, s3):
    args = ["--num-samples", "16", "--steps", "4", "--shard-size", "2", "--batch-size", "2", "--seed", "3", "--quiet"]
    local, url, prefix = tmp_path / "ref", "s3://bucket/killed", "bucket/killed"
    ok(runner.invoke(app, ["dump-trajectories", *args, "--out", str(local)]))
    cmd = [sys.executable, "-m", "migm.cli.main", "dump-trajectories", *args, "--out", url, *s3.opt]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and counted_shards(s3, prefix) < 2:
        s3.fs.invalidate_cache()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    s3.fs.invalidate_cache()
    assert not s3.fs.exists(f"{prefix}/dataset.json"), "the dump finished before it could be killed"
    assert counted_shards(s3, prefix) >= 2

    ok(runner.invoke(app, cmd[3:]))  # the rerun, in this process
    s3.fs.invalidate_cache()
    assert store_manifest(s3, "killed") == json.loads((local / "dataset.json").read_text())
    assert not any(k.endswith((".sha256", ".migm-dump.json")) for k in s3.fs.find(prefix))
    assert ok(runner.invoke(app, ["verify", url, *s3.opt]))


def test_two_rank_torchrun_dump_into_s3_equals_a_one_rank_dump(tmp_path, s3):
    args = ["--num-samples", "8", "--steps", "4", "--shard-size", "2", "--batch-size", "2", "--seed", "2", "--quiet"]
    ok(runner.invoke(app, ["dump-trajectories", *args, "--out", "s3://bucket/one-rank", *s3.opt]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "migm.cli.main", "dump-trajectories", *args, "--device", "cpu", "--out", "s3://bucket/two-ranks"]
    run = subprocess.run([*cmd, *s3.opt], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    s3.fs.invalidate_cache()
    one, two = store_manifest(s3, "one-rank"), store_manifest(s3, "two-ranks")
    assert two["processes"] == 2 and one["processes"] == 1
    assert shard_shas(two) == shard_shas(one)
    assert {k: v for k, v in two.items() if k != "processes"} == {k: v for k, v in one.items() if k != "processes"}


# ---- bad input: one line naming the URL, exit 2, in bounded time ----------------------------------


def bad_location(s3, how: str, monkeypatch) -> tuple[str, list[str]]:
    if how == "unknown protocol":
        return "nope://bucket/set", []
    if how == "unreachable endpoint":
        return "s3://bucket/set", ["--storage-option", f"endpoint_url=http://127.0.0.1:{free_port()}"]
    if how == "missing credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        return "s3://bucket/nocreds", [*s3.opt, "--storage-option", "skip_instance_cache=true"]  # not the cached client
    if how == "missing bucket":
        return "s3://no-such-bucket/set", s3.opt
    # read-only prefix: the bucket's policy denies writes under ro/
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bucket/ro/*"}
        ],
    }
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint).put_bucket_policy(Bucket="bucket", Policy=json.dumps(policy))
    return "s3://bucket/ro/set", s3.opt


@pytest.mark.parametrize(
    "how, says",
    [
        ("unknown protocol", "unknown storage protocol"),
        ("unreachable endpoint", "cannot reach"),
        ("missing credentials", "no credentials"),
        ("missing bucket", "bucket does not exist"),
        ("read-only prefix", "access denied"),
    ],
)
def test_bad_locations_are_one_line_errors_naming_the_url(tmp_path, s3, monkeypatch, how, says):
    url, opt = bad_location(s3, how, monkeypatch)
    start = time.perf_counter()
    result = runner.invoke(app, ["dump-trajectories", *SMALL, "--out", url, *opt])
    one_line_error(result, url, says)
    if how != "read-only prefix":  # reading a read-only prefix is fine
        one_line_error(runner.invoke(app, ["verify", url, *opt]), url)
        one_line_error(runner.invoke(app, ["train", "--data", url, *opt, *TRAIN, "--out", str(tmp_path / "z")]), url)
    assert time.perf_counter() - start < 60  # bounded: short connect timeouts and few retries, no hang


def test_storage_options_must_be_key_value(s3):
    one_line_error(runner.invoke(app, ["verify", "s3://bucket/x", "--storage-option", "endpoint_url"]), "KEY=VALUE")


def test_push_dry_run_of_a_store_dataset_lists_what_a_local_push_lists(tmp_path, s3):
    dump = ["dump-trajectories", *SMALL, "--format", "zarr"]
    ok(runner.invoke(app, [*dump, "--out", str(tmp_path / "local")]))
    ok(runner.invoke(app, [*dump, "--out", "s3://bucket/push", *s3.opt]))
    push = ["push", "--repo-id", "someone/digits", "--dry-run"]
    local = ok(runner.invoke(app, [*push, str(tmp_path / "local")])).stdout
    remote = ok(runner.invoke(app, [*push, "s3://bucket/push", *s3.opt])).stdout
    assert remote == local and "shards/shard-00000.zarr/zarr.json" in remote


def test_the_cache_holds_at_most_its_size_evicting_whole_shards(tmp_path, s3):
    from migm.trajectories.store.cache import CacheConfig
    from migm.trajectories.store.dataset import open_dataset

    url, opts = "s3://bucket/cached", {"endpoint_url": s3.endpoint}
    ok(runner.invoke(app, ["dump-trajectories", *SMALL, "--shard-size", "1", "--out", url, *s3.opt]))  # 6 shards
    sizes = [s["bytes"] for s in store_manifest(s3, "cached")["shards"]]
    one_line_error(
        runner.invoke(app, ["train", "--data", url, *s3.opt, *TRAIN, "--cache-size", str(max(sizes))]),
        "--cache-size",
        "cannot hold",
    )
    size = 2 * max(sizes)  # the shard being read and one ahead
    ds = open_dataset(url, storage_options=opts, cache=CacheConfig(dir=str(tmp_path / "c"), size=size))
    plain = open_dataset(url, storage_options=opts)
    for k in [0, 1, 2, 3, 4, 5, 5, 0]:  # 5 again: read from the cache
        ds.prefetch([k, (k + 1) % 6])  # the read order from here
        a, b = ds.rows(2 * k, 2 * k + 2), plain.rows(2 * k, 2 * k + 2)
        assert all(np.array_equal(a[f], b[f]) for f in a)
        folder = ds.cache.folder
        held = [p for p in folder.iterdir() if not p.name.endswith(".part")]
        assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) <= size
        assert 1 <= len(held) <= 2  # whole shards only: each one a complete Zarr group
        for fetch in list(ds.cache.pending.values()):  # let the read-ahead land: the next read finds it held
            fetch.exception()
