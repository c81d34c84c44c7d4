"""MkDocs hooks of the docs site: the CLI reference, generated from the Typer app at build time, and the
benchmark plots, which live in benchmarks/results/ (pages link them as ../benchmarks/results/NAME, so the
links work on GitHub too; in the site they are served from results/)."""

from __future__ import annotations

from pathlib import Path

import click
from mkdocs.structure.files import File, Files
from typer.cli import get_docs_for_click
from typer.main import get_command

ROOT = Path(__file__).resolve().parents[2]  # the repository: docs/mkdocs/hooks.py
RESULTS = "../benchmarks/results/"


def cli_reference() -> str:
    """Markdown of every `migm` command and option, from the app the `migm` script runs (Typer's own
    doc generator over its click command tree)."""
    from migm.cli.main import app

    command = get_command(app)
    body = get_docs_for_click(obj=command, ctx=click.Context(command, info_name="migm"), name="migm")
    intro = (
        "Generated from the Typer app (`migm.cli.main:app`) when the site is built: every command, argument "
        "and option as `migm COMMAND --help` prints it.\n\n"
    )
    _, _, rest = body.partition("\n")  # Typer's title is `# \`migm\``; the page's is the nav's
    return "# CLI reference\n\n" + intro + rest


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    for png in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(RESULTS, "results/")
