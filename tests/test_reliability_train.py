"""Issue 16, training and zoo half: nothing lost, nothing run, nothing silently wrong.

Each test is named after the numbered failure it guards against (items 1, 2, 6, 8, 9, 10, 11)."""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import published_shortcut_layout
from helpers import one_line_stderr
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo import checkpoint as ckpt_module
from migm.shortcut_zoo.export import load_shortcut
from migm.shortcut_zoo.train import TrainConfig, train
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.dump import DumpConfig, dump_trajectories
from migm.trajectories.errors import MigmError
from migm.trajectories.store.schema import sha256_path

DIGITS = load_base(BaseSpec("maskgit-digits", device="cpu"))
CPU = BaseSpec(device="cpu")
RUN = dict(steps=4, batch_size=16, save_every=2, val_fraction=0.25, warmup=1)
runner = CliRunner()


def dump(path: Path, seed: int = 0) -> Path:
    dump_trajectories(DumpConfig(num_samples=8, steps=6, shard_size=8, seed=seed, out=str(path)), DIGITS)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return dump(tmp_path_factory.mktemp("rel") / "ds")


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    """A whole run: its losses and weights are what every resumed run must reproduce bit for bit."""
    out = tmp_path_factory.mktemp("straight") / "z"
    result = train(TrainConfig(data=str(data), out=str(out), **RUN), CPU)
    return out, result


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory):
    """A run stopped at step 2, leaving a checkpoint; tests resume copies of it."""
    out = tmp_path_factory.mktemp("stopped") / "z"
    assert train(TrainConfig(data=str(data), out=str(out), stop_at=2, **RUN), CPU)["stopped_at"] == 2
    return out


def copy(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(folder, dst, symlinks=True)
    return dst


def resume(data, out, **overrides):
    return train(TrainConfig(data=str(data), out=str(out), **{**RUN, **overrides}), CPU, resume=True)


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def rerecord(ckpt: Path) -> None:
    """Re-record every file's sha256 in train_state.json, as a tamperer who knows the format would."""
    state = json.loads((ckpt / "train_state.json").read_text())
    state["files"] = {p.name: sha256_path(p) for p in sorted(ckpt.iterdir()) if p.name != "train_state.json"}
    (ckpt / "train_state.json").write_text(json.dumps(state))


class Touch:
    """Unpickling this creates the file `path`: the proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---- item 1: code never runs on resume --------------------------------------------------------


def test_resume_never_unpickles(data, stopped, tmp_path):
    out, pwned = copy(stopped, tmp_path), tmp_path / "pwned"
    for name in ("custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"):  # what accelerate reloaded
        torch.save({"decay": 0.999, "updates": 1, "shadow": Touch(pwned)}, out / "checkpoint" / name)
    code, _, stderr = cli(
        "train",
        "--data",
        data,
        "--out",
        out,
        "--steps",
        4,
        "--batch-size",
        16,
        "--save-every",
        2,
        "--val-fraction",
        0.25,
        "--warmup",
        1,
        "--device",
        "cpu",
        "--resume",
        "-q",
    )
    one_line_stderr(code, stderr, "does not list")
    assert not pwned.exists()


def test_resume_is_bit_for_bit_from_safetensors_and_json(data, stopped, straight, tmp_path):
    out = copy(stopped, tmp_path)
    assert not [p for p in (out / "checkpoint").iterdir() if p.suffix in (".pkl", ".bin", ".pt")]
    resumed = resume(data, out)
    assert resumed["losses"] == straight[1]["losses"] and same_weights(out, straight[0])


def _truncate(ckpt):
    text = (ckpt / "train_state.json").read_text()
    (ckpt / "train_state.json").write_text(text[: len(text) // 2])


def _bad_rng(ckpt):
    path = ckpt / "rng-0.safetensors"
    tensors = load_file(str(path))
    save_file({**tensors, "torch": tensors["torch"][:100]}, str(path), metadata={"python": "[3, null]", "numpy": "[]"})
    rerecord(ckpt)


def _flipped_rng(ckpt):
    raw = bytearray((ckpt / "rng-0.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (ckpt / "rng-0.safetensors").write_bytes(bytes(raw))


def _garbage_optimizer(ckpt):
    (ckpt / "optimizer.safetensors").write_bytes(b"\x00" * 64)
    rerecord(ckpt)


def _misshaped_optimizer(ckpt):
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    key = next(k for k in tensors if k.endswith("exp_avg"))
    save_file({**tensors, key: torch.zeros(3, 5)}, str(ckpt / "optimizer.safetensors"))
    rerecord(ckpt)


def _old_layout(ckpt):
    """What accelerate's save_state and the old train_state.json left."""
    losses = json.loads((ckpt / "train_state.json").read_text())["losses"]
    for p in ckpt.iterdir():
        p.unlink()
    (ckpt / "train_state.json").write_text(json.dumps({"step": 2, "epoch": 0, "batch_in_epoch": 2, "losses": losses}))
    for name in ("random_states_0.pkl", "custom_checkpoint_0.pkl", "optimizer.bin"):
        torch.save({"step": 1}, ckpt / name)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (_truncate, "is not valid JSON"),
        (_flipped_rng, "does not match the sha256"),
        (_bad_rng, "is not a valid RNG state"),
        (_garbage_optimizer, "is not a readable safetensors file"),
        (_misshaped_optimizer, "does not fit this optimizer"),
        (_old_layout, "never unpickled"),
    ],
)
def test_a_damaged_checkpoint_is_refused_never_skipped(data, stopped, tmp_path, tamper, message):
    out = copy(stopped, tmp_path)
    tamper(out / "checkpoint")
    with pytest.raises(MigmError, match=message):
        resume(data, out)


# ---- item 6: checkpoints whole, bound to their run, and a failed save blocks nothing --------------


def test_a_kill_between_the_renames_leaves_a_whole_checkpoint(data, straight, tmp_path, monkeypatch):
    out, real = tmp_path / "z", os.replace

    def killed(src, dst):
        if Path(src).name == "checkpoint.partial" and (Path(src).parent / "checkpoint.old").exists():
            raise KeyboardInterrupt  # the second save, between moving the old checkpoint and the new one
        real(src, dst)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(data=str(data), out=str(out), **RUN), CPU)
    monkeypatch.setattr(os, "replace", real)
    assert not (out / "checkpoint").exists() and (out / "checkpoint.old" / "train_state.json").exists()
    resumed = resume(data, out)
    assert resumed["losses"] == straight[1]["losses"] and same_weights(out, straight[0])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "checkpoint", "config.json", "model.safetensors"]


def test_files_of_two_saves_are_a_torn_checkpoint(data, stopped, straight, tmp_path):
    out = copy(stopped, tmp_path)
    shutil.copy(straight[0] / "checkpoint" / "model.safetensors", out / "checkpoint" / "model.safetensors")
    with pytest.raises(MigmError, match="torn"):
        resume(data, out)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": "other"}, "was trained on another dataset"),
        ({"arch": "mlp"}, "resume with --arch tiny-transformer"),
        ({"arch_config": {"blocks": 2}}, "resume with -a blocks=1"),
    ],
)
def test_resume_with_another_dataset_or_arch_is_refused(data, stopped, tmp_path, change, message):
    out = copy(stopped, tmp_path)
    if "data" in change:
        change = {"data": str(dump(tmp_path / "other", seed=1))}
    cfg = TrainConfig(**{"data": str(data), "out": str(out), **RUN, **change})
    with pytest.raises(MigmError, match=message):
        train(cfg, CPU, resume=True)


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_a_failed_first_save_leaves_nothing_that_blocks_a_rerun(data, tmp_path, monkeypatch, error):
    out = tmp_path / "z"

    def full(*args, **kwargs):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(ckpt_module, "save_file", full)
    with pytest.raises(MigmError, match=f"cannot write checkpoint .*{os.strerror(error)}"):
        train(TrainConfig(data=str(data), out=str(out), stop_at=2, **RUN), CPU)
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    assert train(TrainConfig(data=str(data), out=str(out), stop_at=2, **RUN), CPU)["stopped_at"] == 2


# ---- item 2: train never writes into a folder it does not own --------------------------------------


def test_train_refuses_a_folder_that_is_not_its_own(data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my thesis notes\n")
    code, _, stderr = cli("train", "--data", data, "--out", mine, "--steps", 2, "--device", "cpu", "-q")
    one_line_stderr(code, stderr, "is not empty and not a migm zoo folder")
    assert [p.name for p in mine.iterdir()] == ["README.md"] and (mine / "README.md").read_text() == "my thesis notes\n"


# ---- item 8: a card's escape sequences are printed inert, its Markdown rendered --------------------


def test_zoo_show_renders_the_card_inert(straight, tmp_path):
    folder = copy(straight[0], tmp_path)
    (folder / "README.md").write_text(
        "---\nlicense: other\n---\n# Card \x1b[2J\x1b]0;owned\x07 [/bold]\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    code, stdout, _ = cli("zoo", "show", folder)
    assert code == 0
    assert "\x1b" not in stdout and "\x07" not in stdout and "\\x1b[2J" in stdout and "[/bold]" in stdout
    assert "|" not in stdout and "─" in stdout  # the table is drawn, not printed as pipes
    assert "license: other" not in stdout  # the Hub metadata header is not part of the reading


# ---- item 9: push uploads exactly the zoo files, checked, private by default ---------------------


class FakeHub:
    calls: list = []

    def __init__(self, token=None):
        pass

    def create_repo(self, repo_id, repo_type, private, exist_ok):
        FakeHub.calls.append(("create_repo", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, repo_type, commit_message, operations):
        FakeHub.calls.append(("commit", sorted(op.path_in_repo for op in operations)))


def test_zoo_push_uploads_only_the_zoo_files(straight, tmp_path, monkeypatch):
    import huggingface_hub

    folder = copy(straight[0], tmp_path)
    secret = tmp_path / "credentials"
    secret.write_text("token\n")
    (folder / "notes.txt").write_text("unlisted\n")
    (folder / "creds").symlink_to(secret)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    code, stdout, stderr = cli("push", folder, "--repo-id", "me/digits-shortcut")
    assert code == 0, stderr
    assert FakeHub.calls == [
        ("create_repo", "me/digits-shortcut", True),
        ("commit", ["README.md", "config.json", "model.safetensors"]),
    ]
    code, stdout, _ = cli("push", folder, "--repo-id", "me/digits-shortcut", "--dry-run", "--public")
    assert code == 0 and "(public)" in stdout and "notes.txt" not in stdout and "creds" not in stdout
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(secret)
    one_line_stderr(*cli("push", folder, "--repo-id", "me/x", "--dry-run")[::2], "is a link")
    for bad in ("user/na me", "user/..", "a/" + "b" * 200, "no-namespace"):
        one_line_stderr(*cli("push", folder, "--repo-id", bad, "--dry-run")[::2], "repo id")


# ---- item 10: bad input is one line, before any work ----------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["-a", "bottleneck=0"], "bottleneck must be in 1..65536"),
        (["-a", "dim=32"], "dim is the base's feature width"),
        (["-a", "blocks=100000000"], "blocks must be in 1..256"),
        (["-a", "bottleneck=1", "-a", "blocks=8", "-a", "mlp_ratio=65536"], "parameters, more than"),
        (["--workers", "-1"], "--workers must be at least 0"),
        (["--save-every", "0"], "--save-every must be at least 1"),
        (["--stop-at", "0"], "--stop-at must be at least 1"),  # item 11
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--val-fraction", "nan"], "--val-fraction must be a finite number"),
    ],
)
def test_bad_train_options_are_one_line_errors(data, tmp_path, args, message):
    out = tmp_path / "z"
    code, _, stderr = cli("train", "--data", data, "--out", out, "--steps", 2, "--device", "cpu", "-q", *args)
    one_line_stderr(code, stderr, message)
    assert not out.exists()


def test_an_out_that_is_a_file_is_refused(data, tmp_path):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    code, _, stderr = cli("train", "--data", data, "--out", afile, "--steps", 2, "--device", "cpu", "-q")
    one_line_stderr(code, stderr, "is a file")
    assert afile.read_text() == "x"


def test_resume_with_another_arch_is_one_line(data, stopped, tmp_path):
    out = copy(stopped, tmp_path)
    code, _, stderr = cli(
        "train", "--data", data, "--out", out, "--arch", "mlp", "--steps", 4, "--device", "cpu", "--resume", "-q"
    )
    one_line_stderr(code, stderr, "resume with --arch tiny-transformer")


ABSURD = [({"bottleneck": 0}, "bottleneck"), ({"blocks": 10**9}, "blocks must")]


@pytest.mark.parametrize("arch_config, message", ABSURD)
def test_an_absurd_zoo_config_is_refused_before_building(straight, tmp_path, arch_config, message):
    folder = copy(straight[0], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["arch_config"] |= arch_config
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MigmError, match=message):
        load_shortcut(folder, DIGITS)


def test_zoo_show_without_a_card_is_one_line(straight, tmp_path):
    folder = copy(straight[0], tmp_path)
    (folder / "README.md").unlink()
    one_line_stderr(*cli("zoo", "show", folder)[::2], "has no README.md")


# ---- item 11: nothing silently accepted ----------------------------------------------------------


def test_too_few_held_out_samples_read_n_a_not_zero(data, tmp_path):
    out = tmp_path / "z"
    result = train(TrainConfig(data=str(data), out=str(out), **{**RUN, "val_fraction": 0.0}), CPU)
    overall = result["metrics"]["overall"]
    assert overall["positions"] == 0 and overall["cos"] is None and overall["mse_ratio_to_cache"] is None
    assert json.loads((out / "config.json").read_text())["metrics"]["overall"]["cos"] is None
    assert "| n/a |" in (out / "README.md").read_text()
    code, stdout, _ = cli("zoo", "list", tmp_path)
    assert code == 0 and "n/a" in stdout and "0.0000" not in stdout


def test_zoo_import_works_for_the_digits_base_and_heads_0_is_refused(tmp_path):
    g = torch.Generator().manual_seed(0)
    layout = published_shortcut_layout(D=DIGITS.D, H=DIGITS.D // 2, blocks=1, time_hidden=30)
    torch.save({k: 0.05 * torch.randn(shape, generator=g) for k, shape in layout.items()}, tmp_path / "sc.pth")
    code, stdout, stderr = cli(
        "zoo", "import", "--published", tmp_path / "sc.pth", "--out", tmp_path / "z", "--base", "maskgit-digits"
    )
    assert code == 0, stderr
    assert load_shortcut(tmp_path / "z", DIGITS) is not None
    code, _, stderr = cli(
        "zoo",
        "import",
        "--published",
        tmp_path / "sc.pth",
        "--out",
        tmp_path / "y",
        "--base",
        "maskgit",
        "--checkpoint",
        tmp_path / "sc.pth",
        "--heads",
        0,
    )
    one_line_stderr(code, stderr, "heads")
