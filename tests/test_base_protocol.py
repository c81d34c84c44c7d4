"""The public base interface: the docs' tiny base installed as a plugin (entry-point metadata on
sys.path) and used from the CLI, failing plugins, and no family-name checks or attribute probing
outside the families' own modules."""

import ast
import json
import re
import sys
from pathlib import Path

import pytest
from helpers import ok, refused
from typer.testing import CliRunner

from migm.trajectories.base.protocol import Base, TextBase

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def docs_example() -> str:
    """The code block after `<!-- file: tinybase.py -->` in docs/add-a-base.md."""
    text = (ROOT / "docs" / "add-a-base.md").read_text()
    return re.search(r"<!-- file: tinybase.py -->\n```python\n(.*?)```", text, re.S).group(1)


def install_plugin(root: Path, name: str, module: str, source: str, value: str) -> None:
    """What pip install leaves for a plugin: its module and a dist-info with the entry point."""
    (root / f"{module}.py").write_text(source)
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[migm.bases]\n{value}\n")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    install_plugin(root, "migm-tiny", "tinybase", docs_example(), "tiny = tinybase:load_tiny")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for module in ("tinybase", "brokenbase"):
        sys.modules.pop(module, None)


def test_the_docs_tiny_base_and_the_built_in_ones_follow_the_protocol(plugins):
    import tinybase

    from migm.trajectories.base import BaseSpec, load_base

    base = tinybase.load_tiny()
    assert isinstance(base, Base) and not isinstance(base, TextBase)
    assert isinstance(load_base(BaseSpec("maskgit-digits", device="cpu")), Base)
    assert isinstance(load_base(BaseSpec("dimoo-digits", device="cpu")), TextBase)


def test_a_plugin_base_runs_through_the_cli(plugins, tmp_path):
    rows = json.loads(ok(["models", "--json"]))
    assert rows["tiny"]["source"] == "migm-tiny 0.1 (tinybase:load_tiny)"
    assert rows["maskgit"]["source"] == "built-in" and "amused" in rows
    args = ["--model", "tiny"]
    ok(["generate", *args, "--classes", "0-2", "--per-class", "2", "--out", str(tmp_path / "g.png"), "-q"])
    ds, zoo = tmp_path / "ds", tmp_path / "zoo"
    ok(["dump-trajectories", *args, "--num-samples", "6", "--steps", "8", "--batch-size", "3", "--shard-size", "3",
        "--out", str(ds), "-q"])  # fmt: skip
    assert json.loads((ds / "dataset.json").read_text())["sampler"]["rule"] == "tiny-even"
    ok(["verify", str(ds)])
    ok(["train", "--data", str(ds), *args, "--steps", "10", "--batch-size", "8", "--out", str(zoo), "-q"])
    out = ok(["sample", *args, "--shortcut", str(zoo), "--classes", "0-2", "--steps", "8", "--budget", "3",
              "--out", str(tmp_path / "s.png"), "--json", "-q"])  # fmt: skip
    assert json.loads(out)["full_steps"] == [0, 3, 5]


def test_a_plugin_that_fails_to_import_is_one_line(plugins, tmp_path):
    install_plugin(plugins, "migm-broken", "brokenbase", "import no_such_module\n", "broken = brokenbase:load")
    line = refused(["generate", "--model", "broken", "--out", str(tmp_path / "g.png")])
    assert "'broken'" in line and "failed to import" in line and "no_such_module" in line
    assert "'broken'" in refused(["models"])
    assert "known models:" in refused(["generate", "--model", "nope", "--out", str(tmp_path / "g.png")])


# --- no family names or probing outside the families' own modules ---------------------------------

FAMILIES = {"maskgit", "maskgit-digits", "dimoo", "dimoo-digits", "amused", "amused-linear", "llada"}
# a family's own modules, and the registry that names them
OWN = ("trajectories/base/", "trajectories/train_digits.py", "trajectories/train_dimoo_digits.py",
       "shortcut_zoo/archs/dimoo_transformer.py")  # fmt: skip
SHARED = ("trajectories/base/__init__.py", "trajectories/base/protocol.py")


def family_names(node) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value.lower()} & FAMILIES
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(set(), *(family_names(e) for e in node.elts))
    return set()


def name_checks(path: Path, root: Path = ROOT) -> list[str]:
    """Comparisons, membership tests, prefix tests, subscripts and dict keys with a family's name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("startswith", "endswith"):
            parts = node.args
        elif isinstance(node, ast.Dict):
            parts = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            parts = [node.slice]
        else:
            continue
        names = set().union(set(), *(family_names(p) for p in parts))
        if names:
            found.append(f"{path.relative_to(root)}:{node.lineno} {sorted(names)}")
    return found


def test_no_family_name_checks_outside_the_families_modules():
    found = []
    for room in ("trajectories", "shortcut_zoo", "cli", "cards"):
        for path in sorted((ROOT / room).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in SHARED or not rel.startswith(OWN):
                found += name_checks(path)
    assert not found, "family names checked outside their own modules:\n" + "\n".join(found)


def test_the_scan_sees_a_name_check(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'if base.name in ("maskgit-digits", "x"):\n    pass\nSCORERS = {"dimoo": 1}\nok = name == "other"\n'
    )
    assert len(name_checks(probe, root=tmp_path)) == 2


def test_the_rollout_probes_no_attributes():
    tree = ast.parse((ROOT / "trajectories" / "rollout.py").read_text())
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert not {"getattr", "hasattr"} & set(calls)
