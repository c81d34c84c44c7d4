"""Dumps that crash or run on two ranks end with the same content as one uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.verify import verify_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))

BIN = Path(sys.executable).parent
ARGS = ["--num-samples", "192", "--steps", "12", "--shard-size", "16", "--batch-size", "8", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ds"
    dump_trajectories(DumpConfig(num_samples=192, steps=12, shard_size=16, batch_size=8, seed=3, out=str(out)), DIGITS)
    return open_dataset(out)


def same_content(a, b) -> bool:
    ra, rb = a.rows(0, len(a)), b.rows(0, len(b))
    return len(a) == len(b) and all(np.array_equal(ra[k], rb[k]) for k in ra)


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, reference):
    out = tmp_path / "ds"
    cmd = [str(BIN / "migm"), "dump-trajectories", "--out", str(out), *ARGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not list((out / "shards").glob("shard-*.zarr")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # as soon as a first shard is whole: the kill lands inside a later one
    proc.wait()
    assert not (out / "dataset.json").exists(), "the dump finished before it could be killed"

    # Every shard under its final name is whole: it reads back equal to the reference.
    finished = sorted((out / "shards").glob("shard-*.zarr"))
    assert finished
    from migm.trajectories.store.zarr_reader import ZarrShardReader

    for path in finished:
        k = int(path.name[6:11])
        got = ZarrShardReader(path, {f: reference.specs[f] for f in ("features", "tokens")}, rows=32).read(0, 32)
        want = reference.rows(32 * k, 32 * (k + 1))
        assert np.array_equal(got["features"], want["features"]) and np.array_equal(got["tokens"], want["tokens"])

    rerun = subprocess.run(cmd, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert verify_dataset(out)["ok"]
    assert same_content(open_dataset(out), reference)
    assert not list(out.rglob("*.tmp-*"))


def test_two_cpu_ranks_write_disjoint_shards_and_one_manifest(tmp_path, reference):
    out = tmp_path / "ds"
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "migm.cli.main",
        "dump-trajectories",
        "--out",
        str(out),
        "--device",
        "cpu",
        *ARGS,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    ds = open_dataset(out)
    assert ds.manifest.processes == 2
    assert verify_dataset(out)["ok"] and same_content(ds, reference)


def test_a_different_config_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "ds"
    small = dict(num_samples=4, steps=4, shard_size=2, out=str(out))
    dump_trajectories(DumpConfig(**small), DIGITS)
    before = sorted(p.name for p in out.rglob("*"))
    from migm.trajectories.errors import MigmError

    with pytest.raises(MigmError, match="another config; pass --overwrite"):
        dump_trajectories(DumpConfig(**{**small, "seed": 1}), DIGITS)
    assert sorted(p.name for p in out.rglob("*")) == before
    dump_trajectories(DumpConfig(**{**small, "seed": 1}), DIGITS, overwrite=True)
    assert open_dataset(out).manifest.seed == 1
