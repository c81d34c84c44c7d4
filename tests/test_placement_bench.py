"""Placed full steps (`--placement auto`) and the bench's intervals, Pareto fronts and rollout fidelity."""

import itertools
import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.evaluate import FidelityProbe
from migm.shortcut_zoo.export import load_shortcut, read_step_errors
from migm.shortcut_zoo.predictors import make_predictor, step_cost
from migm.shortcut_zoo.stats import pareto_front
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.protocol import PredictorDefaults
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError
from migm.trajectories.frechet import frechet_distance, frechet_to, moments
from migm.trajectories.generate import sample_many
from migm.trajectories.rollout import SamplerConfig
from migm.trajectories.schedule import check_full_steps, full_steps, placed_full_steps

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
runner = CliRunner()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    dump_trajectories(DumpConfig(num_samples=16, steps=6, shard_size=8, out=str(root / "ds")), DIGITS)
    cfg = TrainConfig(
        data=str(root / "ds"), arch="mlp", out=str(root / "k2"), steps=10, batch_size=16, val_fraction=0.25, rollout=2
    )
    train(cfg, BaseSpec(device="cpu"))
    return root / "k2"


def summed(cost: np.ndarray, full: list[int]) -> float:
    """The summed cost of a placement's shortcut steps: each charged from the last full step before it."""
    N, total = len(cost), 0.0
    for t in range(N):
        last = max(f for f in full if f <= t)
        total += cost[last, t - last] if t != last else 0.0
    return total


@pytest.mark.parametrize("N", [2, 4, 7])
def test_placed_full_steps_minimise_the_summed_cost(N):
    rng = np.random.default_rng(N)
    cost = np.triu(rng.random((N, N)), 1)  # cost[s][j], j >= 1
    for B in range(1, N + 1):
        full = placed_full_steps(N, B, cost)
        assert full == check_full_steps(full, N) and len(full) == B and full[0] == 0
        best = min(summed(cost, [0, *rest]) for rest in itertools.combinations(range(1, N), B - 1))
        assert summed(cost, full) == pytest.approx(best)
    assert placed_full_steps(N, N, cost) == list(range(N))


def test_a_placement_follows_the_cost_and_bad_ones_are_refused():
    N = 8
    cost = np.zeros((N, N))
    cost[0, 1:] = 1.0  # the shortcut is bad right after step 0 only: a full step belongs at 1
    assert placed_full_steps(N, 2, cost) == [0, 1]
    for bad in ([1, 3], [0, 3, 3], [0, 4, 2], [0, 8], []):
        with pytest.raises(MigmError, match="full steps must be sorted"):
            check_full_steps(bad, N)


def test_step_cost_is_the_measured_table_at_its_n_and_maps_other_ns():
    table = {"N": 5, "error": [[0.1, 0.3, 0.5, 0.7], [0.2, 0.4, 0.6], [0.3, 0.5], [0.4]]}
    cost = step_cost(table, 5)
    assert all(cost[s, j] == pytest.approx(table["error"][s][j - 1]) for s in range(4) for j in range(1, 5 - s))
    wide = step_cost(table, 9)  # 9 steps: each half a measured step, errors interpolated from 0 at length 0
    assert wide.shape == (9, 9) and np.isfinite(wide).all() and (wide >= 0).all()
    assert wide[0, 1] == pytest.approx(0.05) and wide[0, 2] == pytest.approx(0.1)


def test_auto_with_b_equal_n_is_vanilla(zoo):
    shortcut = make_predictor("shortcut", load_shortcut(zoo, DIGITS), read_step_errors(zoo))
    labels = torch.arange(8) % 10
    for N in (4, 6):
        auto = sample_many(DIGITS, labels, SamplerConfig.for_base(DIGITS, N, N), 0, predictor=shortcut)
        vanilla = sample_many(DIGITS, labels, SamplerConfig.for_base(DIGITS, N), 0)
        assert torch.equal(auto.tokens, vanilla.tokens) and auto.full == list(range(N))


def test_sample_auto_reports_the_placed_steps(zoo, tmp_path):
    args = ["sample", "--shortcut", str(zoo), "--steps", "6", "--budget", "3", "--classes", "0-1", "--per-class", "2"]
    r = runner.invoke(app, [*args, "--placement", "auto", "--out", str(tmp_path / "a.png"), "--json", "-q"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["placement"] == "auto"
    assert result["full_steps"] == placed_full_steps(6, 3, step_cost(read_step_errors(zoo), 6))
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "u.png"), "-q"])
    assert r.exit_code == 0 and f"full steps: {full_steps(6, 3)}, uniform placement" in r.stdout


def test_auto_is_refused_where_no_errors_are_stored(zoo, tmp_path):
    old = tmp_path / "old"  # a zoo folder trained before step errors were stored
    shutil.copytree(zoo, old)
    config = json.loads((old / "config.json").read_text())
    del config["step_errors"]
    (old / "config.json").write_text(json.dumps(config))
    base = ["--steps", "6", "--budget", "3", "--out", str(tmp_path / "x.png"), "-q"]
    for args, message in [
        (["--shortcut", str(old), "--placement", "auto"], "no stored step errors"),
        (["--predictor", "cache", "--placement", "auto"], "--placement auto places full steps by a zoo shortcut"),
        (["--shortcut", str(zoo), "--placement", "best"], "placement must be uniform or auto"),
    ]:
        r = runner.invoke(app, ["sample", *args, *base])
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)
    r = runner.invoke(app, ["bench", "--shortcut", str(old), "--configs", "N6B3", "--placement", "uniform,auto"])
    assert r.exit_code == 2 and "no stored step errors" in r.stderr


class Oracle(PredictorDefaults):
    """A predictor that recomputes the base's own feature: fidelity 1 by construction."""

    needs_state = True

    def predict(self, step, feature, *args, feat_valid=None, base, tokens, cond):
        return base.forward(tokens, cond)[1]


def test_fidelity_is_one_for_the_base_itself_and_probing_changes_no_sample():
    labels, config = torch.arange(6) % 10, SamplerConfig.for_base(DIGITS, 6, 2)
    oracle = FidelityProbe(Oracle(), branches=2)
    sample_many(DIGITS, labels, config, 0, batch_size=4, predictor=oracle)
    values = oracle.values()
    assert values.shape == (6,) and torch.allclose(values, torch.ones(6, dtype=values.dtype), atol=1e-5)
    cache = FidelityProbe(make_predictor("cache"), branches=2)
    probed = sample_many(DIGITS, labels, config, 0, batch_size=4, predictor=cache)
    assert (cache.values() < 1 - 1e-4).all()
    assert torch.equal(probed.tokens, sample_many(DIGITS, labels, config, 0, predictor=make_predictor("cache")).tokens)


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.7), (3.0, 0.6), (2.0, 0.4)]  # (latency, quality)
    assert pareto_front(pts, higher_is_better=True) == [True, True, False, False]
    assert pareto_front(pts, higher_is_better=False) == [True, False, False, True]
    assert pareto_front([(1.0, 5.0), (2.0, 3.0), (3.0, 4.0)], higher_is_better=False) == [True, True, False]


def test_frechet_distance_equals_the_sqrtm_formula():
    """The one Fréchet distance (symmetric eigen form) against scipy's matrix square root of Σ₁Σ₂."""
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(0.3, 1.2, size=(200, 8))
    (mu1, s1), (mu2, s2) = moments(a), moments(b)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    assert frechet_to(mu2, s2)(mu1, s1) == frechet_distance(mu1, s1, mu2, s2) > 0
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9


def test_bench_rows_carry_intervals_fidelity_placements_and_fronts(zoo, tmp_path):
    out = tmp_path / "bench"
    r = runner.invoke(
        app,
        ["bench", "--shortcut", str(zoo), "--configs", "N6,N8,N6B2,N8B1", "--placement", "uniform,auto",
         "--samples", "8", "--batch-size", "8", "--repeats", "1", "--bootstrap", "40", "--out", str(out), "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(x["config"], x["method"]) for x in rows if x["N"] == 8] == [  # B/N = 1/8 is accepted
        ("N8", "vanilla"),
        ("N8B1", "shortcut:k2"),
        ("N8B1", "shortcut:k2@auto"),
        ("N8B1", "cache"),
        ("N8B1", "taylor"),
    ]
    errors = read_step_errors(zoo)
    for x in rows:
        N, B = x["N"], x["B"]
        assert x["full_steps"] == check_full_steps(x["full_steps"], N) and len(x["full_steps"]) == B
        if x["placement"] == "auto":
            assert x["full_steps"] == placed_full_steps(N, B, step_cost(errors, N))
        elif x["placement"] == "uniform":
            assert x["full_steps"] == full_steps(N, B)
        for key in ("accuracy", "frechet", "token_agreement", "fidelity"):
            if x["method"] == "vanilla" and key == "fidelity":
                assert x["fidelity"] is None  # no shortcut step
                continue
            lo, hi = x[f"{key}_ci"]
            assert lo - 1e-9 <= x[key] <= hi + 1e-9, (x["method"], key)
        if x["method"] != "vanilla":
            assert 0 < x["fidelity"] <= 1
    for method in {x["method"] for x in rows}:
        assert any(x["pareto_front"] for x in rows if x["method"] == method)
    table = (out / "results.md").read_text()
    assert "| fidelity |" in table and "auto [0" in table and (out / "pareto.png").stat().st_size > 1000
