"""The one sampling loop: determinism, per-sample seeds, recorder and predictor plumbing."""

import pytest
import torch

from migm.trajectories.base.protocol import PredictorDefaults
from migm.trajectories.dump import DumpConfig, plan
from migm.trajectories.errors import MigmError
from migm.trajectories.rollout import SamplerConfig, rollout, sample_seeds
from migm.trajectories.schedule import token_schedule

CFG = SamplerConfig(steps=6, guidance=2.0, r_temp=2.0)


def run(base, seed, n=6, **kw):
    cond = torch.arange(n) % base.num_classes
    return rollout(base, cond, sample_seeds(seed, 0, n), kw.pop("config", CFG), **kw)


def test_same_seed_same_tokens_different_seed_different_tokens(tiny_base):
    a, b, c = run(tiny_base, 0), run(tiny_base, 0), run(tiny_base, 1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.order, b.order)
    assert not torch.equal(a.tokens, c.tokens)


def test_all_tokens_unmasked_in_schedule_order(tiny_base):
    r = run(tiny_base, 0)
    assert (r.tokens < tiny_base.V).all() and (r.tokens >= 0).all()
    counts = token_schedule(tiny_base.L, CFG.steps)
    for s, k in enumerate(counts):
        assert ((r.order == s).sum(-1) == k).all()
    assert len(r.step_times) == CFG.steps and r.total_time > 0


def test_a_sample_does_not_depend_on_its_batch(tiny_base):
    whole = run(tiny_base, 3, n=6)
    cond = torch.arange(6) % tiny_base.num_classes
    seeds = sample_seeds(3, 0, 6)
    part = rollout(tiny_base, cond[4:], seeds[4:], CFG)
    assert torch.equal(whole.tokens[4:], part.tokens)


def test_recorder_sees_every_step_of_both_branches(tiny_base):
    seen = []
    r = run(tiny_base, 0, recorder=lambda s, f, ids, pos: seen.append((s, f.shape, ids.clone(), pos.clone())))
    assert [s for s, *_ in seen] == list(range(CFG.steps))
    L, C, D = tiny_base.L, tiny_base.C, tiny_base.D
    assert all(shape == (12, L + C, D) for _, shape, _, _ in seen)  # 6 samples x 2 CFG branches
    for s, _, ids, pos in seen:
        assert (r.order.gather(1, pos) == s).all() and torch.equal(r.tokens.gather(1, pos), ids)


class RecordingCache(PredictorDefaults):
    """Minimal predictor: returns the last feature, and logs what the loop hands it."""

    def __init__(self):
        self.calls = []

    def reset(self):
        self.calls.clear()

    def observe(self, step, feature):
        self.calls.append(("observe", step))

    def predict(self, step, feature, new_emb, new_pos, new_valid, mask_ratio):
        self.calls.append(("predict", step, new_emb.shape, mask_ratio[0].item()))
        return feature


def test_budget_equal_to_steps_is_vanilla(tiny_base):
    vanilla = run(tiny_base, 5)
    p = RecordingCache()
    full = run(tiny_base, 5, config=SamplerConfig(**{**CFG.to_dict(), "budget": CFG.steps}), predictor=p)
    assert torch.equal(vanilla.tokens, full.tokens)
    assert all(c[0] == "observe" for c in p.calls)


def test_predictor_runs_the_shortcut_steps(tiny_base):
    p = RecordingCache()
    r = run(tiny_base, 5, config=SamplerConfig(**{**CFG.to_dict(), "budget": 2}), predictor=p)
    assert r.full == [0, 3]
    assert [c[:2] for c in p.calls] == [
        ("observe", 0),
        ("predict", 1),
        ("predict", 2),
        ("observe", 3),
        ("predict", 4),
        ("predict", 5),
    ]
    counts = token_schedule(tiny_base.L, CFG.steps)
    _, step, emb_shape, ratio = p.calls[1]  # step 1 gets the tokens unmasked at step 0
    assert emb_shape == (12, counts[0], tiny_base.D)
    assert abs(ratio - (tiny_base.L - counts[0]) / tiny_base.L) < 1e-6


def test_without_guidance_one_branch(tiny_base):
    shapes = []
    run(
        tiny_base, 0, config=SamplerConfig(steps=4, guidance=0.0), recorder=lambda s, f, i, p: shapes.append(f.shape[0])
    )
    assert shapes == [6] * 4


def test_a_schedule_that_reaches_every_cell_early_stops_the_loop_and_cannot_be_dumped(tiny_base, tmp_path):
    """L = 16, N = 12: the published arccos counts end in 0, so the loop (as published) runs 11 steps;
    a dataset needs a feature at every step, so the dump refuses that N."""
    config = SamplerConfig(steps=12, guidance=2.0, r_temp=2.0)
    steps = []
    r = run(tiny_base, 0, config=config, recorder=lambda s, f, i, p: steps.append(s))
    assert steps == list(range(11)) and len(r.step_times) == 11
    assert (r.order < 11).all() and (r.tokens < tiny_base.V).all()
    with pytest.raises(MigmError, match="after 11 steps"):
        plan(DumpConfig(out=str(tmp_path / "d"), num_samples=2, steps=12), tiny_base)
