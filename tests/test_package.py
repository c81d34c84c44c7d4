"""One installable package: the wheel holds `migm/` alone, the API is the CLI's own functions."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

import migm

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("trajectories", "shortcut_zoo", "cli", "cards")


def test_wheel_installs_one_top_level_package(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("migm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"migm"}
    assert "migm/trajectories/base/weights/maskgit-digits.safetensors" in names
    assert "migm/cards/templates/model.md" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "migm = migm.cli.main:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_every_package_folder_is_in_the_wheel():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("migm", *p.parent.relative_to(ROOT).parts))
        for room in ROOMS
        for p in (ROOT / room).rglob("__init__.py")
    }
    assert found | {"migm"} == listed


def test_project_code_imports_rooms_through_migm():
    """A bare `import trajectories` would load a second copy of a module beside `migm.trajectories`."""
    import ast

    for folder in (*ROOMS, "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                bare = [n for n in names if n.split(".")[0] in ROOMS]
                assert not bare, f"{path.relative_to(ROOT)} imports {bare} without the migm. prefix"


def test_api_names_are_the_functions_the_cli_calls():
    from migm.shortcut_zoo.train import train
    from migm.trajectories.base import BaseSpec, load_base

    assert migm.train is train and migm.load_base is load_base and migm.BaseSpec is BaseSpec
    assert set(migm.__all__) <= set(dir(migm))
    with pytest.raises(AttributeError):
        migm.not_a_name  # noqa: B018


def test_load_base_from_the_package():
    base = migm.load_base(migm.BaseSpec("maskgit-digits"))
    assert (base.L, base.V) == (64, 17)


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "migm.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "dump-trajectories" in out.stdout


def test_no_library_function_over_60_lines_and_no_command_over_20_options():
    """The AST count of benchmarks/function_sizes.py: functions stay short, shared option groups count once."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "function_sizes.py"
    spec = importlib.util.spec_from_file_location("function_sizes", path)
    sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizes)
    found = [f for file in sizes.library_files() for f in sizes.functions(file)]
    assert len(found) > 300  # it read the library
    assert [f["where"] for f in found if f["lines"] > 60] == []
    assert [f["where"] for f in found if f["command"] and f["params"] > 20] == []
