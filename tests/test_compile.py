"""`--compile` (trajectories/compile.py): compiled sampling gives the eager tokens at fp32 on CPU on both digits
bases, vanilla and shortcut; the padded new tokens a compiled shortcut gets change nothing; a toolchain that
cannot build kernels is a one-line error, a function that cannot be compiled or captured a one-line notice.

Inductor compiles on the CPU are slow: two compiled tests (one per base, vanilla and shortcut sharing the
compiled base), compile workers off (one process compiles faster on two shared cores)."""

import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import build_for_base
from migm.shortcut_zoo.predictors import ShortcutPredictor
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.compile import Compiled, compile_shortcut
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds

SHORTCUTS = {"maskgit-digits": "tiny-transformer", "dimoo-digits": "dimoo-transformer"}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    with torch._inductor.config.patch(compile_threads=1):
        yield
    torch._dynamo.reset()


def random_shortcut(base, arch: str) -> torch.nn.Module:
    """A shortcut with random weights everywhere (the zero init would make it the identity)."""
    torch.manual_seed(0)
    model = build_for_base(arch, base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def conditions(base) -> torch.Tensor:
    if base.text:  # prompts of different lengths: right-padded rows
        return base.encode_prompts(["a handwritten seven", "the digit 3", "zero"])
    return torch.tensor([1, 7, 3])


def sample(base, model, budget, features=None):
    config = SamplerConfig.for_base(base, 8, budget)
    predictor = ShortcutPredictor(model) if budget else None
    record = None if features is None else (lambda s, f, ids, pos: features.append(f.clone()))
    cond = conditions(base)
    return rollout(base, cond, sample_seeds(0, 0, len(cond)), config, predictor=predictor, recorder=record)


@pytest.mark.parametrize("name", ["maskgit-digits", "dimoo-digits"])
def test_compiled_sampling_gives_the_eager_tokens(name):
    eager_base = load_base(BaseSpec(name, device="cpu"))
    model = random_shortcut(eager_base, SHORTCUTS[name])
    expected = {budget: sample(eager_base, model, budget) for budget in (None, 3)}

    base = load_base(BaseSpec(name, device="cpu", compile=True))
    compiled = compile_shortcut(random_shortcut(base, SHORTCUTS[name]), "cpu")
    assert ShortcutPredictor(compiled).static_new_tokens  # the rollout pads its new tokens
    for budget in (None, 3):
        got = sample(base, compiled, budget)
        assert torch.equal(got.tokens, expected[budget].tokens)
        assert torch.equal(got.order, expected[budget].order)


class PaddedShortcut(ShortcutPredictor):
    static_new_tokens = True  # what a compiled shortcut asks for, on an eager one


@pytest.mark.parametrize("name", ["maskgit-digits", "dimoo-digits"])
def test_padded_new_tokens_give_the_unpadded_rollout(name):
    base = load_base(BaseSpec(name, device="cpu"))
    model = random_shortcut(base, SHORTCUTS[name])
    config = SamplerConfig.for_base(base, 8, 3)
    cond = conditions(base)
    runs = []
    for predictor in (ShortcutPredictor(model), PaddedShortcut(model)):
        features, widths = [], []
        forward = model.forward
        model.forward = lambda *a, **k: widths.append(a[1].shape[1]) or forward(*a, **k)
        try:
            result = rollout(
                base,
                cond,
                sample_seeds(0, 0, 3),
                config,
                predictor=predictor,
                recorder=lambda s, f, i, p: features.append(f),
            )
        finally:
            del model.forward
        runs.append((result, features, widths))
    (plain, plain_features, plain_widths), (padded, padded_features, padded_widths) = runs
    assert len(set(plain_widths)) > 1 and len(set(padded_widths)) == 1  # one width at every shortcut step
    assert max(padded_widths) >= max(plain_widths)
    assert torch.equal(plain.tokens, padded.tokens) and torch.equal(plain.order, padded.order)
    for a, b in zip(plain_features, padded_features):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)  # masked keys add exact zeros; sums may reorder


def test_a_step_no_cuda_graph_can_capture_runs_compiled_with_a_notice(capsys):
    linear = torch.nn.Linear(4, 4).eval().requires_grad_(False)
    step = Compiled(linear.forward, "the test step", graphs=True)  # on the CPU no graph is captured
    x = torch.randn(2, 4)
    with torch.no_grad():
        out = [step(x), step(x)]
    assert all(torch.allclose(o, linear(x)) for o in out)
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "no CUDA graph could be captured for the test step" in notices[0]


def test_a_function_inductor_cannot_build_runs_eager_with_a_notice(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # no kernel built earlier is found
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))
    step = Compiled(lambda x: x.cos() * 2.5 + 0.25, "the test step")
    x = torch.randn(3)
    with torch.no_grad():
        assert torch.equal(step(x), x.cos() * 2.5 + 0.25)
        step(x)  # eager from now on: no second notice
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and "the test step could not be compiled" in notices[0] and "runs eager" in notices[0]


def test_compile_without_a_cxx_compiler_is_a_one_line_error(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "migm.cli.main",
            "generate",
            "--compile",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "g.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --compile: torch.compile cannot build kernels on cpu")
    assert not (tmp_path / "g.png").exists()


def test_every_sampling_command_takes_compile_and_train_only_with_live(tmp_path):
    runner = CliRunner()
    for command in ("generate", "score", "sample", "bench", "dump-trajectories", "train"):
        assert "--compile" in runner.invoke(app, [command, "--help"]).output
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--compile"])
    assert r.exit_code == 2 and "--compile compiles the rollouts of --live" in r.output
