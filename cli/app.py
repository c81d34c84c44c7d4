"""The `migm` Typer app and what its commands share: options, error handling, progress, tables.

User errors (MigmError) print `error: …` and exit 2 (`--debug` shows the traceback)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from migm.trajectories.checks import check_prompts, inert
from migm.trajectories.errors import MigmError

app = typer.Typer(
    name="migm",
    help="Learned shortcuts for masked image generation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags read as flags, not as `--json <bool>`
)
# Lines of output that goes to a pipe or a file (`migm … | cat`, CI logs): wide enough for every table.
PIPE_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """rich's console on a terminal; on a pipe or file (rich would assume 80 columns and cut table cells to
    "…"), wide tables and no wrapping of plain text, so a markdown table keeps one row per line. An
    explicit $COLUMNS is kept."""
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)


console = make_console()
err_console = make_console(stderr=True)
_state = {"debug": False}

# Options shared by several commands.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Base model name (see `migm models`).")]
StepsOpt = Annotated[
    Optional[int],
    typer.Option("--steps", "-n", help="Total sampling steps N (default: the base's, else the command's)."),
]
BudgetOpt = Annotated[
    Optional[int],
    typer.Option("--budget", "-b", help="Full steps B (1..N) that run the base; below N needs a predictor."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed; the same seed gives the same samples.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:K.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Samples per rollout batch.")]
GuidanceOpt = Annotated[Optional[float], typer.Option("--guidance", "-w", help="CFG weight w (default: the base's).")]
RTempOpt = Annotated[
    Optional[float], typer.Option("--r-temp", help="Gumbel noise scale on confidence (default: the base's).")
]
SmTempOpt = Annotated[
    Optional[float], typer.Option("--sm-temp", help="Softmax temperature multiplier (default: the base's).")
]
TemperatureOpt = Annotated[
    Optional[float],
    typer.Option("--temperature", help="DiMOO-family bases: Gumbel-max sampling temperature τ (default: the base's)."),
]
# Text-to-image bases (--model dimoo) take prompts instead of classes.
PromptOpt = Annotated[
    Optional[list[str]],
    typer.Option("--prompt", help="Prompt of a text-to-image base (repeatable; one grid row each)."),
]
PromptsFileOpt = Annotated[Optional[str], typer.Option("--prompts", help="File of prompts, one per line.")]
HeightOpt = Annotated[
    Optional[int], typer.Option("--height", help="Image height in pixels, a multiple of 16 (--model dimoo).")
]
WidthOpt = Annotated[
    Optional[int], typer.Option("--width", help="Image width in pixels, a multiple of 16 (--model dimoo).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
# A dataset location may be an fsspec URL (s3://, gs://, az://, hf://datasets/… to read, memory://, file://).
StorageOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--storage-option",
        help="Option of the dataset URL's filesystem, KEY=VALUE (repeatable), e.g. endpoint_url=http://host:9000 "
        "for an S3-compatible server; credentials come as the store's own tools expect (environment, config files).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
# Real bases (--model maskgit) load from local files.
CheckpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--checkpoint",
        help="Checkpoint of a real base: a local file or folder, or hf://ORG/NAME[/PATH] (Hugging Face cache).",
    ),
]
VqganOpt = Annotated[
    Optional[str], typer.Option("--vqgan", help="Taming VQGAN folder, model.yaml + last.ckpt (--model maskgit).")
]
HeadsOpt = Annotated[
    Optional[int], typer.Option("--heads", help="Attention heads of the checkpoint (--model maskgit, default 16).")
]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision",
        help="fp32, bf16 or fp16 (fp16 on cuda); default: the base's (fp32; dimoo: bf16 on cuda).",
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the base's transformer and head and the shortcut (static shapes; CUDA graphs for "
        "small-batch shortcut steps on cuda): the first batch compiles (slow), the rest run faster. Same "
        "tokens as eager at fp32 on CPU. See docs/gpu.md.",
    ),
]
PixelsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--pixels",
        help="Decoded images to [0, 1] (--model maskgit): minmax per image (default, as published) or clamp.",
    ),
]

# Image metrics of real bases (`migm score`, `migm bench`).
FidRefOpt = Annotated[
    Optional[str],
    typer.Option(
        "--fid-ref",
        help="FID and Inception Score against this reference: a folder of images or a .npz of statistics "
        "(mu, sigma; `migm fid-stats` writes one).",
    ),
]
InceptionWeightsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--inception-weights",
        help="torch-fidelity's Inception-v3 weights file (default: torch.hub's copy, downloaded on first use).",
    ),
]
FidDimsOpt = Annotated[
    int,
    typer.Option(
        "--fid-dims",
        help="Inception features for FID: 2048 (pool, as published and as FIDs are reported), or 768, 192, 64 "
        "(earlier layers, as pytorch-fid's --dims, for sets far smaller than 2048 images).",
    ),
]
ClipOpt = Annotated[
    Optional[str],
    typer.Option("--clip", help="Text bases: CLIP score against the prompts with this local CLIP folder."),
]


def condition_args(base, classes: str | None, prompts: list[str] | None) -> tuple[list[int] | None, list[str] | None]:
    """(class ids, prompts) of a sampling command: a text base takes prompts, a class base classes (default 0-9)."""
    if base.text:
        if classes is not None:
            raise MigmError(
                f"--model {base.name} is text-to-image: give --prompt TEXT or --prompts FILE, not --classes"
            )
        if prompts:
            base.encode_prompts(prompts)  # a prompt longer than the base takes is refused before any work
        return None, prompts
    return parse_classes(classes or "0-9"), prompts


def steps_for(base, steps: int | None, fallback: int) -> int:
    """--steps, else the base's own default N (DiMOO: 64), else the command's."""
    return steps if steps is not None else base.sampler_defaults.get("steps", fallback)


def parse_prompts(prompt: list[str] | None, prompts_file: str | None) -> list[str] | None:
    """--prompt (repeatable) and --prompts FILE (one per line, blank lines skipped) -> prompts, or None."""
    out = list(prompt or [])
    if prompts_file is not None:
        try:
            with open(prompts_file, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise MigmError(
                f"cannot read the prompt file {prompts_file}: {getattr(e, 'strerror', None) or e}"
            ) from None
        lines = [line for line in lines if line]
        if not lines:
            raise MigmError(f"the prompt file {prompts_file} holds no prompt")
        out += lines
    if out:
        check_prompts(out)
    return out or None


MAX_CLASSES = 65536  # far past any class-conditional base (ImageNet: 1000); a range is expanded in memory


def parse_classes(spec: str) -> list[int]:
    """'0-9', '3', '1,4,7' or '0-2,5' -> sorted class ids (checked against the base later)."""
    out: set[int] = set()
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi - lo >= MAX_CLASSES:
                    raise MigmError(f"--classes range {lo}-{hi} names more than {MAX_CLASSES:,} classes")
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
    except ValueError:
        raise MigmError(f"classes must look like '0-9' or '1,4,7', got {spec!r}") from None
    if not out:
        raise MigmError(f"no classes in {spec!r}")
    return sorted(out)


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
        typer.echo(f"error: {inert(str(e))}", err=True)  # messages quote paths and names from files
        raise typer.Exit(2) from None


@contextmanager
def progress_bar(total: int, what: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    if quiet:
        yield None
        return
    columns = [
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    # off when stderr is no terminal (a log, a pipe): rich would leave a blank line beside an error there
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(what, total=total, rate="")
        start = time.perf_counter()

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - start):.1f}/s")

        yield advance


def load_metrics(
    base,
    seed: int,
    batch_size: int,
    quiet: bool,
    fid_ref: str | None = None,
    inception_weights: str | None = None,
    fid_dims: int = 2048,
    clip: str | None = None,
):
    """The image metrics a command asks for (its metric options), loaded before any sampling (None: none asked)."""
    from migm.shortcut_zoo.image_metrics import load_image_metrics, reference_count

    with progress_bar(call(reference_count, fid_ref), "reference images", quiet) as bar:
        return call(
            load_image_metrics,
            base,
            fid_ref,
            inception_weights,
            clip,
            seed,
            batch_size,
            progress=bar,
            verbose=not quiet,
            dims=fid_dims,
        )


def print_metrics(title: str, result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=plain(title), show_header=False)
    flat = {}
    for key, value in result.items():
        flat.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
    for key, value in flat.items():  # None: a figure not measured (e.g. too few held-out samples)
        shown = "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
        table.add_row(plain(key), plain(shown))
    console.print(table)


def print_per_step(per_step: list[dict]) -> None:
    """The per-step validation figures, one row per step (as many rows as steps, so any N fits)."""
    table = Table("step", "cosine", "cache cosine", "token agreement", "cache agreement", title="per step (held-out)")
    for r in per_step:
        table.add_row(str(r["step"]), *(f"{r[k]:.4f}" for k in ("cos", "cache_cos", "agree", "cache_agree")))
    console.print(table)


def plain(text: str) -> Text:
    """User-supplied text (paths, names) for rich: never read as markup, control characters inert."""
    return Text(inert(str(text)))


def parse_overrides(items: list[str]) -> dict:
    """['bottleneck=1', 'heads=4'] -> {'bottleneck': 1, 'heads': 4} (values parsed as JSON when they can be)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MigmError(f"arch options look like key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except ValueError:  # Python's int-string limit: far past any size an arch accepts
            raise MigmError(
                f"arch option {key} is a number of {len(value):,} digits; sizes are at most 65536"
            ) from None
    return out
