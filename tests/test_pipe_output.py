"""Output that survives a pipe: with stdout not a terminal (`migm … | cat`, a CI log), rich would lay
tables out for 80 columns and cut cells to "…". The commands run here as separate processes with
stdout a pipe and no $COLUMNS, as `| cat` runs them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

FIGURE = r"\d\.\d{4}"


def migm(*args: str, cwd) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-m", "migm.cli.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 16-step dataset (15 per-step rows of validation) and a shortcut trained on it, with `train`'s output."""
    root = tmp_path_factory.mktemp("pipe")
    migm("dump-trajectories", "--num-samples", "24", "--steps", "16", "--out", "d", "--quiet", cwd=root)
    out = migm(
        "train", "--data", "d", "--steps", "4", "--batch-size", "16", "--val-fraction", "0.25", "--out", "zoo/tt",
        cwd=root,
    )  # fmt: skip
    return root, out


def test_train_prints_every_per_step_figure_readably_into_a_pipe(trained):
    _, out = trained
    assert "…" not in out
    for step in range(15):  # steps 0 … N-2 have a next feature to predict
        row = re.search(rf"^\W*{step}\W+({FIGURE})\W+({FIGURE})\W+({FIGURE})\W+({FIGURE})\W*$", out, re.M)
        assert row, f"no readable per-step row for step {step} in:\n{out}"


def test_zoo_show_card_per_step_table_fits_a_pipe(trained):
    root, _ = trained
    out = migm("zoo", "show", "zoo/tt", cwd=root)
    assert "…" not in out
    for step in range(15):
        assert re.search(rf"^\W*{step}\W+{FIGURE}\W+{FIGURE}\W*$", out, re.M), f"step {step} missing in:\n{out}"


def test_bench_markdown_table_keeps_one_row_per_line_in_a_pipe(trained):
    root, _ = trained
    out = migm(
        "bench", "--shortcut", "zoo/tt", "--configs", "N4,N4B2", "--samples", "8", "--repeats", "1", "--no-fidelity",
        "--out", "b", "--quiet", cwd=root,
    )  # fmt: skip
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, rule, vanilla N4, then N4B2 with the shortcut, cache and taylor
    assert all(line.endswith("|") and line.count("|") == table[0].count("|") for line in table), out
    assert "…" not in out
