"""`migm`: the command-line interface. Each command parses options, calls one library function and
prints the result. User errors print `error: …` and exit 2 (`--debug` shows the traceback)."""

from __future__ import annotations

import json
import time
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
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@contextmanager
def progress_bar(total: int, what: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    if quiet:
        yield None
        return
    columns = [TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(what, total=total, rate="")
        start = time.perf_counter()

        def advance(n: int) -> None:
            done = bar.tasks[0].completed + n
            bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - start):.1f}/s")

        yield advance


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


@app.command("dump-trajectories")
def dump_trajectories(
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder to write (its parent must exist).")],
    model: ModelOpt = "maskgit-digits",
    num_samples: Annotated[int, typer.Option("--num-samples", help="Samples to roll out (one row per CFG branch).")] = 2048,
    steps: StepsOpt = 16,
    format: Annotated[str, typer.Option("--format", help="zarr (local random access) or parquet (the Hub's layout).")] = "zarr",
    codec: Annotated[str, typer.Option("--codec", help="lossless, or quant[:bits=2..8] (lossy, per-token scale).")] = "lossless",
    shard_size: Annotated[int, typer.Option("--shard-size", help="Samples per shard.")] = 256,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples per rollout batch.")] = 64,
    seed: SeedOpt = 0,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Classes to sample, e.g. 0-9 (default: all).")] = None,
    guidance: GuidanceOpt = None,
    r_temp: RTempOpt = None,
    sm_temp: SmTempOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an output made with another config.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roll out a base model and write its per-step feature trajectories as a dataset."""
    from trajectories.dump import DumpConfig, dump_trajectories as run

    cfg = DumpConfig(model=model, num_samples=num_samples, steps=steps, out=out, format=format, codec=codec,
                     shard_size=shard_size, batch_size=batch_size, seed=seed, classes=classes,
                     guidance=guidance, r_temp=r_temp, sm_temp=sm_temp)  # fmt: skip
    with progress_bar(num_samples, "dumping samples", quiet or as_json) as bar:
        manifest = call(run, cfg, device=device, overwrite=overwrite, progress=bar)
    size = sum(s["bytes"] for s in manifest["shards"])
    summary = {"out": out, "rows": manifest["rows"], "shards": len(manifest["shards"]), "format": manifest["format"],
               "codec": manifest["codec"]["name"], "megabytes": size / 1e6}  # fmt: skip
    print_metrics("dataset", summary, as_json)


@app.command()
def verify(dataset: Annotated[str, typer.Argument(help="Dataset folder.")], as_json: JsonOpt = False) -> None:
    """Check a dataset's schema, shapes and shard checksums; exit 2 if any shard is bad."""
    from trajectories.store.verify import verify_dataset

    report = call(verify_dataset, dataset)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table = Table("shard", "rows", "status")
        for s in report["shards"]:
            table.add_row(s["name"], str(s["rows"]), "ok" if s["ok"] else f"BAD: {s['problem']}")
        console.print(table)
    if not report["ok"]:
        bad = [s["name"] for s in report["shards"] if not s["ok"]]
        typer.echo(f"error: {len(bad)} bad shard(s): {', '.join(bad)}", err=True)
        raise typer.Exit(2)


@app.command("inspect")
def inspect_dataset(
    dataset: Annotated[str, typer.Argument(help="Dataset folder.")],
    plot: Annotated[Optional[str], typer.Option("--plot", help="Smoothness curve PNG (default: DATASET/smoothness.png).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Rows, dims, size vs raw float16, codec error, and the smoothness curve of the features."""
    from pathlib import Path

    from trajectories.store.verify import inspect_dataset as run

    info = call(run, dataset, plot=plot or str(Path(dataset) / "smoothness.png"))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    curve = info.pop("smoothness")
    print_metrics(f"dataset {dataset}", info, False)
    console.print("smoothness, mean cos(f_s, f_s+1) per step: " + " ".join(f"{c:.4f}" for c in curve))


@app.command()
def push(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or zoo folder.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repo, user/name (a dataset repo for datasets, a model repo for shortcuts).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be uploaded, upload nothing.")] = False,
) -> None:
    """Upload a verified dataset folder, or a zoo folder, to the Hugging Face Hub."""
    from shortcut_zoo.export import push as run

    result = call(run, dataset, repo_id, private=private, dry_run=dry_run)
    verb = "would upload" if dry_run else "uploaded"
    console.print(f"{verb} {len(result['files'])} files ({result['bytes'] / 1e6:.1f} MB) to {repo_id}"
                  + (f" ({'private' if private else 'public'})" if dry_run else f": {result.get('url')}"))  # fmt: skip
    if dry_run:
        for f in result["files"]:
            console.print(f"  {f}", markup=False, highlight=False)
        console.rule("dataset card (README.md)")
        console.print(result["card"], markup=False, highlight=False)




@app.command()
def sample(
    out: Annotated[str, typer.Option("--out", "-o", help="PNG file to write (its folder must exist).")] = "grid.png",
    model: ModelOpt = "maskgit-digits",
    shortcut: Annotated[Optional[str], typer.Option("--shortcut", help="Zoo folder of a trained shortcut.")] = None,
    predictor: Annotated[Optional[str], typer.Option("--predictor", help="shortcut (default with --shortcut), cache, taylor or taylor2.")] = None,
    classes: Annotated[str, typer.Option("--classes", help="Classes, e.g. 0-9 or 1,4,7; one grid row each.")] = "0-9",
    per_class: Annotated[int, typer.Option("--per-class", help="Samples per class.")] = 8,
    steps: StepsOpt = 32,
    budget: BudgetOpt = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    r_temp: RTempOpt = None,
    sm_temp: SmTempOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Use a shortcut trained for another base fingerprint.")] = False,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample with a shortcut: B of the N steps run the base model, the others the predictor."""
    from shortcut_zoo.sample import sample as run
    from trajectories.sample import parse_classes

    class_ids = call(parse_classes, classes)
    with progress_bar(len(class_ids) * per_class, "sampling", quiet or as_json) as bar:
        result = call(run, model, class_ids, per_class, steps, seed, out, budget=budget, shortcut=shortcut,
                      predictor=predictor, force=force, device=device, batch_size=batch_size, progress=bar,
                      guidance=guidance, r_temp=r_temp, sm_temp=sm_temp)  # fmt: skip
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"wrote {result['out']} ({result['images']} images, {result['predictor']}, N={steps}, "
                      f"{result['full_steps']} full steps), latency {result['latency_per_image_s'] * 1000:.2f} ms per image")  # fmt: skip



@app.command()
def bench(
    model: ModelOpt = "maskgit-digits",
    shortcut: Annotated[Optional[list[str]], typer.Option("--shortcut", help="Zoo folder (repeatable).")] = None,
    configs: Annotated[str, typer.Option("--configs", help="Comma-separated N or NxBy configs.")] = "N8,N12,N16,N32,N32B12,N32B8,N16B6",
    predictors: Annotated[str, typer.Option("--predictors", help="Comma-separated: shortcut, cache, taylor, taylor2.")] = "shortcut,cache,taylor",
    samples: Annotated[int, typer.Option("--samples", help="Samples per point (classes spread evenly).")] = 1000,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed batches per point, after a warm-up.")] = 5,
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for results.json, results.md, pareto.png.")] = "bench",
    seed: SeedOpt = 0,
    force: Annotated[bool, typer.Option("--force", help="Use shortcuts trained for another base fingerprint.")] = False,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Quality vs latency of vanilla, shortcut and training-free configs: table, JSON and Pareto plot."""
    from shortcut_zoo.bench import BenchConfig, results_table, run_bench

    cfg = BenchConfig(model=model, shortcuts=shortcut or [], configs=[c for c in configs.split(",") if c],
                      predictors=[p for p in predictors.split(",") if p], samples=samples, seed=seed,
                      batch_size=batch_size, repeats=repeats, out=out, force=force)  # fmt: skip
    if quiet or as_json:
        result = call(run_bench, cfg, device=device)
    else:
        with err_console.status("benchmarking") as status:
            result = call(run_bench, cfg, device=device, progress=lambda what: status.update(f"benchmarking {what}"))
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
        return
    console.print(results_table(result), markup=False, highlight=False)
    console.print("wrote " + ", ".join(result["files"]))


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
    return out


@app.command()
def train(
    data: Annotated[str, typer.Option("--data", help="Trajectory dataset folder.")],
    arch: Annotated[str, typer.Option("--arch", help="tiny-transformer, mlp or gru.")] = "tiny-transformer",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Zoo folder to write (default: zoo/ARCH).")] = None,
    arch_option: Annotated[Optional[list[str]], typer.Option("--arch-option", "-a", help="Arch hyper-parameter, key=value (repeatable), e.g. -a bottleneck=2 -a blocks=1.")] = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per step and process.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then cosine decay).")] = 1e-3,
    ema: Annotated[float, typer.Option("--ema", help="EMA decay of the exported weights.")] = 0.999,
    loss: Annotated[str, typer.Option("--loss", help="mse, or mse+kl (adds KL between the base head's distributions).")] = "mse",
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held-out fraction of samples.")] = 0.05,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every this many steps.")] = 500,
    stop_at: Annotated[Optional[int], typer.Option("--stop-at", help="Stop after this step, leaving a checkpoint for --resume.")] = None,
    seed: SeedOpt = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")] = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a shortcut on a trajectory dataset and export it as a zoo folder."""
    from shortcut_zoo.train import TrainConfig, train as run

    cfg = TrainConfig(data=data, arch=arch, out=out or f"zoo/{arch}", arch_config=call(parse_overrides, arch_option or []),
                      steps=steps, batch_size=batch_size, lr=lr, ema=ema, loss=loss, val_fraction=val_fraction,
                      workers=workers, save_every=save_every, stop_at=stop_at, seed=seed)  # fmt: skip
    if not (quiet or as_json):
        columns = [TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("train", total=min(steps, stop_at or steps), info="")
            report = lambda step, l, rate: bar.update(task, completed=step, info=f"loss {l:.4f}  {rate:,.0f} pairs/s")  # noqa: E731
            result = call(run, cfg, device=device, resume=resume, progress=report)
    else:
        result = call(run, cfg, device=device, resume=resume)
    result.pop("losses", None)
    if "stopped_at" in result:
        console.print(f"stopped at step {result['stopped_at']}; resume with --resume (checkpoint {result['checkpoint']})")
        return
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "metrics" not in result:  # a non-main rank
        return
    m, cost = result["metrics"]["overall"], result["cost"]
    print_metrics(f"{cfg.out} ({arch}, {cost['parameters']:,} parameters, {cost['relative_cost']:.3f}x a base forward)", {
        "val cosine": m["cos"], "cache cosine": m["cache_cos"], "val MSE / cache MSE": m["mse_ratio_to_cache"],
        "token agreement": m["agree"], "cache token agreement": m["cache_agree"],
        "pairs/s": result["training"]["pairs_per_second"], "minutes": result["training"]["seconds"] / 60,
    }, False)  # fmt: skip
    console.print(f"wrote {cfg.out}/model.safetensors, config.json, README.md")


zoo_app = typer.Typer(help="Shortcut zoo folders: list, show.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list(root: Annotated[str, typer.Argument(help="Folder holding zoo folders.")] = "zoo", as_json: JsonOpt = False) -> None:
    """List the shortcuts under a folder with their base and validation figures."""
    from shortcut_zoo.export import list_zoo

    rows = call(list_zoo, root)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("path", "arch", "base", "params", "cost", "val cosine", "MSE / cache", "agreement")
    for r in rows:
        table.add_row(r["path"], r["arch"], r["base"], f"{r['parameters']:,}", f"{r['relative_cost']:.3f}",
                      f"{r['cos']:.4f}", f"{r['mse_ratio_to_cache']:.3f}", f"{r['agree']:.4f}")  # fmt: skip
    console.print(table)


@zoo_app.command("show")
def zoo_show(path: Annotated[str, typer.Argument(help="Zoo folder.")]) -> None:
    """Print a shortcut's model card."""
    from pathlib import Path

    from shortcut_zoo.export import read_zoo_config

    call(read_zoo_config, path)
    console.print((Path(path) / "README.md").read_text(), markup=False, highlight=False)


if __name__ == "__main__":  # `python -m cli.main …`, e.g. under torchrun
    app()
