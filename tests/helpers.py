"""Helpers the test files share: relative error, and running the CLI expecting success or a one-line error."""

import torch
from typer.testing import CliRunner

from migm.cli.main import app

runner = CliRunner()


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error ‖ours − ref‖ / ‖ref‖ (in float32)."""
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def ok(args: list) -> str:
    """Run `migm ARGS`; it succeeds. Returns its output."""
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def one_line_stderr(code: int, stderr: str, *fragments: str) -> str:
    """Exit code 2 and one `error: …` line on stderr holding every fragment, no traceback. Returns the line."""
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)
    return lines[0]


def one_line_error(result, *fragments: str) -> str:
    """A CliRunner result that is a one-line user error (see `one_line_stderr`)."""
    assert "Traceback" not in result.output
    return one_line_stderr(result.exit_code, result.stderr, *fragments)


def refused(args: list, *fragments: str) -> str:
    """Run `migm ARGS`; it is refused with one `error: …` line. Returns the line."""
    return one_line_error(runner.invoke(app, [str(a) for a in args]), *fragments)
