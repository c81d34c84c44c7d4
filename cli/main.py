"""`migm`: the command-line interface. Each command parses options, calls one library function and
prints the result. User errors print `error: …` and exit 2 (`--debug` shows the traceback)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Annotated, Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from trajectories.errors import MigmError

app = typer.Typer(
    name="migm",
    help="Learned shortcuts for masked image generation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

# Options shared by several commands.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Base model name (see `migm models`).")]
StepsOpt = Annotated[int, typer.Option("--steps", "-n", help="Total sampling steps N.")]
BudgetOpt = Annotated[Optional[int], typer.Option("--budget", "-b", help="Full steps B (1..N); without a predictor sampling is vanilla.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same samples.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Samples per rollout batch.")]
GuidanceOpt = Annotated[Optional[float], typer.Option("--guidance", "-w", help="CFG weight w (default: the base's).")]
RTempOpt = Annotated[Optional[float], typer.Option("--r-temp", help="Gumbel noise scale on confidence (default: the base's).")]
SmTempOpt = Annotated[Optional[float], typer.Option("--sm-temp", help="Softmax temperature multiplier (default: the base's).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def call(fn: Callable, *args, **kwargs):
    """Run a library function; a user error becomes `error: …` on stderr and exit code 2."""
    try:
        return fn(*args, **kwargs)
    except MigmError as e:
        if _state["debug"]:
            raise
        err_console.print(f"error: {e}", markup=False, highlight=False)
        raise typer.Exit(2) from None


@contextmanager
def progress_bar(total: int, what: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    if quiet:
        yield None
        return
    columns = [TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def print_metrics(title: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=title, show_header=False)
    flat = {}
    for key, value in result.items():
        flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    for key, value in flat.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List the base models."""
    from trajectories.base import BASES

    rows = {name: desc for name, (_, desc) in sorted(BASES.items())}
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "description")
    for name, desc in rows.items():
        table.add_row(name, desc)
    console.print(table)


@app.command()
def generate(
    out: Annotated[str, typer.Option("--out", "-o", help="PNG file to write (its folder must exist).")] = "grid.png",
    model: ModelOpt = "maskgit-digits",
    classes: Annotated[str, typer.Option("--classes", help="Classes, e.g. 0-9 or 1,4,7; one grid row each.")] = "0-9",
    per_class: Annotated[int, typer.Option("--per-class", help="Samples per class.")] = 8,
    steps: StepsOpt = 16,
    budget: BudgetOpt = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    r_temp: RTempOpt = None,
    sm_temp: SmTempOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample a grid of images, one row per class, and write it as a PNG."""
    from trajectories.sample import generate as run, parse_classes

    class_ids = call(parse_classes, classes)
    with progress_bar(len(class_ids) * per_class, "sampling", quiet or as_json) as bar:
        result = call(run, model, class_ids, per_class, steps, seed, out, budget=budget, device=device,
                      batch_size=batch_size, progress=bar, guidance=guidance, r_temp=r_temp, sm_temp=sm_temp)  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"wrote {result['out']} ({result['images']} images), "
                      f"latency {result['latency_per_image_s'] * 1000:.2f} ms per image")  # fmt: skip


@app.command()
def score(
    model: ModelOpt = "maskgit-digits",
    samples: Annotated[int, typer.Option("--samples", help="Samples to score, classes spread evenly.")] = 1000,
    steps: StepsOpt = 16,
    budget: BudgetOpt = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    r_temp: RTempOpt = None,
    sm_temp: SmTempOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample and score: class accuracy and Fréchet distance by the base's classifier."""
    from trajectories.sample import score as run

    with progress_bar(samples, "sampling", quiet or as_json) as bar:
        result = call(run, model, samples, steps, seed, budget=budget, device=device, batch_size=batch_size,
                      progress=bar, guidance=guidance, r_temp=r_temp, sm_temp=sm_temp)  # fmt: skip
    print_metrics(f"{model}, N={steps}", result, as_json)
