"""The one rollout replays the published sampling loops exactly: fed the uniforms the published loops drew
from (`tests/fixtures/published/sampler/`, see its README), it commits the same codes at the same steps
(tokens and unmasking order) for every MaskGIT and DiMOO run there, vanilla with and without CFG and with
the published shortcut files; and it places full steps as the published loops do for every (N, B)."""

import json

import pytest
import torch
from conftest import PUBLISHED
from safetensors.torch import load_file

from migm.shortcut_zoo.archs import build, build_for_base
from migm.shortcut_zoo.predictors import make_predictor
from migm.shortcut_zoo.published import published_arch_config, published_dimoo_arch_config
from migm.trajectories.base.checkpoints import load_state_dict, load_state_dict_strict
from migm.trajectories.base.dimoo_loading import load_dimoo
from migm.trajectories.base.maskgit import load_maskgit
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import SamplerConfig, rollout
from migm.trajectories.schedule import dimoo_schedule, full_steps, token_schedule

SAMPLER = PUBLISHED / "sampler"
META = json.loads((SAMPLER / "meta.json").read_text())
MASKGIT_RUNS = ["vanilla_cfg", "vanilla_w0", "shortcut_b4", "shortcut_b3"]
DIMOO_RUNS = ["vanilla_cfg", "vanilla_nocfg", "shortcut_b4", "shortcut_b2"]


def runs_of(family: str, file: str) -> dict[str, dict[str, torch.Tensor]]:
    """`<run>.<name>` keys of a fixture file, grouped by run."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(SAMPLER / file)).items():
        run, name = key.split(".", 1)
        out.setdefault(run, {})[name] = value
    assert sorted(out) == sorted(META[family]["runs"])
    return out


def committed_counts(order: torch.Tensor, steps: int) -> list[int]:
    """Cells committed at each step, read off one row's unmasking order."""
    return torch.bincount(order, minlength=steps)[:steps].tolist()


# --- MaskGIT ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def maskgit_runs() -> dict:
    return runs_of("maskgit", "maskgit.safetensors")


@pytest.fixture(scope="module")
def maskgit():
    fixtures = SAMPLER / META["maskgit"]["base"]["fixtures"]
    return load_maskgit(str(fixtures / "base.pth"), heads=META["maskgit"]["base"]["base"]["heads"])


@pytest.fixture(scope="module")
def maskgit_shortcut(maskgit):
    published = META["maskgit"]["base"]["shortcut"]
    file = SAMPLER / META["maskgit"]["base"]["fixtures"] / published["file"]
    state = load_state_dict(file, "state_dict", "shortcut state dict")
    model = build("tiny-transformer", **published_arch_config(state, str(file)), heads=published["num_heads"])
    load_state_dict_strict(model, state, str(file))
    return model.eval()


@pytest.mark.parametrize("run", MASKGIT_RUNS)
def test_rollout_replays_published_maskgit_run(maskgit_runs, maskgit, maskgit_shortcut, run):
    meta, ref = META["maskgit"]["runs"][run], maskgit_runs[run]
    config = SamplerConfig(
        steps=meta["N"], budget=meta["budget"], guidance=meta["w"], r_temp=meta["r_temp"], sm_temp=meta["sm_temp"]
    )
    predictor = make_predictor("shortcut", maskgit_shortcut) if meta["budget"] is not None else None
    labels = torch.tensor(meta["labels"])
    assert meta["null_label"] == maskgit.num_classes  # the null label is our unconditional class
    result = rollout(maskgit, labels, [0] * len(labels), config, predictor=predictor, noise=ref["U"])
    assert result.full == meta["full_steps"] == ref["full"].tolist()
    assert torch.equal(result.order, ref["order"])
    assert torch.equal(result.tokens, ref["tokens"])
    # the published loop stops at the first step that finds nothing masked: no step commits past it
    assert committed_counts(result.order[0], meta["N"])[: meta["steps_run"]] == meta["counts"]
    assert len(result.step_times) == meta["steps_run"]


def test_maskgit_schedule_is_the_published_one_with_its_trailing_zero():
    for run in MASKGIT_RUNS:
        meta = META["maskgit"]["runs"][run]
        assert token_schedule(META["maskgit"]["base"]["L"], meta["N"]) == meta["published_schedule"]


# --- DiMOO --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dimoo_runs() -> dict:
    return runs_of("dimoo", "dimoo.safetensors")


@pytest.fixture(scope="module")
def dimoo():
    base = META["dimoo"]["base"]
    return load_dimoo(str(SAMPLER / base["fixtures"] / "checkpoint"), grid=tuple(base["grid"]))


@pytest.fixture(scope="module")
def dimoo_shortcut(dimoo):
    file = SAMPLER / META["dimoo"]["base"]["fixtures"] / META["dimoo"]["base"]["shortcut"]["file"]
    state = load_state_dict(file, "state_dict", "shortcut state dict")
    model = build_for_base("dimoo-transformer", dimoo, **published_dimoo_arch_config(state, str(file)))
    load_state_dict_strict(model, state, str(file))
    return model.eval()


@pytest.mark.parametrize("run", DIMOO_RUNS)
def test_rollout_replays_published_dimoo_run(dimoo_runs, dimoo, dimoo_shortcut, run):
    meta, ref = META["dimoo"]["runs"][run], dimoo_runs[run]
    config = SamplerConfig(
        steps=meta["N"],
        budget=meta["budget"],
        guidance=meta["cfg_scale"],
        temperature=meta["temperature"],
        rule="dimoo",
    )
    prompts = dimoo.encode_prompts(meta["prompts"])
    width = ref["prompt_ids"].shape[1]
    assert torch.equal(torch.nn.functional.pad(prompts, (0, width - prompts.shape[1]), value=-1), ref["prompt_ids"])
    assert torch.equal(dimoo.null_cond(1)[0], ref["uncond_ids"])
    for p in range(len(meta["prompts"])):  # the published loop runs batch 1: one call per prompt
        predictor = make_predictor("shortcut", dimoo_shortcut) if meta["budget"] is not None else None
        cond = prompts[p : p + 1, : int((prompts[p] >= 0).sum())]
        result = rollout(dimoo, cond, [0], config, predictor=predictor, noise=ref["U"][p : p + 1])
        assert result.full == meta["full_steps"] == ref["full"].tolist()
        assert torch.equal(result.order[0], ref["order"][p])
        assert torch.equal(result.tokens[0], ref["tokens"][p])
        assert committed_counts(result.order[0], meta["N"]) == meta["counts"]


def test_dimoo_schedule_is_computed_in_float32_as_published():
    for run in DIMOO_RUNS:
        meta = META["dimoo"]["runs"][run]
        assert dimoo_schedule(META["dimoo"]["base"]["L"], meta["N"]) == meta["counts"]
    # 16·cos(π/3) is 8 exactly; the float32 cosine lands below it, so 7 cells stay masked, not 8
    assert dimoo_schedule(16, 6) == [1, 2, 2, 4, 3, 4]


# --- full-step placement ------------------------------------------------------------------------------


def test_full_steps_match_the_published_table_for_every_budget():
    table = load_file(str(SAMPLER / "placement.safetensors"))
    full, valid = table["full"].bool(), table["valid"]
    checked = 0
    for N in range(1, full.shape[0] + 1):
        for B in range(1, N + 1):
            if not valid[N - 1, B - 1]:
                assert B == 1  # the published loops refuse only B = 1 (see test below)
                continue
            assert full_steps(N, B) == full[N - 1, B - 1, :N].nonzero().flatten().tolist(), (N, B)
            checked += 1
    assert checked == sum(N - 1 for N in range(1, full.shape[0] + 1))
    assert full_steps(45, 10)[7] == 31  # round(45 · (7/10)): the float product lands below 31.5


def test_budget_of_one_runs_only_step_zero_where_the_published_loop_refuses():
    # migm's own rule where the published code asserts: step 0 is the one full step
    assert full_steps(7, 1) == [0]
    assert full_steps(1, 1) == [0]
    with pytest.raises(MigmError, match="budget"):
        full_steps(4, 5)
