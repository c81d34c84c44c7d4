"""One base handle from the command line down: a published-layout MaskGIT checkpoint goes through
the whole pipeline with the same base options on every command, and a different checkpoint is
refused by fingerprint."""

import ast
from pathlib import Path

import pytest
import torch
from conftest import maskgit_state, write_maskgit, write_vqgan
from helpers import ok, refused
from typer.testing import CliRunner

from migm.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("handle")
    ckpt, vqgan = write_maskgit(root / "maskgit.pth"), write_vqgan(root / "vqgan")
    base = ["--model", "maskgit", "--checkpoint", str(ckpt), "--heads", "4"]
    ok(
        [
            "dump-trajectories",
            *base,
            "--num-samples",
            "8",
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--shard-size",
            "4",
            "--out",
            str(root / "ds"),
            "-q",
        ]
    )
    ok(["verify", str(root / "ds")])
    ok(
        [
            "train",
            "--data",
            str(root / "ds"),
            *base,
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--val-fraction",
            "0.25",
            "--out",
            str(root / "zoo" / "tt"),
            "-q",
        ]
    )
    return {"root": root, "base": base, "vqgan": str(vqgan)}


def test_real_checkpoint_runs_dump_verify_train_show_sample_bench(pipeline):
    root, base = pipeline["root"], pipeline["base"]
    assert "tiny-transformer" in ok(["zoo", "show", str(root / "zoo" / "tt")])
    out = ok(
        [
            "sample",
            *base,
            "--vqgan",
            pipeline["vqgan"],
            "--shortcut",
            str(root / "zoo" / "tt"),
            "--steps",
            "4",
            "--budget",
            "2",
            "--classes",
            "0-1",
            "--per-class",
            "2",
            "--out",
            str(root / "grids" / "s.png"),
            "-q",
        ]
    )
    assert (root / "grids" / "s.png").exists() and "full steps: [0, 2]" in out  # missing folders are created
    ok(
        [
            "bench",
            *base,
            "--shortcut",
            str(root / "zoo" / "tt"),
            "--configs",
            "N4,N4B2",
            "--predictors",
            "shortcut,cache",
            "--samples",
            "4",
            "--batch-size",
            "4",
            "--repeats",
            "1",
            "--out",
            str(root / "bench"),
            "-q",
        ]
    )
    assert (root / "bench" / "results.json").exists()


def test_train_with_another_checkpoint_names_the_fingerprint_mismatch(pipeline, tmp_path):
    state = maskgit_state()
    state["tok_emb.weight"] = state["tok_emb.weight"] + 1.0
    other = write_maskgit(tmp_path / "other.pth", state)
    line = refused(
        [
            "train",
            "--data",
            str(pipeline["root"] / "ds"),
            "--model",
            "maskgit",
            "--checkpoint",
            str(other),
            "--heads",
            "4",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "z"),
        ]
    )
    assert "fingerprint" in line and not (tmp_path / "z" / "config.json").exists()


def test_train_takes_the_datasets_base_but_a_real_one_needs_its_files(pipeline, tmp_path):
    line = refused(["train", "--data", str(pipeline["root"] / "ds"), "--steps", "2", "--out", str(tmp_path / "z")])
    assert "--checkpoint" in line


def test_generate_takes_no_budget(tmp_path):
    r = runner.invoke(app, ["generate", "--budget", "4", "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 2 and "No such option" in r.output  # generate never takes a predictor


def test_help_shows_flags_as_flags():
    out = runner.invoke(app, ["train", "--help"], terminal_width=200).output
    assert "--json " in out and "<bool>" not in out


def test_fp16_is_accepted_on_any_cuda_device_name():
    from migm.trajectories.base import BaseSpec, load_base
    from migm.trajectories.errors import MigmError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the check below is for the CPU-only message")
    with pytest.raises(MigmError, match="no CUDA GPU"):  # cuda:1 gets past the precision check to the device check
        load_base(BaseSpec("maskgit-digits", precision="fp16", device="cuda:1"))
    with pytest.raises(MigmError, match="needs a CUDA device"):
        load_base(BaseSpec("maskgit-digits", precision="fp16", device="cpu"))


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_rooms_import_one_way():
    """cli -> shortcut_zoo -> trajectories; cards imported by them and importing none of them."""
    allowed = {
        "cards": set(),
        "trajectories": {"cards"},
        "shortcut_zoo": {"trajectories", "cards"},
        "cli": {"shortcut_zoo", "trajectories", "cards"},
    }
    for room, may in allowed.items():
        for path in (ROOT / room).rglob("*.py"):
            used = {m.split(".")[1] for m in imports_of(path) if m.startswith("migm.")} & set(allowed)
            assert used <= may | {room}, f"{path.relative_to(ROOT)} imports {sorted(used - may - {room})}"
    assert not (ROOT / "trajectories" / "sample.py").exists()


def test_no_import_circles():
    """Module-level and function-level imports between this project's modules form no cycle."""
    modules = {}
    for room in ("cards", "trajectories", "shortcut_zoo", "cli"):
        for path in (ROOT / room).rglob("*.py"):
            name = ".".join(("migm", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
            modules[name] = path
    graph = {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}

    def visit(node, stack, seen):
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(node) :], node]))
        if node in seen:
            return
        seen.add(node)
        for nxt in graph[node]:
            # a package's own __init__ importing its submodules (a registry) is not a circle
            if not nxt.startswith(node + "."):
                visit(nxt, [*stack, node], seen)

    seen: set[str] = set()
    for m in sorted(graph):
        visit(m, [], seen)
