"""k-step rollout training: K = 1 is one-step training, windows stay inside trajectories."""

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

from shortcut_zoo.archs import build_for_base
from shortcut_zoo.evaluate import predict
from shortcut_zoo.train import TrainConfig, get_lr, shortcut_loss, split_rows, train
from trajectories.base import BaseSpec, load_base
from trajectories.dump import DumpConfig, dump_trajectories
from trajectories.pairs import PairStream, pair_loader
from trajectories.store.dataset import open_dataset

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")
TINY = dict(steps=8, batch_size=16, save_every=8, val_fraction=0.25, warmup=2, lr=3e-3)


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
    cfg = TrainConfig(data=str(data), arch=arch, out=str(tmp_path / arch), arch_config=options, **TINY)
    result = train(cfg, CPU)
    losses, weights = one_step_reference(cfg)
    assert result["losses"] == losses
    trained = load_file(str(tmp_path / arch / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(trained[k], weights[k]) for k in weights)
