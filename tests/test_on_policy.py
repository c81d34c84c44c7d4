"""On-policy live training and budget-aware chains: the pairs are the states the shortcut visits when
it samples, training resumes exactly, and the zoo folder records how it was trained."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import build_for_base
from migm.shortcut_zoo.evaluate import predict
from migm.shortcut_zoo.on_policy import chain_loss
from migm.shortcut_zoo.predictors import ShortcutPredictor
from migm.shortcut_zoo.train import TrainConfig, shortcut_loss, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.protocol import PredictorDefaults
from migm.trajectories.dump import rollout_rows
from migm.trajectories.generate import sample_many
from migm.trajectories.live import LiveConfig, chain_batch, chain_windows, live_plan
from migm.trajectories.on_policy import OnPolicyConfig, on_policy_rows
from migm.trajectories.pairs import pair_batch, split_window
from migm.trajectories.rollout import SamplerConfig

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
SPEC = BaseSpec("maskgit-digits", device="cpu")
runner = CliRunner()
# N = 6, rollout batches of 2 samples (4 rows), 2 of them in the buffer
LIVE = LiveConfig(steps=6, classes=[1, 4, 7], batch_size=2, buffer=40, replay=4.0, val_samples=2)
TINY = dict(arch="mlp", steps=12, batch_size=16, save_every=5, warmup=2, seed=3)


def random_shortcut(seed: int = 0):
    torch.manual_seed(seed)
    model = build_for_base("mlp", DIGITS)
    for p in model.parameters():  # the zero-initialised output would make the shortcut a cache
        torch.nn.init.normal_(p, std=0.05)
    return model.eval()


class Watch(PredictorDefaults):
    """The shortcut as `sample` runs it, recording what each shortcut step is given and what the base
    computes on the sampler's state there."""

    needs_state = True

    def __init__(self, model):
        self.inner = ShortcutPredictor(model)
        self.seen = []  # (step, input feature, base's feature)

    def predict(self, step, feature, *rest, base, tokens, cond, **kw):
        self.seen.append((step, feature.clone(), base.forward(tokens, cond)[1]))
        return self.inner.predict(step, feature, *rest, **kw)


def test_on_policy_pairs_are_the_states_sample_visits():
    p = live_plan(DIGITS, LIVE, seed=5)
    model = random_shortcut()
    N, B, n = 6, 2, 3
    rows = on_policy_rows(DIGITS, p, 0, n, ShortcutPredictor(model), budget=B)
    # `sample` with that shortcut and seed: samples 0..n-1 of the same classes
    watch = Watch(model)
    labels = torch.tensor([LIVE.classes[i % 3] for i in range(n)])
    config = SamplerConfig(**{**p.sampler.to_dict(), "budget": B})
    drawn = sample_many(DIGITS, labels, config, seed=5, predictor=watch)
    assert np.array_equal(rows["tokens"][::2], drawn.tokens.numpy())  # the same final grids
    visited = [step for step, _, _ in watch.seen]
    assert visited == [1, 2, 4, 5] and rows["visited"][0].tolist() == [s in visited for s in range(N)]

    def sample_major(t):  # rollout rows are branch-major, dataset rows sample-major
        return t.to(torch.float16).view(2, n, *t.shape[1:]).transpose(0, 1).reshape(t.shape).numpy()

    for step, given, true in watch.seen:
        # the pair feeding step s: the feature the sampler had after step s-1, and the base's f_s there
        assert np.array_equal(rows["features"][:, step - 1], sample_major(given))
        assert np.array_equal(rows["true"][:, step], sample_major(true))
    # teacher-forced rows of the same samples: other states, other pairs
    teacher = rollout_rows(DIGITS, p, 0, n)
    assert not np.array_equal(teacher["tokens"], rows["tokens"])
    assert not np.allclose(teacher["features"][:, 1], rows["features"][:, 1])
    # a drawn pair: the sampler's new tokens of step s, its feature, the base's next feature
    batch = pair_batch(rows, np.array([0, 3]), np.array([1, 3]), DIGITS.V)
    new = np.sort(np.flatnonzero(rows["order"][0] == 1))
    assert np.array_equal(np.sort(batch["new_pos"][0][batch["new_valid"][0]].numpy()), new)


def test_on_policy_training_resumes_exactly_and_records_how_it_trained(tmp_path):
    op = OnPolicyConfig(fraction=0.5, budgets=[2, 3], start=3)
    cfg = dict(data=None, live=LIVE, on_policy=op, **TINY)
    straight = train(TrainConfig(out=str(tmp_path / "a"), **cfg), SPEC)
    # rollouts at steps 3 and 10; stopped at 7, the buffer holds the batch rolled out with step 3's weights
    part = train(TrainConfig(out=str(tmp_path / "b"), stop_at=7, **cfg), SPEC)
    assert part["stopped_at"] == 7
    ckpt = load_file(str(tmp_path / "b" / "checkpoint" / "extra.safetensors"))
    assert {k.partition(".")[0] for k in ckpt} == {"0"}
    resumed = train(TrainConfig(out=str(tmp_path / "b"), **cfg), SPEC, resume=True)
    assert resumed["losses"] == straight["losses"] and len(straight["losses"]) == 12
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # teacher-forced only, same seed: other losses from step 3 on (the first on-policy batch)
    plain = train(TrainConfig(out=str(tmp_path / "c"), data=None, live=LIVE, **TINY), SPEC)
    assert plain["losses"][:3] == straight["losses"][:3] and plain["losses"][3:] != straight["losses"][3:]

    config = json.loads((tmp_path / "a" / "config.json").read_text())
    recorded = config["dataset"]["live"]["on_policy"]
    assert recorded == {"fraction": 0.5, "budgets": [2, 3], "start": 3, "ramp": 0, "rollout_batches": 2}
    assert config["training"]["on_policy"]["budgets"] == [2, 3]
    card = (tmp_path / "a" / "README.md").read_text()
    assert "on-policy (DAgger): 50% of each batch from 2 rollout batches" in card and "N6B2, N6B3" in card
    # a resume with another on-policy schedule draws other pairs: refused
    other = TrainConfig(out=str(tmp_path / "b"), **{**cfg, "on_policy": OnPolicyConfig(fraction=0.25, budgets=[2])})
    with pytest.raises(Exception, match="another dataset"):
        train(other, SPEC, resume=True)


def test_chains_run_between_the_full_steps_of_the_budget():
    assert [a.tolist() for a in chain_windows(16, 4)] == [[0, 4, 8, 12], [3, 3, 3, 3]]
    assert [a.tolist() for a in chain_windows(7, 3)] == [[0, 2, 5], [1, 2, 1]]  # full steps 0, 2, 5
    rows = rollout_rows(DIGITS, live_plan(DIGITS, LiveConfig(**{**vars(LIVE), "steps": 7}), seed=1), 2, 4)
    model = random_shortcut(1)
    r = np.array([0, 1, 2, 3, 1, 2])
    batch = chain_batch(rows, r, np.random.default_rng(0), chain_windows(7, 3), 7, DIGITS.V)
    first = split_window(batch, 2)[0]["step"].numpy()
    assert set(first.tolist()) == {0, 2, 5}  # chains 0 → 1, 2 → 3, 4 and 5 → 6: pairs 0; 2, 3; 5
    cfg = TrainConfig(data=None, rollout_weights=[1.0, 3.0])
    got = chain_loss(model, DIGITS, batch, cfg, shortcut_loss)
    # written out: from the full step's true feature; the second step only on the chain of length 2
    step0 = pair_batch(rows, r, first, DIGITS.V)
    pred0 = predict(model, DIGITS, step0)
    two = first == 2
    step1 = pair_batch(rows, r[two], first[two] + 1, DIGITS.V)
    pred1 = predict(model, DIGITS, {**step1, "feature": pred0[torch.from_numpy(two)]})
    want = (shortcut_loss(pred0, step0, DIGITS, cfg) + 3 * shortcut_loss(pred1, step1, DIGITS, cfg)) / 4
    assert torch.allclose(got, want, rtol=1e-5)


def test_chain_training_runs_with_the_kl_term_and_is_recorded(tmp_path):
    cfg = TrainConfig(data=None, out=str(tmp_path / "z"), live=LIVE, chain_budget=2, loss="mse+kl", **TINY)
    result = train(cfg, SPEC)
    assert len(result["losses"]) == 12 and all(np.isfinite(result["losses"]))
    assert json.loads((tmp_path / "z" / "config.json").read_text())["training"]["chain_budget"] == 2


def test_bad_on_policy_and_chain_options_are_one_line_errors(tmp_path):
    args = ["train", "--live", "--model", "maskgit-digits", "--device", "cpu", "--arch", "mlp", "--steps", "2"]
    args += ["--sampling-steps", "6", "--live-batch", "2", "--buffer", "20", "--val-samples", "2"]
    out = ["--out", str(tmp_path / "x")]
    cases = [
        (["train", "--data", str(tmp_path), "--on-policy", "0.5", *out], "add --live --model NAME"),
        ([*args, "--on-policy", "1.5", *out], "in (0, 1]"),
        ([*args, "--on-policy", "0.5", "--on-policy-budget", "6", *out], "1 <= B < N = 6"),
        ([*args, "--on-policy", "0.5", "--on-policy-budget", "2,x", *out], "comma-separated budgets"),
        ([*args, "--on-policy-start", "3", *out], "go with --on-policy SHARE"),
        ([*args, "--chain-budget", "2", "--rollout", "2", *out], "leave --rollout at 1"),
        ([*args, "--chain-budget", "6", *out], "--chain-budget B must satisfy 1 <= B < N = 6"),
        ([*args, "--chain-budget", "2", "--rollout-weights", "1,2,3", *out], "longest chain (2)"),
    ]
    for case, message in cases:
        bad = runner.invoke(app, case)
        assert bad.exit_code == 2 and message in bad.stderr and "Traceback" not in bad.output, (case, bad.output)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
