"""Commands on trajectory datasets: dump-trajectories, verify, inspect, push."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Annotated, Optional

import typer
from rich.table import Table

from migm.cli.app import (
    JsonOpt,
    QuietOpt,
    SeedOpt,
    StepsOpt,
    StorageOpt,
    app,
    call,
    console,
    parse_classes,
    plain,
    print_metrics,
    progress_bar,
    steps_for,
)
from migm.cli.groups import base_options, prompt_options, sampler_options
from migm.trajectories.base import BaseSpec
from migm.trajectories.checks import inert

OutOpt = Annotated[
    str,
    typer.Option(
        "--out", "-o", help="Dataset folder (missing folders are created) or URL (s3://bucket/set, gs://…) to write."
    ),
]
NumSamplesOpt = Annotated[int, typer.Option("--num-samples", help="Samples to roll out (one row per CFG branch).")]
FormatOpt = Annotated[str, typer.Option("--format", help="zarr (local random access) or parquet (the Hub's layout).")]
CodecOpt = Annotated[
    str,
    typer.Option(
        "--codec",
        help="lossless; quant[:bits=2..8] (lossy, per-token scale); delta[:bits=2..8,keyframe=16] "
        "(lossy, temporal: quantised differences from the previous decoded step, keyframes every k steps).",
    ),
]
ShardSizeOpt = Annotated[int, typer.Option("--shard-size", help="Samples per shard.")]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per rollout batch.")]
ClassesOpt = Annotated[Optional[str], typer.Option("--classes", help="Classes to sample, e.g. 0-9 (default: all).")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an output made with another config.")]


@app.command("dump-trajectories")
@base_options(omit=("vqgan", "pixels"))
@sampler_options
@prompt_options
def dump_trajectories(
    spec: BaseSpec,
    sampler: dict,
    prompt_list: list[str] | None,
    out: OutOpt,
    num_samples: NumSamplesOpt = 2048,
    steps: StepsOpt = None,
    format: FormatOpt = "zarr",
    codec: CodecOpt = "lossless",
    shard_size: ShardSizeOpt = 256,
    batch_size: BatchSizeOpt = 64,
    seed: SeedOpt = 0,
    classes: ClassesOpt = None,
    overwrite: OverwriteOpt = False,
    storage_option: StorageOpt = None,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Roll out a base model and write its per-step feature trajectories as a dataset."""
    from migm.trajectories.base import load_base
    from migm.trajectories.dump import DumpConfig, check_out
    from migm.trajectories.dump import dump_trajectories as run
    from migm.trajectories.store.location import parse_storage_options

    cfg = DumpConfig(
        num_samples=num_samples,
        steps=steps or 16,  # replaced by the base's default below when --steps is not given
        out=out,
        format=format,
        codec=codec,
        shard_size=shard_size,
        batch_size=batch_size,
        seed=seed,
        classes=call(parse_classes, classes) if classes else None,
        prompts=prompt_list,
        **sampler,
        storage_options=call(parse_storage_options, storage_option),
    )
    call(check_out, out, cfg.storage_options)  # before loading the base: a bad --out never wastes a load
    base = call(load_base, spec)
    cfg = replace(cfg, steps=steps_for(base, steps, 16))
    with progress_bar(num_samples, "dumping samples", quiet or as_json) as bar:
        manifest = call(run, cfg, base, overwrite=overwrite, progress=bar)
    summary = {
        "out": out,
        "rows": manifest.rows,
        "shards": len(manifest.shards),
        "format": manifest.format,
        "codec": manifest.codec.name,
        "megabytes": manifest.bytes / 1e6,
    }
    print_metrics("dataset", summary, as_json)


@app.command()
def verify(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL.")],
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a dataset's manifest, shard checksums and every row; exit 2 if any shard is bad."""
    from migm.trajectories.store.location import parse_storage_options
    from migm.trajectories.store.verify import verify_dataset

    report = call(verify_dataset, dataset, call(parse_storage_options, storage_option))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        table = Table("shard", "rows", "status")
        for s in report["shards"]:  # names and problems come from files: shown as plain text
            table.add_row(plain(s["name"]), str(s["rows"]), plain("ok" if s["ok"] else f"BAD: {s['problem']}"))
        console.print(table)
    if not report["ok"]:
        bad = [inert(repr(s["name"])) for s in report["shards"] if not s["ok"]]
        typer.echo(f"error: {len(bad)} bad shard(s): {', '.join(bad)}", err=True)
        raise typer.Exit(2)


@app.command("inspect")
def inspect_dataset(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL.")],
    plot: Annotated[
        Optional[str],
        typer.Option(
            "--plot", help="Smoothness curve PNG to write (default: a temporary file; the dataset is never written)."
        ),
    ] = None,
    storage_option: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rows, dims, size vs raw float16, codec error, and the smoothness curve of the features."""
    import tempfile

    from migm.trajectories.store.location import parse_storage_options
    from migm.trajectories.store.verify import inspect_dataset as run

    if plot is None:  # inspect only reads the dataset (it may be read-only): the plot goes elsewhere
        plot = tempfile.NamedTemporaryFile(prefix="migm-smoothness-", suffix=".png", delete=False).name
    info = call(run, dataset, plot=plot, storage_options=call(parse_storage_options, storage_option))
    if as_json:
        print(json.dumps(info, indent=2))
        return
    curve = info.pop("smoothness")
    print_metrics(f"dataset {dataset}", info, False)
    console.print("smoothness, mean cos(f_s, f_s+1) per step: " + " ".join(f"{c:.4f}" for c in curve))


@app.command()
def push(
    dataset: Annotated[str, typer.Argument(help="Dataset folder or URL, or zoo folder.")],
    repo_id: Annotated[
        str,
        typer.Option(
            "--repo-id", help="Hub repo, user/name (a dataset repo for datasets, a model repo for shortcuts)."
        ),
    ],
    private: Annotated[
        bool, typer.Option("--private/--public", help="Create the repo private (default), or public.")
    ] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be uploaded, upload nothing.")] = False,
    storage_option: StorageOpt = None,
) -> None:
    """Upload a verified dataset folder, or a zoo folder, to the Hugging Face Hub: exactly the files
    its manifest or zoo config lists, nothing else, never through a link."""
    from pathlib import Path

    from migm.shortcut_zoo.export import push as push_zoo
    from migm.trajectories.store.hub import push_dataset
    from migm.trajectories.store.location import parse_storage_options, protocol_of
    from migm.trajectories.store.schema import MANIFEST

    options = call(parse_storage_options, storage_option)
    if protocol_of(dataset) is not None or (Path(dataset) / MANIFEST).exists():  # a dataset goes straight to the store
        result = call(push_dataset, dataset, repo_id, private=private, dry_run=dry_run, storage_options=options)
    else:
        result = call(push_zoo, dataset, repo_id, private=private, dry_run=dry_run)
    verb = "would upload" if dry_run else "uploaded"
    console.print(
        f"{verb} {len(result['files'])} files ({result['bytes'] / 1e6:.1f} MB) to {repo_id}"
        + (f" ({'private' if private else 'public'})" if dry_run else f": {result.get('url')}")
    )
    if dry_run:
        for f in result["files"]:
            console.print(f"  {inert(f)}", markup=False, highlight=False)
        console.rule("card (README.md)")
        console.print(inert(result["card"]), markup=False, highlight=False)
