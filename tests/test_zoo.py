"""Shortcut archs, training, export and loading."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import published_shortcut_layout
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import ARCHS, build
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")  # train: the base the dataset names, on the CPU

runner = CliRunner()
BIN = Path(sys.executable).parent
TINY = dict(steps=12, batch_size=16, save_every=6, val_fraction=0.25, warmup=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "ds"
    dump_trajectories(DumpConfig(num_samples=16, steps=6, shard_size=8, out=str(out)), DIGITS)
    return out


def inputs(D=64, B=3, K=5, T=65):
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[0, 3:] = False
    return (
        torch.randn(B, T, D, generator=g),
        torch.randn(B, K, D, generator=g),
        torch.randint(0, T - 1, (B, K), generator=g),
        valid,
        torch.rand(B, generator=g),
    )


# The block shape of dimoo-transformer comes from a DiMOO base; without one it is given.
STANDALONE = {"dimoo-transformer": {"heads": 4, "mlp_hidden": 128}}
MASKGIT_ARCHS = sorted(set(ARCHS) - {"dimoo-transformer"})  # archs that train on a MaskGIT base


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_arch_contract_and_padding(arch):
    torch.manual_seed(0)
    model = build(arch, dim=64, **STANDALONE.get(arch, {})).eval()
    for p in model.parameters():  # the zero-initialised output would hide everything
        torch.nn.init.normal_(p, std=0.05)
    feat, emb, pos, valid, ratio = inputs()
    out = model(feat, emb, pos, valid, ratio)
    assert out.shape == feat.shape and torch.isfinite(out).all()
    # padded new tokens (valid = False) change nothing, whatever they hold
    emb2 = emb.clone()
    emb2[0, 3:] = 100.0
    assert torch.allclose(model(feat, emb2, pos, valid, ratio)[0], out[0], atol=1e-5)


def test_published_shortcut_layout_loads_strictly_and_runs():
    layout = published_shortcut_layout(D=64, H=32, blocks=1, time_hidden=30)
    g = torch.Generator().manual_seed(0)
    state = {k: 0.05 * torch.randn(shape, generator=g) for k, shape in layout.items()}
    model = build("tiny-transformer", dim=64, bottleneck=2, blocks=1, heads=4, time_hidden=30)
    load_state_dict_strict(model, state, "published shortcut")
    out = model(*inputs())
    assert out.shape == (3, 65, 64) and torch.isfinite(out).all()


@pytest.mark.parametrize("arch", MASKGIT_ARCHS)
def test_train_export_load_gives_the_same_outputs(arch, data, tmp_path):
    out = tmp_path / arch
    options = {"heads": 2} if arch == "tiny-transformer" else {}
    result = train(TrainConfig(data=str(data), arch=arch, out=str(out), arch_config=options, **TINY), CPU)
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in out.iterdir()}
    assert result["metrics"]["overall"]["positions"] > 0 and result["cost"]["relative_cost"] > 0
    base = load_base(BaseSpec("maskgit-digits"))
    loaded = load_shortcut(out, base)
    direct = build(arch, **result["arch_config"]).eval()
    direct.load_state_dict(load_file(str(out / "model.safetensors")))
    args = inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(*args), direct(*args), atol=1e-6)
    card = (out / "README.md").read_text()
    assert "cache (f_s itself)" in card and f"{result['cost']['parameters']:,}" in card


def test_resume_is_bit_for_bit(data, tmp_path):
    straight = train(TrainConfig(data=str(data), out=str(tmp_path / "a"), **TINY), CPU)
    part = train(TrainConfig(data=str(data), out=str(tmp_path / "b"), stop_at=6, **TINY), CPU)
    assert part["stopped_at"] == 6 and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(TrainConfig(data=str(data), out=str(tmp_path / "b"), **TINY), CPU, resume=True)
    assert resumed["losses"] == straight["losses"]
    a, b = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_cpu_ranks_train_and_their_checkpoint_loads_in_one_process(data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        str(BIN / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "migm.cli.main",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "24",
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--val-fraction",
        "0.25",
        "--save-every",
        "12",
        "--device",
        "cpu",
        "--json",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["processes"] == 2
    losses = json.loads((out / "checkpoint" / "train_state.json").read_text())["losses"]
    assert sum(losses[-6:]) < sum(losses[:6])
    # the 2-rank checkpoint resumes in one process
    more = train(
        TrainConfig(data=str(data), out=str(out), steps=30, batch_size=8, lr=3e-3, val_fraction=0.25), CPU, resume=True
    )
    assert len(more["losses"]) == 30 and more["training"]["processes"] == 1


@pytest.fixture(scope="module")
def zoo_folder(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("zf") / "mlp"
    train(TrainConfig(data=str(data), arch="mlp", out=str(out), **TINY), CPU)
    return out


def copy_of(folder, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(folder, dst)
    return dst


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda p: (p / "config.json").write_text("{nope"), "not valid JSON"),
        (
            lambda p: (p / "config.json").write_text(
                json.dumps({**json.loads((p / "config.json").read_text()), "arch": "lstm"})
            ),
            "unknown arch 'lstm'",
        ),
        (
            lambda p: (p / "config.json").write_text(
                json.dumps({**json.loads((p / "config.json").read_text()), "arch_config": {"dim": 64, "depth": "x"}})
            ),
            "depth must be int",
        ),
        (lambda p: (p / "model.safetensors").unlink(), "has no model.safetensors"),
        (
            lambda p: ((p / "model.safetensors").unlink(), torch.save({}, p / "model.bin")),
            "pickled weights are never loaded",
        ),
        (lambda p: torch.save({"w": torch.zeros(1)}, p / "model.safetensors"), "not a safetensors file"),
        (
            lambda p: (p / "config.json").write_text(
                json.dumps(
                    {
                        **json.loads((p / "config.json").read_text()),
                        "base": {"name": "maskgit-digits", "fingerprint": "0" * 64},
                    }
                )
            ),
            "use --force",
        ),
    ],
)
def test_a_bad_zoo_folder_is_refused(zoo_folder, tmp_path, tamper, message):
    bad = copy_of(zoo_folder, tmp_path)
    tamper(bad)
    with pytest.raises(MigmError, match=message):
        load_shortcut(bad, load_base(BaseSpec("maskgit-digits")))


def test_force_loads_another_bases_shortcut(zoo_folder, tmp_path):
    other = copy_of(zoo_folder, tmp_path)
    c = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**c, "base": {**c["base"], "fingerprint": "0" * 64}}))
    assert load_shortcut(other, load_base(BaseSpec("maskgit-digits")), force=True) is not None


def test_zoo_cli(zoo_folder, tmp_path):
    listed = runner.invoke(app, ["zoo", "list", str(zoo_folder.parent), "--json"])
    assert listed.exit_code == 0 and json.loads(listed.stdout)[0]["arch"] == "mlp"
    shown = runner.invoke(app, ["zoo", "show", str(zoo_folder)])
    assert shown.exit_code == 0 and "Validation" in shown.stdout
    pushed = runner.invoke(app, ["push", str(zoo_folder), "--repo-id", "me/mlp-digits", "--dry-run"])
    assert pushed.exit_code == 0 and "model.safetensors" in pushed.stdout and "checkpoint/" not in pushed.stdout
    missing = runner.invoke(app, ["zoo", "show", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.stderr.startswith("error: ")


def test_train_cli_errors(data, tmp_path):
    cases = [
        (["--arch", "lstm"], "unknown arch 'lstm'"),
        (["--loss", "l1"], "loss must be mse or mse+kl"),
        (["-a", "bottleneck"], "key=value"),
        (["--resume"], "nothing to resume"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "x"), "--steps", "2", *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    not_data = runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "y")])
    assert not_data.exit_code == 2 and "no dataset.json" in not_data.stderr
