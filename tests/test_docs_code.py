"""The code blocks of README.md and docs/tour.md run as written, in order, in an empty folder, so the
documentation cannot drift from the code. A `bash` block is a list of `migm` commands (run in-process by
Typer's CliRunner: no shell, no second interpreter); a `python` block runs in one namespace per page. A
block that cannot run here (a GPU, a real checkpoint, the set-up itself) says so visibly on its first line:
`# not run by the tests: WHY`. `text` blocks (diagrams, file trees) are not code."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from typer.testing import CliRunner

from migm.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/tour.md"]
NOT_RUN = "# not run by the tests:"
CODE = {"bash", "sh", "console", "python", "py"}


def fences(page: str) -> list[tuple[str, str, int]]:
    """(language, code, first line number) of every fenced block of a page."""
    tokens = MarkdownIt().parse((ROOT / page).read_text(encoding="utf-8"))
    return [(t.info.split()[0] if t.info.strip() else "", t.content, t.map[0] + 1) for t in tokens if t.type == "fence"]


def commands(code: str) -> list[str]:
    """The command lines of a shell block: `\\` continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run_command(line: str, where: str) -> None:
    args = shlex.split(line, comments=True)
    assert args[0] == "migm", f"{where}: a runnable shell block holds migm commands only, got {line!r}"
    result = CliRunner().invoke(app, args[1:])
    assert result.exit_code == 0, f"{where}: `{line}` exited {result.exit_code}:\n{result.output}\n{result.exception!r}"


def run_page(page: str) -> int:
    """Run every runnable block of `page` in the current folder; returns how many ran."""
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for lang, code, line in fences(page):
        where = f"{page}:{line}"
        if lang not in CODE or code.startswith(NOT_RUN):
            continue
        if lang in ("python", "py"):
            exec(compile(code, where, "exec"), namespace)
        else:
            for command in commands(code):
                run_command(command, where)
        ran += 1
    return ran


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_runs_as_written(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_page(page) > 0


@pytest.mark.parametrize("page", PAGES)
def test_a_block_left_out_says_why(page):
    for lang, code, line in fences(page):
        assert lang in CODE | {"text"}, f"{page}:{line}: fence language {lang!r} is neither code nor text"
        if code.startswith(NOT_RUN):
            assert code.splitlines()[0][len(NOT_RUN) :].strip(), f"{page}:{line}: say why the block is not run"


def test_the_readme_python_example_is_run():
    """The README's Python example is a `python` block that runs (not one left out)."""
    runnable = [code for lang, code, _ in fences("README.md") if lang == "python" and not code.startswith(NOT_RUN)]
    assert runnable and all("import migm" in code for code in runnable)
