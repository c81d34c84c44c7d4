"""Accelerated sampling and the benchmark, on a tiny trained shortcut."""

import json

import pytest
import torch
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.predictors import TaylorPredictor, make_predictor
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.generate import sample_many
from migm.trajectories.rollout import SamplerConfig

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")  # train: the base the dataset names, on the CPU

runner = CliRunner()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb")
    dump_trajectories(DumpConfig(num_samples=16, steps=6, shard_size=8, out=str(root / "ds")), DIGITS)
    train(
        TrainConfig(data=str(root / "ds"), out=str(root / "tt"), steps=10, batch_size=16, val_fraction=0.25, warmup=2),
        CPU,
    )
    return root / "tt"


def tokens(base, steps, budget=None, predictor=None, seed=0, n=12):
    labels = torch.arange(n) % 10
    return sample_many(base, labels, SamplerConfig.for_base(base, steps, budget), seed, predictor=predictor).tokens


def test_budget_equal_to_steps_is_exactly_vanilla(zoo):
    base = load_base(BaseSpec("maskgit-digits"))
    shortcut = make_predictor("shortcut", load_shortcut(zoo, base))
    for steps in (4, 8):
        assert torch.equal(tokens(base, steps, steps, shortcut), tokens(base, steps))


def test_shortcut_steps_change_the_samples_but_keep_them_valid(zoo):
    base = load_base(BaseSpec("maskgit-digits"))
    for name in ("cache", "taylor", "taylor2"):
        t = tokens(base, 8, 3, make_predictor(name))
        assert t.shape == (12, 64) and (t < 17).all()


def test_taylor_extrapolates_linear_and_quadratic_motion():
    f = lambda s: torch.full((1, 2, 3), 1.0 + 0.5 * s + 0.25 * s * s)  # noqa: E731
    p2 = TaylorPredictor(2)
    for s in (0, 2, 5):
        p2.observe(s, f(s))
    assert torch.allclose(p2.predict(7, None, None, None, None, None), f(7))
    p1 = TaylorPredictor(1)
    g = lambda s: torch.full((1, 2, 3), 2.0 - 0.5 * s)  # noqa: E731
    p1.observe(1, g(1))
    p1.observe(4, g(4))
    assert torch.allclose(p1.predict(6, None, None, None, None, None), g(6))


def test_sample_cli_and_its_errors(zoo, tmp_path):
    ok = runner.invoke(
        app,
        [
            "sample",
            "--shortcut",
            str(zoo),
            "--steps",
            "8",
            "--budget",
            "3",
            "--per-class",
            "2",
            "--out",
            str(tmp_path / "s.png"),
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["predictor"] == "shortcut" and (tmp_path / "s.png").exists()
    other = tmp_path / "other"
    import shutil

    shutil.copytree(zoo, other)
    c = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**c, "base": {**c["base"], "fingerprint": "f" * 64}}))
    cases = [
        (["--shortcut", str(other), "--budget", "3"], "use --force"),
        (["--shortcut", str(zoo), "--steps", "8", "--budget", "9"], "budget must satisfy 1 <= budget <= steps (8)"),
        (
            ["--predictor", "magic", "--budget", "3"],
            "unknown predictor 'magic'; known predictors: shortcut, cache, taylor",
        ),
        (["--predictor", "shortcut"], "needs --shortcut"),
    ]
    for args, message in cases:
        out = tmp_path / "bad.png"
        result = runner.invoke(app, ["sample", "--out", str(out), "--steps", "8", *args])
        assert result.exit_code == 2 and message in result.stderr and not out.exists(), (args, result.output)
    forced = runner.invoke(
        app,
        [
            "sample",
            "--shortcut",
            str(other),
            "--force",
            "--steps",
            "8",
            "--budget",
            "3",
            "--per-class",
            "1",
            "--out",
            str(tmp_path / "f.png"),
            "--quiet",
        ],
    )
    assert forced.exit_code == 0, forced.output


def test_budget_without_a_predictor_is_vanilla_at_n_and_refused_below(tmp_path):
    a = runner.invoke(
        app, ["sample", "--steps", "8", "--budget", "8", "--per-class", "1", "--out", str(tmp_path / "a.png"), "--json"]
    )
    b = runner.invoke(app, ["sample", "--steps", "8", "--per-class", "1", "--out", str(tmp_path / "b.png"), "--json"])
    assert a.exit_code == 0 and b.exit_code == 0 and json.loads(a.stdout)["predictor"] == "vanilla"
    assert json.loads(a.stdout)["full_steps"] == list(range(8))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    c = runner.invoke(app, ["sample", "--steps", "8", "--budget", "3", "--out", str(tmp_path / "c.png")])
    assert c.exit_code == 2 and "needs a predictor" in c.stderr and not (tmp_path / "c.png").exists()


def test_bench_writes_table_json_and_plot(zoo, tmp_path):
    out = tmp_path / "bench"
    result = runner.invoke(
        app,
        [
            "bench",
            "--shortcut",
            str(zoo),
            "--configs",
            "N4,N6,N6B3",
            "--samples",
            "20",
            "--repeats",
            "1",
            "--batch-size",
            "10",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "results.json").read_text())
    methods = [(r["config"], r["method"]) for r in data["rows"]]
    assert methods == [
        ("N4", "vanilla"),
        ("N6", "vanilla"),
        ("N6B3", "shortcut:tt"),
        ("N6B3", "cache"),
        ("N6B3", "taylor"),
    ]
    for r in data["rows"]:
        assert r["latency_s"] > 0 and r["measured_over_ideal"] > 0 and 0 <= r["token_agreement"] <= 1
    assert data["where"]["threads"] >= 1 and "| N6B3 | cache |" in (out / "results.md").read_text()
    assert (out / "pareto.png").stat().st_size > 1000


def test_bench_bad_input(tmp_path):
    for args, message in [
        (["--configs", "N8X"], "configs look like"),
        (["--configs", "N8B9", "--predictors", "cache"], "budget must satisfy"),
        (["--configs", "N8B4", "--predictors", "shortcut"], "needs --shortcut"),
        (["--configs", ",,"], "names no config"),  # issue 16 item 10
        (["--configs", "N4", "--repeats", "0"], "--repeats must be at least 1"),
        (["--configs", "N4", "--seed", "-1"], "--seed must be at least 0"),
    ]:
        result = runner.invoke(app, ["bench", "--out", str(tmp_path / "b"), *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
        assert not (tmp_path / "b").exists()
