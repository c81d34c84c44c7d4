"""CLI wiring: outputs, and bad input as a short `error:` with exit code 2 and nothing written."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from migm.cli.main import app

runner = CliRunner()


def test_models_lists_the_embedded_base():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    assert "maskgit-digits" in json.loads(result.stdout)


def test_generate_writes_a_grid_and_reports_latency(tmp_path):
    out = tmp_path / "grid.png"
    args = ["generate", "--classes", "1,3", "--per-class", "3", "--steps", "4", "--out", str(out), "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ms per image" in result.stdout
    img = Image.open(out)
    assert img.size == ((3 * 9 + 1) * 4, (2 * 9 + 1) * 4)  # 3 columns, 2 rows of 8x8 digits, 1 px gaps, x4


def test_score_json(tmp_path):
    result = runner.invoke(app, ["score", "--samples", "20", "--steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0 <= metrics["accuracy"] <= 1 and metrics["frechet"] >= 0 and metrics["samples"] == 20


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--model", "nope"],
            "unknown model 'nope'; known models: amused, dimoo, dimoo-digits, maskgit, maskgit-digits",
        ),
        (["--steps", "0"], "steps must be between 1 and 64"),
        (["--out", "grid.gif2"], "needs one of the extensions"),
        (["--seed", "-1"], "--seed must be at least 0"),
        (["--classes", "3-12"], "classes must be in 0-9"),
        (["--classes", "x"], "classes must look like"),
    ],
)
def test_bad_generate_input_is_a_short_error(tmp_path, args, message):
    out = tmp_path / "grid.png"
    result = runner.invoke(app, ["generate", "--out", str(out), *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output and not out.exists()


def test_missing_output_folders_are_created(tmp_path):
    out = tmp_path / "no" / "such" / "grid.png"
    result = runner.invoke(app, ["generate", "--out", str(out), "--per-class", "1", "--steps", "4", "-q"])
    assert result.exit_code == 0 and out.exists()


def test_output_under_a_file_is_a_short_error(tmp_path):
    (tmp_path / "f").write_text("x")
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "f" / "grid.png")])
    assert result.exit_code == 2 and "is a file" in result.stderr and (tmp_path / "f").read_text() == "x"


def test_bad_score_input_is_a_short_error():
    result = runner.invoke(app, ["score", "--steps", "0"])
    assert result.exit_code == 2 and result.stderr.startswith("error: steps must be")


def test_typer_usage_errors_keep_their_form():
    result = runner.invoke(app, ["generate", "--steps", "abc"])
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("migm", path=str(Path(sys.executable).parent))
    assert exe, "the `migm` console script is not installed next to this Python"
    bad = subprocess.run([exe, "score", "--model", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown model") and "Traceback" not in bad.stderr
