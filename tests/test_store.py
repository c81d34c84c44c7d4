"""Trajectory datasets: both backends round-trip what the rollout produced, and fail loudly."""

import json

import numpy as np
import pytest
import torch

from trajectories.base import BaseSpec, load_base
from trajectories.dump import DumpConfig, dump_trajectories
from trajectories.errors import MigmError
from trajectories.pairs import PairStream, all_pairs, pair_loader
from trajectories.rollout import SamplerConfig, rollout, sample_seeds
from trajectories.schedule import mask_ratios
from trajectories.store.codecs import parse_codec
from trajectories.store.dataset import open_dataset
from trajectories.store.verify import inspect_dataset, verify_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))

SMALL = dict(num_samples=10, steps=5, shard_size=4, batch_size=3, seed=7)


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("dumps")
    out = {}
    for fmt in ("zarr", "parquet"):
        for codec in ("lossless", "quant:bits=8"):
            path = root / f"{fmt}-{codec.split(':')[0]}"
            dump_trajectories(DumpConfig(out=str(path), format=fmt, codec=codec, **SMALL), DIGITS)
            out[fmt, codec] = path
    return out


def reference(n=10, steps=5, seed=7):
    """What the rollout produces for the dump's samples, computed directly."""
    base = load_base(BaseSpec("maskgit-digits"))
    config = SamplerConfig(steps=steps, **base.sampler_defaults)
    feats = []
    cond = torch.arange(n) % 10
    r = rollout(base, cond, sample_seeds(seed, 0, n), config, recorder=lambda s, f, i, p: feats.append(f.half()))
    f = torch.stack(feats, 1)  # [2n, N, T, D], conditional rows first
    return r, torch.stack([f[:n], f[n:]], 1).reshape(2 * n, *f.shape[1:]).numpy()


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_lossless_round_trip_equals_the_rollout(dumps, fmt):
    ds = open_dataset(dumps[fmt, "lossless"])
    result, feats = reference()
    assert len(ds) == 20 and ds.dims.N == 5
    rows = ds.rows(0, len(ds))
    assert np.array_equal(rows["features"], feats)
    assert np.array_equal(rows["tokens"][::2], result.tokens.numpy()) and np.array_equal(
        rows["order"][1::2], result.order.numpy()
    )
    assert rows["branch"].tolist() == [0, 1] * 10 and rows["sample_id"].tolist() == [i // 2 for i in range(20)]
    assert rows["cond"].tolist() == [(i // 2) % 10 for i in range(20)]
    assert rows["seed"][::2].tolist() == sample_seeds(7, 0, 10)


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_lossy_round_trip_is_within_the_stated_error(dumps, fmt):
    ds = open_dataset(dumps[fmt, "quant:bits=8"])
    _, feats = reference()
    got = ds.rows(0, len(ds))["features"].astype(np.float32)
    want = feats.astype(np.float32)
    scale = np.abs(want).max(-1, keepdims=True) / 127
    assert (np.abs(got - want) <= scale / 2 + 2e-3 * np.abs(want) + 1e-3).all()
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cos.mean() > 0.999


def test_zarr_and_parquet_hold_identical_content(dumps):
    a, b = open_dataset(dumps["zarr", "lossless"]), open_dataset(dumps["parquet", "lossless"])
    ra, rb = a.rows(0, len(a)), b.rows(0, len(b))
    for k in ra:
        assert np.array_equal(ra[k], rb[k]), k


def test_manifest_and_card(dumps):
    m = json.loads((dumps["parquet", "lossless"] / "dataset.json").read_text())
    assert m["schema_version"] == 1 and m["base"]["name"] == "maskgit-digits" and len(m["base"]["fingerprint"]) == 64
    assert [s["rows"] for s in m["shards"]] == [8, 8, 4] and all(len(s["sha256"]) == 64 for s in m["shards"])
    assert m["shards"][0]["name"] == "data/train-00000-of-00003.parquet"
    card = (dumps["parquet", "lossless"] / "README.md").read_text()
    assert card.startswith("---\n") and "data/train-*" in card and m["base"]["fingerprint"] in card


def test_datasets_load_dataset_reads_the_parquet_folder(dumps, tmp_path):
    from datasets import load_dataset

    # a fresh cache: `datasets` keys its cache of a local folder by the folder's name, not its content
    hf = load_dataset(str(dumps["parquet", "lossless"]), split="train", cache_dir=str(tmp_path / "hf-cache"))
    hf = hf.with_format("numpy", dtype=None)
    ours = open_dataset(dumps["parquet", "lossless"])
    row = hf[3]
    assert row["features"].dtype == np.float16 and row["features"].shape == (5, 65, 64)
    assert np.array_equal(row["features"], ours[3]["features"])


def test_pairs_follow_the_definition(dumps):
    ds = open_dataset(dumps["zarr", "lossless"])
    rows = ds.rows(2, 3)
    row = ds[2]
    batch = all_pairs(rows, mask_id=17)
    assert batch["step"].tolist() == [0, 1, 2, 3]
    ratios = mask_ratios(64, 5)
    for s in range(4):
        valid = batch["new_valid"][s]
        pos, ids = batch["new_pos"][s][valid].numpy(), batch["new_ids"][s][valid].numpy()
        assert np.array_equal(batch["feature"][s].numpy(), row["features"][s].astype(np.float32))
        assert np.array_equal(batch["target"][s].numpy(), row["features"][s + 1].astype(np.float32))
        assert sorted(pos.tolist()) == np.flatnonzero(row["order"] == s).tolist()
        assert np.array_equal(ids, row["tokens"][pos])
        assert abs(batch["mask_ratio"][s].item() - ratios[s]) < 1e-6
        assert batch["still_masked"][s].sum().item() == round(ratios[s] * 64)
        assert ((batch["tokens"][s] == 17) == batch["still_masked"][s]).all()
    # steps unmask different numbers of tokens: K is padded to the largest
    assert batch["new_valid"].sum(1).tolist() == [int((row["order"] == s).sum()) for s in range(4)]


def test_pair_stream_is_deterministic_and_splits_ranks(dumps):
    root = dumps["zarr", "lossless"]
    key = lambda b: list(zip(b["step"].tolist(), b["feature"][:, 0, 0].tolist()))  # noqa: E731
    first = [key(b) for b in pair_loader(PairStream(root, batch_size=7, seed=1, block_rows=4))]
    again = [key(b) for b in pair_loader(PairStream(root, batch_size=7, seed=1, block_rows=4))]
    other = [key(b) for b in pair_loader(PairStream(root, batch_size=7, seed=2, block_rows=4))]
    assert first == again and first != other
    assert sum(len(k) for k in first) == 20 * 4
    ranks = [PairStream(root, seed=1, rank=r, world=2, block_rows=4) for r in range(2)]
    mine = [set(map(int, s.my_rows())) for s in ranks]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(20))
    assert sum(s.num_pairs() for s in ranks) == 20 * 4
    two_workers = sum(len(b["step"]) for b in pair_loader(PairStream(root, batch_size=7, block_rows=4), workers=2))
    assert two_workers == 20 * 4


def test_verify_names_a_flipped_byte_and_a_truncated_shard(dumps, tmp_path):
    import shutil

    for fmt in ("zarr", "parquet"):
        copy = tmp_path / fmt
        shutil.copytree(dumps[fmt, "lossless"], copy)
        assert verify_dataset(copy)["ok"]
        m = json.loads((copy / "dataset.json").read_text())
        victim = copy / m["shards"][1]["name"]
        files = (
            [victim]
            if victim.is_file()
            else sorted(
                p for p in victim.rglob("*") if p.is_file() and "features" in str(p) and "zarr.json" not in p.name
            )
        )
        data = bytearray(files[0].read_bytes())
        data[len(data) // 2] ^= 0xFF
        files[0].write_bytes(bytes(data))
        report = verify_dataset(copy)
        assert not report["ok"] and [s["name"] for s in report["shards"] if not s["ok"]] == [m["shards"][1]["name"]]
        with pytest.raises(MigmError, match=m["shards"][1]["name"].split("/")[-1]):
            open_dataset(copy).rows(0, 20)  # reading it (as training does) fails and names it
        last = copy / m["shards"][2]["name"]
        f = last if last.is_file() else sorted(p for p in last.rglob("*") if p.is_file() and "features" in str(p))[0]
        f.write_bytes(f.read_bytes()[:-20])
        bad = [s["name"] for s in verify_dataset(copy)["shards"] if not s["ok"]]
        assert bad == [m["shards"][1]["name"], m["shards"][2]["name"]]


def test_not_a_dataset_and_wrong_version(tmp_path, dumps):
    with pytest.raises(MigmError, match="no dataset.json"):
        open_dataset(tmp_path)
    with pytest.raises(MigmError, match="not a dataset folder"):
        open_dataset(tmp_path / "nope")
    import shutil

    copy = tmp_path / "v"
    shutil.copytree(dumps["zarr", "lossless"], copy)
    m = json.loads((copy / "dataset.json").read_text())
    (copy / "dataset.json").write_text(json.dumps({**m, "schema_version": 99}))
    with pytest.raises(MigmError, match="schema version 99 is not supported"):
        open_dataset(copy)


def test_inspect_reports_size_and_smoothness(dumps, tmp_path):
    info = inspect_dataset(dumps["zarr", "quant:bits=8"], plot=tmp_path / "s.png")
    assert info["rows"] == 20 and info["steps"] == 5 and len(info["smoothness"]) == 4
    assert 0 < info["ratio_to_raw_float16"] < 0.7 and info["codec_max_abs_error_bound"] > 0
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_codec_spec_errors():
    assert parse_codec("quant:bits=6").bits == 6 and parse_codec("lossless").lossy is False
    for bad in ("gzip", "quant:bits=9", "quant:x=1"):
        with pytest.raises(MigmError):
            parse_codec(bad)
