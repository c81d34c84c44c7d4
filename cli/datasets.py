"""Commands on trajectory datasets: dump-trajectories, verify, inspect, push."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from cli.app import (
    CheckpointOpt, DeviceOpt, GuidanceOpt, HeadsOpt, JsonOpt, ModelOpt, PrecisionOpt, QuietOpt, RTempOpt, SeedOpt,
    SmTempOpt, StepsOpt, app, base_spec, call, console, parse_classes, print_metrics, progress_bar,
)  # fmt: skip


@app.command("dump-trajectories")
def dump_trajectories(
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder to write (missing folders are created).")],
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
    precision: PrecisionOpt = "fp32",
    checkpoint: CheckpointOpt = None,
    heads: HeadsOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roll out a base model and write its per-step feature trajectories as a dataset."""
    from trajectories.base import load_base
    from trajectories.dump import DumpConfig, dump_trajectories as run

    cfg = DumpConfig(num_samples=num_samples, steps=steps, out=out, format=format, codec=codec, shard_size=shard_size,
                     batch_size=batch_size, seed=seed, classes=call(parse_classes, classes) if classes else None,
                     guidance=guidance, r_temp=r_temp, sm_temp=sm_temp)  # fmt: skip
    base = call(load_base, base_spec(model, checkpoint, heads=heads, precision=precision, device=device))
    with progress_bar(num_samples, "dumping samples", quiet or as_json) as bar:
        manifest = call(run, cfg, base, overwrite=overwrite, progress=bar)
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
