"""ML-Cache (the published training-free peer for DiMOO-architecture bases) on a tiny random checkpoint:
its partial forward against the full one, its refresh steps and recompute mask, padded batches, the CLI."""

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_dimoo
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.predictors import MLCachePredictor, make_predictor, recompute_mask, split_predictors
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds, stack_cond

runner = CliRunner()
PROMPTS = ["a photo of a red cat", "a dog", "the quick brown fox jumps over a cat"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_dimoo(tmp_path_factory.mktemp("mlcache") / "ckpt")


@pytest.fixture(scope="module")
def base(ckpt):
    return load_base(BaseSpec(name="dimoo", checkpoint=str(ckpt), height=48, width=48, device="cpu"))


def branch_rows(base, prompts=PROMPTS):
    return stack_cond(base.encode_prompts(prompts), base.null_cond(len(prompts)))


def some_tokens(base, rows: int, seed: int, masked: float = 0.5) -> torch.Tensor:
    """Loop-level tokens [rows, L] with about `masked` of the cells masked and random codes elsewhere."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, base.V, (rows, base.L), generator=g)
    return torch.where(torch.rand(rows, base.L, generator=g) < masked, base.mask_id, codes)


def run(base, config, prompts=PROMPTS, predictor=None, seed=0):
    """Rollout of `prompts`, with the feature of every step."""
    features = []
    result = rollout(
        base,
        base.encode_prompts(prompts),
        sample_seeds(seed, 0, len(prompts)),
        config,
        predictor=predictor,
        recorder=lambda s, feature, ids, pos: features.append(feature.clone()),
    )
    return result, features


# ---- the partial forward --------------------------------------------------------------------------


def test_recording_forward_is_the_forward(base):
    rows = branch_rows(base)
    tokens = some_tokens(base, len(rows), 0)
    logits, feature, cache = base.forward_cached(tokens, rows)
    want_logits, want_feature = base.forward(tokens, rows)
    assert torch.equal(logits, want_logits) and torch.equal(feature, want_feature)
    valid = base.feature_valid(rows)
    assert len(cache.kv) == base.net.cfg.n_layers and cache.kv[0][0].shape[:2] == valid.shape
    assert torch.isnan(cache.top[~valid]).all() and not torch.isnan(cache.top[valid]).any()


def test_partial_recompute_of_all_positions_equals_the_full_forward(base):
    """Every position recomputed: the cached K/V are all overwritten before any query reads them."""
    rows = branch_rows(base)
    before, after = some_tokens(base, len(rows), 1, 0.9), some_tokens(base, len(rows), 2, 0.3)
    cache = base.forward_cached(before, rows)[2]
    feature = base.forward_partial(after, rows, cache, torch.ones(cache.top.shape, dtype=torch.bool))
    want_logits, want_feature, want = base.forward_cached(after, rows)
    assert (feature - want_feature).abs().max() <= 1e-5
    assert (base.head(feature, rows) - want_logits).abs().max() <= 1e-5
    assert torch.allclose(cache.top, want.top, atol=1e-5, equal_nan=True)
    valid = base.feature_valid(rows)  # padded keys are masked: theirs are never recomputed nor read
    for (k, v), (k_want, v_want) in zip(cache.kv, want.kv):
        assert (k - k_want)[valid].abs().max() <= 1e-5 and (v - v_want)[valid].abs().max() <= 1e-5


def test_positions_not_recomputed_keep_their_cached_kv_at_every_layer(base):
    """Tokens changed only at positions that are not recomputed are invisible: the recomputed positions
    get what the old tokens gave, and the others keep their cached feature exactly."""
    rows = branch_rows(base)
    old = some_tokens(base, len(rows), 3)
    _, old_feature, cache = base.forward_cached(old, rows)
    old_feature = old_feature.clone()
    valid = base.feature_valid(rows)
    g = torch.Generator().manual_seed(4)
    recompute = (torch.rand(valid.shape, generator=g) < 0.3) & valid  # a different count in every row
    assert len(set(recompute.sum(1).tolist())) > 1
    new = old.clone()
    cell_recomputed = recompute.gather(1, base.cells(rows))
    new[~cell_recomputed] = (new[~cell_recomputed] + 1) % base.V  # change every cell that is not recomputed
    feature = base.forward_partial(new, rows, cache, recompute)
    assert (feature[recompute] - old_feature[recompute]).abs().max() <= 1e-5
    assert torch.equal(feature[~recompute], old_feature[~recompute])
    # while a full forward of the new tokens differs there: the cache, not the tokens, was read
    assert (base.forward(new, rows)[1][recompute] - old_feature[recompute]).abs().max() > 1e-2


def test_recompute_mask_is_torch_quantile_per_row_over_real_positions():
    g = torch.Generator().manual_seed(0)
    lengths = [7, 40, 23, 1]
    top = torch.randn(len(lengths), 40, generator=g)
    top[2, :5] = top[2, 5]  # ties
    for r, n in enumerate(lengths):
        top[r, n:] = torch.nan
    for q in (0.0, 0.1, 0.37, 1.0):
        mask = recompute_mask(top, q)
        for r, n in enumerate(lengths):
            threshold = torch.quantile(top[r, :n], q)
            assert torch.equal(mask[r, :n], top[r, :n] <= threshold) and not mask[r, n:].any()
            assert mask[r].sum() >= 1


# ---- the predictor in the one rollout -------------------------------------------------------------


@pytest.mark.parametrize(
    "N, knobs, want",
    [
        (10, {}, [0, 1, 2, 3, 8]),  # w = int(3.0000000000000004) = 3
        (16, {}, [0, 1, 2, 3, 4, 9, 14]),  # w = int(4.8) = 4
        (20, {}, [0, 1, 2, 3, 4, 5, 6, 11, 16]),  # w = int(6.000000000000001) = 6
        (64, {}, list(range(20)) + [24, 29, 34, 39, 44, 49, 54, 59]),  # w = 19
        (3, {}, [0]),  # w = 0: then every 5th step
        (1, {}, [0]),
        (10, {"warmup": 0.5, "period": 3}, [0, 1, 2, 3, 4, 5, 8]),
        (8, {"warmup": 0.0, "period": 2}, [0, 2, 4, 6]),
    ],
)
def test_refresh_steps_follow_the_published_rule(N, knobs, want):
    assert MLCachePredictor(**knobs).full_steps(N) == want


def test_rollout_runs_the_predictors_refresh_steps(base):
    result, _ = run(base, SamplerConfig.for_base(base, 10), predictor=make_predictor("ml-cache:period=3"))
    assert result.full == [0, 1, 2, 3, 6, 9]
    with pytest.raises(MigmError, match="leave the budget"):
        run(base, SamplerConfig.for_base(base, 10, 4), predictor=make_predictor("ml-cache"))


def test_every_step_full_equals_vanilla_exactly(base):
    config = SamplerConfig.for_base(base, 8)
    vanilla, want = run(base, config)
    for knobs in ("warmup=1", "period=1"):
        predictor = make_predictor(f"ml-cache:{knobs}")
        got, features = run(base, config, predictor=predictor)
        assert got.full == list(range(8)) and predictor.recomputed_fraction is None
        assert torch.equal(got.tokens, vanilla.tokens) and torch.equal(got.order, vanilla.order)
        assert all(torch.equal(a, b) for a, b in zip(features, want))


def test_partial_steps_recompute_about_the_quantile(base):
    config = SamplerConfig.for_base(base, 10)
    vanilla, want = run(base, config)
    predictor = make_predictor("ml-cache")
    got, features = run(base, config, predictor=predictor)
    assert 0.1 <= predictor.recomputed_fraction < 0.2  # at or below the 10% quantile, a few ties and rounding
    assert all(torch.equal(features[s], want[s]) for s in range(4))  # the warm-up is vanilla
    assert not torch.equal(features[4], want[4])  # step 4 reuses cached positions
    assert ((got.tokens >= 0) & (got.tokens < base.V)).all()


def test_padded_batch_equals_each_prompt_alone(base):
    config = SamplerConfig.for_base(base, 10)
    together, features = run(base, config, predictor=make_predictor("ml-cache"), seed=5)
    seeds = sample_seeds(5, 0, len(PROMPTS))
    for i, prompt in enumerate(PROMPTS):
        alone_features = []
        alone = rollout(
            base,
            base.encode_prompts([prompt]),
            seeds[i : i + 1],
            config,
            predictor=make_predictor("ml-cache"),
            recorder=lambda s, feature, ids, pos: alone_features.append(feature.clone()),
        )
        assert torch.equal(alone.tokens[0], together.tokens[i])
        for batch, one in zip(features, alone_features):
            n = len(PROMPTS)
            got = torch.stack([batch[i, : one.shape[1]], batch[n + i, : one.shape[1]]])
            assert (got - one).abs().max() <= 1e-4 * one.abs().max()


# ---- names, knobs and the CLI ---------------------------------------------------------------------


def test_predictor_names_carry_knobs():
    p = make_predictor("ml-cache:warmup=0.2, period=4,quantile=0.25")
    assert (p.warmup, p.period, p.quantile) == (0.2, 4, 0.25)
    assert split_predictors("cache,ml-cache:warmup=0.2,period=4,taylor,ml-cache") == [
        "cache",
        "ml-cache:warmup=0.2,period=4",
        "taylor",
        "ml-cache",
    ]
    for spec, message in [
        ("ml-cache:period=0", "period must be an integer of at least 1"),
        ("ml-cache:period=2.5", "period must be an integer"),
        ("ml-cache:quantile=1.5", "must be in [0, 1]"),
        ("ml-cache:warmup=nan", "must be in [0, 1]"),
        ("ml-cache:speed=2", "ml-cache options are warmup=VALUE, period=VALUE, quantile=VALUE"),
        ("cache:order=2", "takes no options"),
        ("ml-cash", "unknown predictor 'ml-cash'"),
    ]:
        with pytest.raises(MigmError, match=message.replace("[", r"\[").replace("]", r"\]")):
            make_predictor(spec)


def base_args(ckpt: Path) -> list[str]:
    return ["--model", "dimoo", "--checkpoint", str(ckpt), "--height", "48", "--width", "48", "--device", "cpu"]


def test_cli_sample_with_ml_cache(ckpt, tmp_path):
    args = ["sample", *base_args(ckpt), "--prompt", "a red cat", "--prompt", "a dog", "--per-class", "2"]
    r = runner.invoke(app, [*args, "--steps", "10", "--predictor", "ml-cache", "--out", str(tmp_path / "a.png"), "-q", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["predictor"] == "ml-cache" and out["full_steps"] == [0, 1, 2, 3, 8] and (tmp_path / "a.png").exists()
    r = runner.invoke(app, [*args, "--steps", "10", "--predictor", "ml-cache:warmup=0,period=4", "--out", str(tmp_path / "b.png"), "-q", "--json"])  # fmt: skip
    assert r.exit_code == 0 and json.loads(r.stdout)["full_steps"] == [0, 4, 8], r.output
    r = runner.invoke(app, [*args, "--steps", "10", "--budget", "4", "--predictor", "ml-cache", "--out", str(tmp_path / "c.png")])  # fmt: skip
    assert r.exit_code == 2 and "leave the budget" in r.stderr and not (tmp_path / "c.png").exists()


def test_cli_bench_with_ml_cache(ckpt, tmp_path):
    out = tmp_path / "bench"
    r = runner.invoke(app, ["bench", *base_args(ckpt), "--prompt", "a red cat", "--prompt", "a dog", "--configs", "N8,N10B4", "--predictors", "cache,ml-cache,ml-cache:period=2", "--samples", "4", "--repeats", "1", "--batch-size", "4", "--out", str(out), "-q", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    data = json.loads((out / "results.json").read_text())
    rows = {(row["config"], row["method"]): row for row in data["rows"]}
    assert list(rows) == [
        ("N8", "vanilla"),
        ("N10", "vanilla"),
        ("N10B4", "cache"),
        ("N8", "ml-cache"),
        ("N8", "ml-cache:period=2"),
        ("N10", "ml-cache"),
        ("N10", "ml-cache:period=2"),
    ]
    for (_, method), row in rows.items():
        if method.startswith("ml-cache"):
            assert row["full_steps"] == MLCachePredictor(period=2 if "period" in method else 5).full_steps(row["N"])
            assert row["B"] == len(row["full_steps"]) and 0 < row["recomputed"] < 1
            partial = row["recomputed"] * data["costs"]["t_full"] + data["costs"]["t_head"]
            ideal = row["B"] * data["costs"]["t_full"] + (row["N"] - row["B"]) * partial
            ideal += row["N"] * data["costs"]["t_sampling_per_step"][str(row["N"])]
            assert math.isclose(row["ideal_s"], ideal, rel_tol=1e-9)
    assert "| N10 | ml-cache (B=5, " in (out / "results.md").read_text()


def test_ml_cache_on_a_maskgit_base_is_a_one_line_error(tmp_path):
    for args in (
        [
            "sample",
            "--model",
            "maskgit-digits",
            "--steps",
            "8",
            "--predictor",
            "ml-cache",
            "--out",
            str(tmp_path / "a.png"),
        ],  # fmt: skip
        [
            "bench",
            "--model",
            "maskgit-digits",
            "--configs",
            "N4",
            "--predictors",
            "ml-cache",
            "--out",
            str(tmp_path / "b"),
        ],  # fmt: skip
    ):
        r = runner.invoke(app, args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        assert lines[0].startswith("error: ml-cache needs a DiMOO-architecture base")
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b").exists()
