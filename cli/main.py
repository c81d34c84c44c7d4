"""`migm`: the command-line interface. Each command parses options, calls one library function and
prints the result; the commands live in one module per group."""

from migm.cli import datasets, sampling, zoo  # noqa: F401,E402,I001  (each registers its commands on `app`)
from migm.cli.app import app

__all__ = ["app"]

if __name__ == "__main__":  # `python -m migm.cli.main …`, e.g. under torchrun
    app()
