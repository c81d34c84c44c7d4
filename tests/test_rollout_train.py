"""k-step rollout training: K = 1 is one-step training, windows stay inside trajectories."""

import json
import math

import numpy as np
import pytest
import torch
from accelerate.utils import set_seed
from conftest import write_tiny_dimoo
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import ARCHS, build_for_base
from migm.shortcut_zoo.evaluate import predict
from migm.shortcut_zoo.export import read_step_errors
from migm.shortcut_zoo.train import TrainConfig, get_lr, rollout_loss, shortcut_loss, split_rows, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError
from migm.trajectories.pairs import PairStream, pair_batch, pair_loader, split_window, window_batch
from migm.trajectories.store.dataset import open_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")
TINY = dict(steps=8, batch_size=16, save_every=8, val_fraction=0.25, warmup=2, lr=3e-3)
MASKGIT_ARCHS = sorted(set(ARCHS) - {"dimoo-transformer"})
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout") / "ds"
    dump_trajectories(DumpConfig(num_samples=12, steps=6, shard_size=8, out=str(out)), DIGITS)
    return out


def one_step_reference(cfg: TrainConfig) -> tuple[list[float], dict]:
    """One-step training written out from the public pieces: pairs (f_s → f_{s+1}) in the stream's
    order, the shortcut loss, AdamW with the schedule and clipping of `train`."""
    set_seed(cfg.seed)
    base = load_base(BaseSpec("maskgit-digits", device="cpu"))
    model = build_for_base(cfg.arch, base, **cfg.arch_config)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ds = open_dataset(cfg.data)
    train_rows, _ = split_rows(ds.manifest, cfg.val_fraction, cfg.seed)
    stream = PairStream(ds, batch_size=cfg.batch_size, rows=train_rows, seed=cfg.seed)
    losses, epoch = [], 0
    while len(losses) < cfg.steps:
        stream.set_epoch(epoch)
        for batch in pair_loader(stream):
            for group in opt.param_groups:
                group["lr"] = get_lr(len(losses), cfg)
            loss = shortcut_loss(predict(model, base, batch), batch, base, cfg)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if len(losses) == cfg.steps:
                break
        epoch += 1
    return losses, model.state_dict()


@pytest.mark.parametrize("arch", ["tiny-transformer", "gru"])
def test_k1_is_one_step_training(data, tmp_path, arch):
    options = {"heads": 2} if arch == "tiny-transformer" else {}
    cfg = TrainConfig(data=str(data), arch=arch, out=str(tmp_path / arch), arch_config=options, rollout=1, **TINY)
    result = train(cfg, CPU)
    losses, weights = one_step_reference(cfg)
    assert result["losses"] == losses
    trained = load_file(str(tmp_path / arch / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(trained[k], weights[k]) for k in weights)


def test_windows_stay_inside_trajectories_and_cover_each_once(data):
    ds = open_dataset(data)
    N, K = ds.dims.N, 3
    stream = PairStream(ds, batch_size=7, seed=1, window=K)
    seen = []
    for batch in pair_loader(stream):
        steps = split_window(batch, K)
        s0 = steps[0]["step"]
        for k, step in enumerate(steps):
            assert torch.equal(step["step"], s0 + k) and torch.equal(step["cond"], steps[0]["cond"])
            if k:  # the next pair starts from the feature the previous one ends at: the same row
                assert torch.equal(step["feature"], steps[k - 1]["target"])
        assert int(steps[-1]["step"].max()) <= N - 2  # the last target is f_{N-1} at most
        last = steps[-1]  # a window: its start, and its row by branch and token state after its last step
        seen += [(int(s), int(last["branch"][i]), tuple(last["tokens"][i].tolist())) for i, s in enumerate(s0)]
    assert len(seen) == len(set(seen)) == len(ds) * (N - K) == stream.num_pairs()


def test_the_rollout_loss_chains_the_shortcuts_own_features(data):
    """K = 2 with weights (1, 2): step s from the true f_s, step s+1 from the prediction, each against
    the recorded next feature, (l0 + 2·l1) / 3; pairs built one step at a time give the same loss."""
    torch.manual_seed(0)
    model = build_for_base("mlp", DIGITS)
    for p in model.parameters():  # the zero-initialised output would hide the chaining
        torch.nn.init.normal_(p, std=0.05)
    ds = open_dataset(data)
    rows = ds.rows(0, 4)
    r, s = np.array([0, 1, 2, 3]), np.array([0, 2, 1, 3])
    cfg = TrainConfig(data=str(data), rollout=2, rollout_weights=[1.0, 2.0])
    got = rollout_loss(model, DIGITS, window_batch(rows, r, s, 2, ds.dims.V), cfg)
    first, second = (pair_batch(rows, r, s + k, ds.dims.V) for k in range(2))
    pred0 = predict(model, DIGITS, first)
    pred1 = predict(model, DIGITS, {**second, "feature": pred0})
    want = (shortcut_loss(pred0, first, DIGITS, cfg) + 2 * shortcut_loss(pred1, second, DIGITS, cfg)) / 3
    assert torch.allclose(got, want, rtol=1e-5)
    one_step = shortcut_loss(predict(model, DIGITS, second), second, DIGITS, cfg)  # from the true f_{s+1}
    assert not torch.allclose(got, (shortcut_loss(pred0, first, DIGITS, cfg) + 2 * one_step) / 3)


@pytest.mark.parametrize("arch", MASKGIT_ARCHS)
def test_every_arch_trains_with_rollout_and_stores_step_errors(data, tmp_path, arch):
    options = {"heads": 2} if arch == "tiny-transformer" else {}
    cfg = TrainConfig(data=str(data), arch=arch, out=str(tmp_path / arch), arch_config=options, rollout=3, **TINY)
    result = train(cfg, CPU)
    assert len(result["losses"]) == TINY["steps"] and all(math.isfinite(x) for x in result["losses"])
    config = json.loads((tmp_path / arch / "config.json").read_text())
    assert config["training"]["rollout"] == 3
    table = read_step_errors(tmp_path / arch)
    N = open_dataset(data).dims.N
    assert table["N"] == N and [len(row) for row in table["error"]] == list(range(N - 1, 0, -1))
    assert all(0 <= v <= 2 for row in table["error"] for v in row)


def test_rollout_options_are_checked(data, tmp_path):
    for args, message in [
        (["--rollout", "0"], "--rollout must be at least 1"),
        (["--rollout", "6"], "a rollout window must be 1 to N - 1 = 5"),
        (["--rollout", "2", "--rollout-weights", "1"], "one weight per chained step (2)"),
        (["--rollout", "2", "--rollout-weights", "1,x"], "comma-separated numbers"),
        (["--rollout", "2", "--rollout-weights", "0,0"], "not all 0"),
    ]:
        r = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "z"), "--steps", "2", *args])
        assert r.exit_code == 2 and message in r.stderr, (args, r.output)


def test_resume_with_another_rollout_is_refused(data, tmp_path):
    out, mlp = tmp_path / "r", dict(data=str(data), out=str(tmp_path / "r"), arch="mlp", **TINY)
    train(TrainConfig(rollout=2, stop_at=2, **mlp), CPU)
    with pytest.raises(MigmError, match="trained with --rollout 2; resume with --rollout 2"):
        train(TrainConfig(**mlp), CPU, resume=True)
    assert len(train(TrainConfig(rollout=2, **mlp), CPU, resume=True)["losses"]) == 8
    assert read_step_errors(out)["N"] == 6


def test_text_rows_train_with_rollout(tmp_path):
    """A DiMOO (text) dataset: padded rows with `feat_valid`, prompt tokens among the new tokens of the
    conditional rows; windows chain the same way as pairs built one step at a time, and training stores
    the step errors."""
    ckpt = write_tiny_dimoo(tmp_path / "ckpt")
    spec = BaseSpec(name="dimoo", checkpoint=str(ckpt), height=48, width=48, device="cpu")
    base = load_base(spec)
    prompts = ["a photo of a red cat", "a dog", "the quick brown fox jumps over a cat"]
    dump_trajectories(DumpConfig(num_samples=6, steps=5, shard_size=6, out=str(tmp_path / "ds"), prompts=prompts), base)
    ds = open_dataset(tmp_path / "ds")
    offset = ds.manifest.text["image_offset"]
    rows = ds.rows(0, len(ds))
    torch.manual_seed(0)
    model = build_for_base("dimoo-transformer", base)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    r, s = np.arange(len(ds)), np.arange(len(ds)) % 3
    cfg = TrainConfig(data=str(tmp_path / "ds"), rollout=2)
    batch = window_batch(rows, r, s, 2, ds.dims.V, offset)
    assert batch["feat_valid"].shape == batch["feature"].shape[:2] and not batch["feat_valid"].all()
    first, second = (pair_batch(rows, r, s + k, ds.dims.V, offset) for k in range(2))
    pred0 = predict(model, base, first)
    want = (
        shortcut_loss(pred0, first, base, cfg)
        + shortcut_loss(predict(model, base, {**second, "feature": pred0}), second, base, cfg)
    ) / 2
    assert torch.allclose(rollout_loss(model, base, batch, cfg), want, rtol=1e-4)
    out = tmp_path / "dt"
    result = train(
        TrainConfig(data=str(tmp_path / "ds"), arch="dimoo-transformer", out=str(out), rollout=2, **TINY), spec
    )
    assert all(math.isfinite(x) for x in result["losses"]) and read_step_errors(out)["N"] == 5
