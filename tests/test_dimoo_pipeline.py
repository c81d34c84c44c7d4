"""The DiMOO family end to end on a tiny random checkpoint in the released folder layout: its sampling
rule, padded batches, text datasets and their pairs, and the CLI from prompts to a bench."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_tiny_dimoo
from helpers import ok, refused
from typer.testing import CliRunner

from migm.shortcut_zoo.predictors import CachePredictor
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.rules import DIMOO_RULE, MASKGIT_RULE
from migm.trajectories.dump import StepRecorder
from migm.trajectories.pairs import all_pairs
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds, stack_cond
from migm.trajectories.schedule import dimoo_schedule, full_steps
from migm.trajectories.store.dataset import open_dataset
from migm.trajectories.store.schema import Dims

runner = CliRunner()
PROMPTS = ["a photo of a red cat", "a dog", "the quick brown fox jumps over a cat"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_dimoo(tmp_path_factory.mktemp("dimoo") / "ckpt")


@pytest.fixture(scope="module")
def base(ckpt):
    return load_base(BaseSpec(name="dimoo", checkpoint=str(ckpt), height=48, width=48, device="cpu"))


def base_args(ckpt: Path) -> list[str]:
    return ["--model", "dimoo", "--checkpoint", str(ckpt), "--height", "48", "--width", "48"]


# ---- the DiMOO sampling rule ----------------------------------------------------------------------


@pytest.mark.parametrize("L, N", [(9, 8), (64, 16), (1024, 64), (4096, 64), (5, 1)])
def test_dimoo_schedule_keeps_the_published_count_masked(L, N):
    counts = dimoo_schedule(L, N)
    assert sum(counts) == L and all(c >= 0 for c in counts)
    masked = L
    for s, c in enumerate(counts):
        masked -= c
        expected = max(1, math.floor(L * math.cos(math.pi / 2 * (s + 1) / N))) if s < N - 1 else 0
        assert masked == min(expected, masked + c)


def test_dimoo_rule_keeps_guidance_constant_and_maskgit_ramps_it():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert [float(DIMOO_RULE.guide(c, u, 4.0, s, 10)) for s in (0, 5, 9)] == [6.0, 6.0, 6.0]  # (1+4)·2 − 4·1
    assert [float(MASKGIT_RULE.guide(c, u, 3.0, s, 4)) for s in (0, 3)] == [2.0, 5.0]  # w_s = 0, then 3


def test_base_brings_its_rule_and_defaults(base):
    config = SamplerConfig.for_base(base, 8)
    assert (config.rule, config.guidance, config.temperature) == ("dimoo", 4.0, 1.0)
    assert base.sampler_defaults["steps"] == 64


# ---- the rollout on a text base -------------------------------------------------------------------


def test_full_budget_equals_vanilla_exactly(base):
    cond = base.encode_prompts(PROMPTS)
    seeds = sample_seeds(0, 0, len(PROMPTS))
    vanilla = rollout(base, cond, seeds, SamplerConfig.for_base(base, 8))
    full = rollout(base, cond, seeds, SamplerConfig.for_base(base, 8, 8), predictor=CachePredictor())
    assert torch.equal(vanilla.tokens, full.tokens) and torch.equal(vanilla.order, full.order)
    assert ((vanilla.tokens >= 0) & (vanilla.tokens < base.V)).all()


def test_padded_batches_equal_batch_one(base):
    """Prompts of different lengths in one batch (both CFG branches right-padded together) give each
    sample the features and tokens it gets alone."""
    config = SamplerConfig.for_base(base, 6)
    cond = base.encode_prompts(PROMPTS)
    seeds = sample_seeds(3, 0, len(PROMPTS))
    dims = Dims(N=6, L=base.L, C=40, D=base.D, V=base.V)
    together = StepRecorder(len(PROMPTS), 2, dims)
    batch = rollout(base, cond, seeds, config, recorder=together)
    for i in range(len(PROMPTS)):
        alone = StepRecorder(1, 2, dims)
        one = rollout(base, cond[i : i + 1, : int((cond[i] >= 0).sum())], seeds[i : i + 1], config, recorder=alone)
        assert torch.equal(one.tokens[0], batch.tokens[i])
        got, want = together.features[2 * i : 2 * i + 2].astype(np.float32), alone.features.astype(np.float32)
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()  # float16 storage of equal fp32 values


def test_padded_positions_of_the_feature_are_zero(base):
    rows = stack_cond(base.encode_prompts(PROMPTS), base.null_cond(len(PROMPTS)))
    tokens = torch.full((len(rows), base.L), base.mask_id)
    _, feature = base.forward(tokens, rows)
    valid = base.feature_valid(rows)
    assert feature.shape[1] == valid.shape[1] and not valid.all()
    assert (feature[~valid] == 0).all() and (feature[valid].abs().sum(-1) > 0).all()


# ---- text datasets and their pairs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(ckpt, tmp_path_factory):
    root = tmp_path_factory.mktemp("dimoo-data")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    out = root / "ds"
    ok(
        [
            "dump-trajectories",
            *base_args(ckpt),
            "--prompts",
            str(root / "prompts.txt"),
            "--num-samples",
            "12",
            "--steps",
            "8",
            "--shard-size",
            "4",
            "--batch-size",
            "3",
            "--out",
            str(out),
            "-q",
        ]
    )
    return out


def test_text_dataset_rows_carry_their_prompt_and_length(dataset, base):
    manifest = json.loads((dataset / "dataset.json").read_text())
    assert manifest["text"]["prompts"] == PROMPTS and manifest["classes"] == [0, 1, 2]
    assert manifest["sampler"]["rule"] == "dimoo"
    ds = open_dataset(dataset)
    rows = ds.rows(0, len(ds))
    assert rows["cond"].tolist() == [(i // 2) % 3 for i in range(24)]
    cond_ids = base.encode_prompts(PROMPTS)
    for i in range(6):
        prompt = rows["prompt_ids"][i][rows["prompt_ids"][i] >= 0]
        expected = cond_ids[rows["cond"][i]] if rows["branch"][i] == 0 else base.null_cond(1)[0]
        assert prompt.tolist() == expected[expected >= 0].tolist()
        length = int(rows["length"][i])
        assert (rows["features"][i][:, length:] == 0).all() and (
            np.abs(rows["features"][i][:, :length]).sum(-1) > 0
        ).all()
        assert rows["cells"][i].tolist() == base.cells(torch.tensor(rows["prompt_ids"][i])[None])[0].tolist()


def test_text_pairs_are_the_samplers_new_tokens(dataset, base):
    """A pair's new tokens are those the sampler hands the shortcut at that step: every prompt token
    in the conditional row, the committed cells (as sequence ids at their positions) in both."""
    ds = open_dataset(dataset)
    rows = ds.rows(0, 2)  # sample 0: conditional, unconditional
    pairs = all_pairs(rows, ds.dims.V, ds.manifest.text["image_offset"])
    N = ds.dims.N
    for s in range(N - 1):
        cells = np.flatnonzero(rows["order"][0] == s)
        new_ids = torch.tensor(rows["tokens"][0][cells], dtype=torch.long)[None]
        cond = torch.tensor(rows["prompt_ids"][:2], dtype=torch.long)
        emb, pos, valid = base.new_tokens(new_ids, torch.tensor(cells)[None], cond, torch.tensor([0, 1]))
        for r in range(2):
            i = r * (N - 1) + s
            v, sel = pairs["new_valid"][i], valid[r]
            got_pos, want_pos = pairs["new_pos"][i][v], pos[r][sel]
            got_emb, want_emb = base.embed(pairs["new_ids"][i][v][None])[0], emb[r][sel]
            go, wo = got_pos.argsort(), want_pos.argsort()
            assert torch.equal(got_pos[go], want_pos[wo]) and torch.equal(got_emb[go], want_emb[wo])
            assert len(got_pos) == len(cells) + (int((cond[0] >= 0).sum()) if r == 0 else 0)
        assert pairs["feat_valid"][s].sum() == rows["length"][0]


# ---- the CLI from prompts to a bench --------------------------------------------------------------


def test_cli_generate_train_sample_bench(ckpt, dataset, tmp_path):
    args = base_args(ckpt)
    ok(["generate", *args, "--prompt", "a red cat", "--prompt", "a dog", "--per-class", "2", "--steps", "4",
        "--out", str(tmp_path / "grid.png"), "-q"])  # fmt: skip
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert (tmp_path / "grid.txt").read_text() == "row 1: a red cat\nrow 2: a dog\n"
    ok(["verify", str(dataset)])
    zoo = tmp_path / "zoo" / "dt"
    ok(["train", "--data", str(dataset), *args, "--arch", "dimoo-transformer", "--steps", "20", "--batch-size", "16",
        "--out", str(zoo), "-q"])  # fmt: skip
    config = json.loads((zoo / "config.json").read_text())
    assert config["arch"] == "dimoo-transformer" and config["arch_config"]["heads"] == 4
    out = ok(["sample", *args, "--shortcut", str(zoo), "--prompt", "a red cat", "--per-class", "2", "--steps", "8",
              "--budget", "3", "--out", str(tmp_path / "s.png"), "--json", "-q"])  # fmt: skip
    assert json.loads(out)["full_steps"] == full_steps(8, 3)
    ok(["bench", *args, "--shortcut", str(zoo), "--prompt", "a red cat", "--prompt", "a dog", "--configs", "N8,N8B4",
        "--samples", "4", "--repeats", "1", "--batch-size", "4", "--out", str(tmp_path / "bench"), "-q", "--json"])  # fmt: skip
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"vanilla", "shortcut:dt", "cache", "taylor"}


def test_cli_refuses_bad_text_input(ckpt, tmp_path):
    args = base_args(ckpt)
    (tmp_path / "empty.txt").write_text("\n  \n")
    out = str(tmp_path / "g.png")
    assert "holds no prompt" in refused(["generate", *args, "--prompts", str(tmp_path / "empty.txt"), "--out", out])
    assert "text-to-image" in refused(["generate", *args, "--out", out])
    assert "not --classes" in refused(["generate", *args, "--classes", "0-3", "--prompt", "x", "--out", out])
    assert "multiple of 16" in refused(
        ["generate", *base_args(ckpt)[:4], "--height", "40", "--prompt", "x", "--out", out]
    )
    assert "class-conditional" in refused(["generate", "--prompt", "a cat", "--out", out])
    assert "cannot read" in refused(["generate", *args, "--prompts", str(tmp_path / "missing.txt"), "--out", out])


def test_text_rows_are_the_same_in_parquet(ckpt, dataset, tmp_path):
    """The Hub's Parquet layout holds the same text rows as Zarr (same seeds and batches), and verifies."""
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    out = tmp_path / "pq"
    ok(["dump-trajectories", *base_args(ckpt), "--prompts", str(tmp_path / "p.txt"), "--num-samples", "4",
        "--steps", "8", "--shard-size", "4", "--batch-size", "3", "--format", "parquet", "--out", str(out), "-q"])  # fmt: skip
    ok(["verify", str(out)])
    zarr_rows, parquet_rows = open_dataset(dataset).rows(0, 8), open_dataset(out).rows(0, 8)
    for name in ("features", "tokens", "order", "length", "cells", "prompt_ids", "cond", "branch"):
        assert np.array_equal(zarr_rows[name], parquet_rows[name]), name
