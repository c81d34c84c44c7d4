"""Training from live rollouts (`migm train --live`): the pairs are a dump's, and training validates,
resumes and exports as from a dataset."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories, rollout_rows
from migm.trajectories.errors import MigmError
from migm.trajectories.live import LiveConfig, LiveSource, live_plan
from migm.trajectories.pairs import pair_batch
from migm.trajectories.store.dataset import open_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
SPEC = BaseSpec("maskgit-digits", device="cpu")
runner = CliRunner()
# N = 5, rollout batches of 2 samples (4 rows, 16 pairs), 2 of them in the buffer, 4 optimizer steps per batch
LIVE = LiveConfig(steps=5, classes=[1, 4, 7], batch_size=2, buffer=32, replay=4.0, val_samples=2)


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A lossless dump of samples 0-13 with the live plan's seed, classes and sampler."""
    out = tmp_path_factory.mktemp("live") / "ds"
    dump_trajectories(
        DumpConfig(num_samples=14, steps=5, shard_size=8, seed=3, classes=[1, 4, 7], out=str(out)), DIGITS
    )
    return open_dataset(out)


def test_live_pairs_equal_the_dump_of_the_same_seeds(dump):
    p = live_plan(DIGITS, LIVE, seed=3)
    rows = dump.rows(0, len(dump))
    for rank in (0, 1):  # two ranks roll out disjoint samples: batches g = j * 2 + rank
        live = LiveSource(DIGITS, p, LIVE, train_batch=16, rank=rank, world=2)
        assert live.slots == 2 and live.steps_per_batch == 4
        assert [live.samples(j) for j in range(2)] == ([(2, 4), (6, 8)] if rank == 0 else [(4, 6), (8, 10)])
        for step in range(12):  # three rollout batches: from step 8 the buffer has evicted the first
            got = live.batch(step)
            held = {i for j in range(max(0, step // 4 - 1), step // 4 + 1) for i in range(*live.samples(j))}
            filled = min(live.rolled, live.slots) * live.rows_per_batch
            assert set(live.buffer["sample_id"][:filled].tolist()) == held
            # every drawn pair is the dump's pair of that sample, branch and step, field by field
            r, s = draws(live, step)
            want = pair_batch(rows, live.buffer["sample_id"][r] * 2 + live.buffer["branch"][r], s, mask_id=17)
            assert got.keys() == want.keys() and len(got["step"]) == 16
            for k in want:
                assert torch.equal(got[k], want[k]), (step, k)
    # the rows themselves: a live rollout batch equals the dump's rows of those samples
    live_rows = rollout_rows(DIGITS, p, 5, 8)
    for k, v in live_rows.items():
        assert np.array_equal(v, rows[k][10:16]), k


def draws(live: LiveSource, step: int):
    """The (buffer row, step) pairs `live.batch(step)` draws: its documented generator."""
    rng = np.random.default_rng([live.plan.seed, step, live.rank])
    filled = min(live.rolled, live.slots) * live.rows_per_batch
    return rng.integers(0, filled, live.train_batch), rng.integers(0, live.plan.dims.N - 1, live.train_batch)


TINY = dict(arch="mlp", steps=12, batch_size=16, save_every=5, warmup=2, seed=3)


def test_live_training_validates_resumes_and_exports(tmp_path):
    straight = train(TrainConfig(data=None, out=str(tmp_path / "a"), live=LIVE, **TINY), SPEC)
    part = train(TrainConfig(data=None, out=str(tmp_path / "b"), live=LIVE, stop_at=7, **TINY), SPEC)
    assert part["stopped_at"] == 7 and not (tmp_path / "b" / "model.safetensors").exists()
    # the resume rolls out the batches its buffer held at step 7 (batches 0 and 1) again and goes on exactly
    resumed = train(TrainConfig(data=None, out=str(tmp_path / "b"), live=LIVE, **TINY), SPEC, resume=True)
    assert resumed["losses"] == straight["losses"] and len(straight["losses"]) == 12
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)

    config = json.loads((tmp_path / "a" / "config.json").read_text())
    # 12 steps, a rollout batch every 4: batches 0-2, samples 2-7 (0-1 held out)
    assert config["dataset"]["live"] == {"seed": 3, "training_samples": [2, 8], "validation_samples": [0, 2]}
    assert config["dataset"]["fingerprint"].startswith("live-") and config["dataset"]["num_samples"] == 6
    assert config["training"]["live"]["buffer"] == 32 and config["sampler"]["steps"] == 5
    m = config["metrics"]["overall"]
    assert 0 < m["cos"] <= 1 and [r["step"] for r in config["metrics"]["per_step"]] == [0, 1, 2, 3]
    card = (tmp_path / "a" / "README.md").read_text()
    assert "live rollouts (no dataset), seed 3" in card and "samples 2–7 (6)" in card and "held-out samples 0–1" in card
    model = load_shortcut(tmp_path / "a", DIGITS)
    assert sum(p.numel() for p in model.parameters()) == config["cost"]["parameters"]

    # a resume with other live settings reads other pairs: refused
    other = LiveConfig(**{**vars(LIVE), "replay": 2.0})
    with pytest.raises(MigmError, match="another dataset"):
        train(TrainConfig(data=None, out=str(tmp_path / "b"), live=other, **TINY), SPEC, resume=True)


def test_live_cli_trains_and_refuses_bad_combinations(tmp_path):
    args = ["train", "--live", "--model", "maskgit-digits", "--device", "cpu", "--arch", "mlp", "--steps", "3"]
    args += ["--sampling-steps", "4", "--classes", "0-2", "--live-batch", "2", "--buffer", "12", "--val-samples", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "z"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["dataset"]["live"]["validation_samples"] == [0, 2] and out["sampler"]["steps"] == 4
    cases = [
        (["train", "--live", "--out", str(tmp_path / "x")], "give it with --model"),
        (["train", "--live", "--data", str(tmp_path), "--model", "maskgit-digits"], "not both"),
        (["train", "--out", str(tmp_path / "x")], "--live --model NAME"),
        (["train", "--data", str(tmp_path), "--classes", "0-2"], "are for --live"),
        ([*args, "--replay", "0", "--out", str(tmp_path / "y")], "--replay must be above 0"),
        ([*args, "--classes", "12", "--out", str(tmp_path / "y")], "classes must be in 0-9"),
    ]
    for case, message in cases:
        bad = runner.invoke(app, case)
        assert bad.exit_code == 2 and message in bad.stderr, (case, bad.output)


@pytest.mark.parametrize(
    ("model", "arch"), [("dimoo-digits", "dimoo-transformer"), ("maskgit-digits", "tiny-transformer")]
)
def test_train_without_arch_builds_the_bases_own_shortcut(tmp_path, model, arch):
    """No --arch: the base's own architecture (a DiMOO base gets the DiMOO shortcut, not a MaskGIT one)."""
    args = ["train", "--live", "--model", model, "--device", "cpu", "--steps", "2", "--batch-size", "8"]
    args += ["--sampling-steps", "4", "--live-batch", "2", "--buffer", "12", "--val-samples", "2"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "z")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "z" / "config.json").read_text())["arch"] == arch
    assert f"({arch}," in result.stdout
