"""Hub references (hf://ORG/NAME[/PATH]) resolve from a Hugging Face cache the test builds offline in the
library's own layout (models--ORG--NAME/snapshots/REV/…, refs/main), for each family, as `--checkpoint`
and as `zoo import --published`; a reference missing with HF_HUB_OFFLINE=1 is one line naming it."""

import json
import shutil
from pathlib import Path

import pytest
from amused_folder import write_amused
from typer.testing import CliRunner

from migm.cli.main import app
from migm.trajectories.base import BaseSpec, load_base

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "published"
REV = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


def cached_repo(hf_home: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` at REV in HF_HOME's hub cache, with refs/main pointing at it."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_each_family_loads_from_a_hub_reference_as_from_its_local_copy(hub, tmp_path):
    maskgit = cached_repo(hub, "llvictorll/Maskgit-pytorch") / "pretrained_maskgit" / "MaskGIT"
    maskgit.mkdir(parents=True)
    shutil.copy(FIXTURES / "maskgit-shortcut" / "base.pth", maskgit / "MaskGIT_ImageNet_512.pth")
    dimoo = cached_repo(hub, "Alpha-VLLM/Lumina-DiMOO")
    shutil.copytree(FIXTURES / "dimoo" / "checkpoint", dimoo, dirs_exist_ok=True)
    amused = write_amused(cached_repo(hub, "amused/amused-256"))
    cases = [
        ("maskgit", "hf://llvictorll/Maskgit-pytorch/pretrained_maskgit/MaskGIT/MaskGIT_ImageNet_512.pth", maskgit
         / "MaskGIT_ImageNet_512.pth", {"heads": 4}),
        ("dimoo", "hf://Alpha-VLLM/Lumina-DiMOO", dimoo, {"height": 64, "width": 64}),
        ("amused", "hf://amused/amused-256", amused, {}),
    ]  # fmt: skip
    for name, ref, local, options in cases:
        from_hub = load_base(BaseSpec(name, checkpoint=ref, device="cpu", **options))
        from_disk = load_base(BaseSpec(name, checkpoint=str(local), device="cpu", **options))
        assert from_hub.fingerprint == from_disk.fingerprint, name


def test_zoo_import_takes_the_published_shortcut_by_its_hub_name(hub, tmp_path):
    base = cached_repo(hub, "llvictorll/Maskgit-pytorch")
    shutil.copy(FIXTURES / "maskgit-shortcut" / "base.pth", base / "base.pth")
    shortcut = cached_repo(hub, "Kaiwen-Zhu/MIGM-Shortcut") / "MaskGIT-Shortcut"
    shortcut.mkdir()
    shutil.copy(FIXTURES / "maskgit-shortcut" / "shortcut-b2.pth", shortcut / "maskgit-shortcut.pth")
    out = tmp_path / "zoo"
    args = ["zoo", "import", "--published", "hf://Kaiwen-Zhu/MIGM-Shortcut/MaskGIT-Shortcut/maskgit-shortcut.pth",
            "--base", "maskgit", "--checkpoint", "hf://llvictorll/Maskgit-pytorch/base.pth", "--heads", "4",
            "--shortcut-heads", "4", "--steps", "6", "--out", str(out), "--json"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "config.json").read_text())["arch"] == "tiny-transformer"


def test_a_reference_missing_offline_is_one_line_naming_it(hub, tmp_path):
    cached_repo(hub, "amused/amused-256")  # the repository is cached, the file asked for is not
    for ref in ("hf://amused/amused-512", "hf://amused/amused-256/transformer/missing.safetensors"):
        r = runner.invoke(app, ["generate", "--model", "amused", "--checkpoint", ref, "--prompt", "a cat",
                                "--out", str(tmp_path / "g.png")])  # fmt: skip
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {ref}:") and "HF_HUB_OFFLINE" in lines[0]
    r = runner.invoke(app, ["generate", "--model", "amused", "--checkpoint", "hf://just-a-name", "--out", "g.png"])
    assert r.exit_code == 2 and "hf://ORG/NAME" in r.stderr
