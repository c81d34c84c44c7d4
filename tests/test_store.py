"""Trajectory datasets: both backends round-trip what the rollout produced, and fail loudly."""

import json

import numpy as np
import pytest
import torch

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError
from migm.trajectories.pairs import PairStream, all_pairs, pair_loader
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds
from migm.trajectories.schedule import token_schedule
from migm.trajectories.store.codecs import parse_codec
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.verify import inspect_dataset, verify_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))

SMALL = dict(num_samples=10, steps=5, shard_size=4, batch_size=3, seed=7)
DELTA = "delta:bits=6,keyframe=2"  # keyframes at steps 0, 2, 4 of N = 5


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("dumps")
    out = {}
    for fmt in ("zarr", "parquet"):
        for codec in ("lossless", "quant:bits=8", DELTA):
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
    committed = np.cumsum(token_schedule(64, 5))
    ratios = [(64 - committed[s]) / 64 for s in range(5)]  # fraction still masked after step s
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


def plain_fields(path, fields):
    """The stored fields of a dataset read with zarr / pyarrow alone (no migm code)."""
    import pyarrow.parquet as pq
    import zarr

    m = json.loads((path / "dataset.json").read_text())
    out = {f: [] for f in fields}
    for shard in m["shards"]:
        if m["format"] == "zarr":
            group = zarr.open_group(str(path / shard["name"]), mode="r")
            for f in fields:
                out[f].append(group[f][:])
        else:
            table = pq.read_table(path / shard["name"], columns=fields)
            for f in fields:
                col, shape = table.column(f).combine_chunks(), [len(table)]
                while hasattr(col, "flatten"):  # nested lists of fixed lengths: peel one level at a time
                    shape.append(len(col.flatten()) // shape[0] // int(np.prod(shape[1:])))
                    col = col.flatten()
                out[f].append(col.to_numpy().reshape(shape))
    return {f: np.concatenate(v) for f, v in out.items()}


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_delta_round_trip_is_within_the_stated_error(dumps, fmt):
    ds = open_dataset(dumps[fmt, DELTA])
    assert ds.codec.spec == DELTA and json.loads((dumps[fmt, DELTA] / "dataset.json").read_text())["codec"] == {
        "name": "delta",
        "bits": 6,
        "keyframe": 2,
    }
    _, feats = reference()
    got = ds.rows(0, len(ds))["features"].astype(np.float32)
    want = feats.astype(np.float32)
    raw = plain_fields(dumps[fmt, DELTA], ["features_delta", "features_scale"])
    assert raw["features_delta"].dtype == np.uint8 and raw["features_scale"].dtype == np.float16
    scale = raw["features_scale"].astype(np.float32)[..., None]  # [rows, N, T, 1]
    # every step, keyframe or not, within half its own scale (+ the float16 rounding of the output):
    # differences are taken from the decoded previous step, so the error does not grow along the group
    err = np.abs(got - want)
    assert (err <= scale / 2 + np.abs(want) * 2**-11 + 1e-6).all()
    assert err.max() > 0 and (scale > 0).all()
    # non-keyframe steps keep the keyframe's precision unless a difference does not fit in ±127 codes
    assert (raw["features_scale"][:, 1] >= raw["features_scale"][:, 0]).all()
    cos = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cos.mean() > 0.999
    # the codes are the small differences, not the features: most are within ±7
    u = raw["features_delta"][:, [1, 3]].astype(np.int16)
    assert (np.abs((u >> 1) ^ -(u & 1)) <= 7).mean() > 0.9


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_delta_card_recipe_decodes_with_plain_readers(dumps, fmt):
    """The dataset card's numpy recipe, on arrays read by zarr / pyarrow alone, gives migm's features."""
    path = dumps[fmt, DELTA]
    card = (path / "README.md").read_text()
    recipe = card.split("## Decoding")[1].split("```python\n")[1].split("```")[0]
    raw = plain_fields(path, ["features_delta", "features_scale"])
    ours = open_dataset(path).rows(0, 20)["features"]
    for i in (0, 7, 19):
        scope = {"np": np, "row": {k: v[i] for k, v in raw.items()}}
        exec(recipe, scope)
        assert np.array_equal(scope["features"], ours[i])


@pytest.mark.parametrize("fmt", ["zarr", "parquet"])
def test_delta_step_access_reads_from_the_keyframe(dumps, fmt):
    ds = open_dataset(dumps[fmt, DELTA])
    codec = ds.codec
    for i in (0, 13):
        whole = ds[i]["features"]
        for s in range(5):
            assert np.array_equal(ds.step(i, s), whole[s])
    k, local = ds.locate(13)
    reader = ds.reader(k)
    part = reader.read(local, local + 1, steps=slice(2, 4))  # steps 2 (keyframe) and 3 only
    assert part["features_delta"].shape == (1, 2, 65, 64) and part["features_scale"].shape == (1, 2, 65)
    assert np.array_equal(codec.decode_step(part, 3, first=2)[0], ds[13]["features"][3])
    # only steps from the keyframe on are decoded: garbage elsewhere changes nothing
    full = reader.read(local, local + 1)
    junk = {f: v.copy() for f, v in full.items()}
    junk["features_delta"][:, :2] = 255
    junk["features_scale"][:, :2] = 1000
    assert np.array_equal(codec.decode_step(junk, 3)[0], ds[13]["features"][3])
    with pytest.raises(ValueError, match="decodes from step 2"):
        codec.decode_step(part, 3, first=3)
    if fmt == "zarr":  # one chunk per keyframe group: a step reads its group, not the row
        assert reader.arrays["features_delta"].chunks == (1, 2, 65, 64)


def test_delta_datasets_verify_and_give_pairs(dumps):
    for fmt in ("zarr", "parquet"):
        assert verify_dataset(dumps[fmt, DELTA])["ok"]
    ds = open_dataset(dumps["zarr", DELTA])
    batch = all_pairs(ds.rows(4, 5), mask_id=17)
    assert np.array_equal(batch["target"][2].numpy(), ds[4]["features"][3].astype(np.float32))
    assert sum(len(b["step"]) for b in pair_loader(PairStream(dumps["parquet", DELTA], batch_size=7))) == 20 * 4
    assert inspect_dataset(dumps["zarr", DELTA])["codec_max_abs_error_bound"] > 0


def test_codec_spec_errors():
    assert parse_codec("quant:bits=6").bits == 6 and parse_codec("lossless").lossy is False
    d = parse_codec("delta:bits=5.5,keyframe=8")
    assert (d.bits, d.keyframe, d.spec) == (5.5, 8, "delta:bits=5.5,keyframe=8")
    assert parse_codec("delta").spec == "delta:bits=6,keyframe=16"
    bad_specs = ("gzip", "quant:bits=9", "quant:x=1", "quant:bits=5.5", "quant:keyframe=4")
    for bad in (*bad_specs, "delta:bits=1", "delta:keyframe=0", "delta:keyframe=2.5", "delta:bits=nan"):
        with pytest.raises(MigmError):
            parse_codec(bad)
