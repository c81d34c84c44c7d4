"""Commands that sample: models, generate, score, sample, bench."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from migm.cli.app import (
    BatchOpt,
    BudgetOpt,
    DeviceOpt,
    FidDimsOpt,
    InceptionWeightsOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    StepsOpt,
    app,
    call,
    condition_args,
    console,
    err_console,
    load_metrics,
    print_metrics,
    progress_bar,
    steps_for,
)
from migm.cli.groups import base_options, metric_options, prompt_options, sampler_options
from migm.trajectories.base import BaseSpec


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List the base models: built in, and plugins from the `migm.bases` entry-point group, with their source."""
    from migm.trajectories.base.registry import all_registrations

    rows = {r.name: {"description": r.description, "source": r.source} for r in call(all_registrations)}
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "description", "source")
    for name, row in rows.items():
        table.add_row(name, row["description"], row["source"])
    console.print(table)


ImageOutOpt = Annotated[
    str, typer.Option("--out", "-o", help="Image file to write (.png, .jpg, …); missing folders are created.")
]
ClassesOpt = Annotated[
    Optional[str], typer.Option("--classes", help="Classes, e.g. 0-9 or 1,4,7; one grid row each (default 0-9).")
]
PerClassOpt = Annotated[int, typer.Option("--per-class", help="Samples per class (or prompt).")]
PlacementOpt = Annotated[
    str,
    typer.Option(
        "--placement",
        help="Where the B full steps go: uniform (published: round(N*k/B)), or auto (a zoo shortcut's: least "
        "summed held-out error of its chained steps, stored at training).",
    ),
]


@app.command()
@base_options()
@sampler_options
@prompt_options
def generate(
    spec: BaseSpec,
    sampler: dict,
    prompt_list: list[str] | None,
    out: ImageOutOpt = "grid.png",
    classes: ClassesOpt = None,
    per_class: PerClassOpt = 8,
    steps: StepsOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample a grid of images with vanilla sampling, one row per class, and write it as an image."""
    from migm.trajectories.base import load_base
    from migm.trajectories.generate import generate as run
    from migm.trajectories.rollout import SamplerConfig

    base = call(load_base, spec)
    class_ids, prompt_list = call(condition_args, base, classes, prompt_list)
    steps = steps_for(base, steps, 16)
    config = call(SamplerConfig.for_base, base, steps, **sampler)
    rows = len(prompt_list or class_ids or [])
    with progress_bar(rows * per_class, "sampling", quiet or as_json) as bar:
        result = call(
            run, base, class_ids, per_class, config, seed, out, batch_size=batch_size, progress=bar, prompts=prompt_list
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(
            f"wrote {result['out']} ({result['images']} images), "
            f"latency {result['latency_per_image_s'] * 1000:.2f} ms per image",
            markup=False,
        )


SamplesOpt = Annotated[
    Optional[int],
    typer.Option(
        "--samples",
        help="Samples, classes (or prompts) spread evenly (default 1000; with --fid-ref / --clip on a real base: "
        "50 per class, as the published ImageNet evaluation, or each prompt once).",
    ),
]


@app.command()
@base_options()
@sampler_options
@prompt_options
@metric_options
def score(
    spec: BaseSpec,
    sampler: dict,
    prompt_list: list[str] | None,
    metric_options: dict,
    samples: SamplesOpt = None,
    steps: StepsOpt = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample with vanilla sampling and score: the digits bases' classifier (accuracy, Fréchet distance),
    FID and Inception Score against --fid-ref, CLIP score of a text base's images against their prompts."""
    from migm.shortcut_zoo.image_metrics import default_samples
    from migm.shortcut_zoo.score import score as run
    from migm.trajectories.base import load_base
    from migm.trajectories.rollout import SamplerConfig

    base = call(load_base, spec)
    steps = steps_for(base, steps, 16)
    config = call(SamplerConfig.for_base, base, steps, **sampler)
    metrics = load_metrics(base, seed, batch_size, quiet or as_json, **metric_options)
    samples = samples if samples is not None else default_samples(base, metrics, prompt_list)
    what = "sampling, then scoring" if metrics else "sampling"
    with progress_bar(samples * (2 if metrics else 1), what, quiet or as_json) as bar:
        result = call(
            run, base, samples, config, seed, batch_size=batch_size, progress=bar, prompts=prompt_list, metrics=metrics
        )
    print_metrics(f"{spec.name}, N={steps}", result, as_json)


@app.command("fid-stats")
def fid_stats(
    folder: Annotated[str, typer.Argument(help="Folder of reference images (subfolders included), used as they are.")],
    out: Annotated[str, typer.Option("--out", "-o", help=".npz to write (mu, sigma, n), for --fid-ref.")],
    inception_weights: InceptionWeightsOpt = None,
    fid_dims: FidDimsOpt = 2048,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per Inception forward.")] = 50,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Precompute the FID statistics (Inception-v3 pool features' mean and covariance) of a folder of images."""
    from migm.shortcut_zoo.image_metrics import fid_stats as run
    from migm.shortcut_zoo.image_metrics import reference_count
    from migm.trajectories.base import resolve_device

    dev = call(resolve_device, device)
    with progress_bar(call(reference_count, folder), "reference images", quiet or as_json) as bar:
        result = call(
            run, folder, out, inception_weights, dev, batch_size, progress=bar, verbose=not quiet, dims=fid_dims
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(f"wrote {result['out']} ({result['images']} images, {result['features']} features)", markup=False)


ShortcutOpt = Annotated[Optional[str], typer.Option("--shortcut", help="Zoo folder of a trained shortcut.")]
PredictorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--predictor",
        help="shortcut (default with --shortcut), cache, taylor, taylor2, or ml-cache (DiMOO bases; picks its "
        "own full steps, no --budget; knobs as ml-cache:warmup=0.3,period=5,quantile=0.1).",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Use a shortcut trained for another base fingerprint.")]


@app.command()
@base_options()
@sampler_options
@prompt_options
def sample(
    spec: BaseSpec,
    sampler: dict,
    prompt_list: list[str] | None,
    out: ImageOutOpt = "grid.png",
    shortcut: ShortcutOpt = None,
    predictor: PredictorOpt = None,
    classes: ClassesOpt = None,
    per_class: PerClassOpt = 8,
    steps: StepsOpt = None,
    budget: BudgetOpt = None,
    placement: PlacementOpt = "uniform",
    seed: SeedOpt = 0,
    force: ForceOpt = False,
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Sample with a shortcut: B of the N steps run the base model, the others the predictor."""
    from migm.shortcut_zoo.sample import sample as run
    from migm.trajectories.base import load_base
    from migm.trajectories.rollout import SamplerConfig

    base = call(load_base, spec)
    class_ids, prompt_list = call(condition_args, base, classes, prompt_list)
    steps = steps_for(base, steps, 32)
    config = call(SamplerConfig.for_base, base, steps, budget, **sampler)
    rows = len(prompt_list or class_ids or [])
    with progress_bar(rows * per_class, "sampling", quiet or as_json) as bar:
        result = call(
            run,
            base,
            class_ids,
            per_class,
            config,
            seed,
            out,
            shortcut=shortcut,
            predictor=predictor,
            force=force,
            batch_size=batch_size,
            progress=bar,
            prompts=prompt_list,
            placement=placement,
        )
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        console.print(
            f"wrote {result['out']} ({result['images']} images, {result['predictor']}, N={steps}, "
            f"{len(result['full_steps'])} full steps: {result['full_steps']}, {placement} placement), "
            f"latency {result['latency_per_image_s'] * 1000:.2f} ms per image",
            markup=False,
        )


BenchShortcutOpt = Annotated[Optional[list[str]], typer.Option("--shortcut", help="Zoo folder (repeatable).")]
ConfigsOpt = Annotated[str, typer.Option("--configs", help="Comma-separated N or NxBy configs.")]
PredictorsOpt = Annotated[
    str,
    typer.Option(
        "--predictors",
        help="Comma-separated: shortcut, cache, taylor, taylor2, ml-cache (DiMOO bases, one row per N; "
        "knobs as ml-cache:warmup=0.3,period=5,quantile=0.1).",
    ),
]
BenchPlacementOpt = Annotated[
    str,
    typer.Option(
        "--placement",
        help="Comma-separated placements of a zoo shortcut's full steps, one row each: uniform (published), "
        "auto (by its stored held-out errors; row shortcut:NAME@auto). Peers are placed uniformly.",
    ),
]
BootstrapOpt = Annotated[
    int,
    typer.Option(
        "--bootstrap", help="Resamples of the 95% intervals of every quality column (0: none; at most 10000)."
    ),
]
FidelityOpt = Annotated[
    bool,
    typer.Option(
        "--fidelity/--no-fidelity",
        help="Rollout fidelity: cosine to the base's own feature at each shortcut step (one extra base forward).",
    ),
]
RepeatsOpt = Annotated[int, typer.Option("--repeats", help="Timed batches per point, after a warm-up.")]
OutOpt = Annotated[str, typer.Option("--out", "-o", help="Folder for results.json, results.md, pareto.png.")]
BenchForceOpt = Annotated[bool, typer.Option("--force", help="Use shortcuts trained for another base fingerprint.")]


@app.command()
@base_options()
@prompt_options
@metric_options
def bench(
    spec: BaseSpec,
    prompt_list: list[str] | None,
    metric_options: dict,
    shortcut: BenchShortcutOpt = None,
    configs: ConfigsOpt = "N8,N12,N16,N32,N32B12,N32B8,N16B6",
    predictors: PredictorsOpt = "shortcut,cache,taylor",
    placement: BenchPlacementOpt = "uniform",
    bootstrap: BootstrapOpt = 1000,
    fidelity: FidelityOpt = True,
    samples: SamplesOpt = None,
    repeats: RepeatsOpt = 5,
    out: OutOpt = "bench",
    seed: SeedOpt = 0,
    force: BenchForceOpt = False,
    batch_size: BatchOpt = 250,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Quality vs latency of vanilla, shortcut and training-free configs: table, JSON and Pareto plot
    (quality: FID / IS with --fid-ref, CLIP score with --clip, the digits classifier, token agreement)."""
    from migm.shortcut_zoo.bench import BenchConfig, results_table, run_bench
    from migm.shortcut_zoo.image_metrics import default_samples
    from migm.shortcut_zoo.predictors import split_predictors
    from migm.trajectories.base import load_base

    base = call(load_base, spec)
    metrics = load_metrics(base, seed, batch_size, quiet or as_json, **metric_options)
    cfg = BenchConfig(
        shortcuts=shortcut or [],
        configs=[c for c in configs.split(",") if c.strip()],
        predictors=split_predictors(predictors),
        samples=samples if samples is not None else default_samples(base, metrics, prompt_list),
        seed=seed,
        batch_size=batch_size,
        repeats=repeats,
        out=out,
        force=force,
        prompts=prompt_list,
        placements=[p.strip() for p in placement.split(",") if p.strip()],
        bootstrap=bootstrap,
        fidelity=fidelity,
    )
    if quiet or as_json:
        result = call(run_bench, cfg, base, metrics=metrics)
    else:
        with err_console.status("benchmarking") as status:
            result = call(
                run_bench, cfg, base, progress=lambda what: status.update(f"benchmarking {what}"), metrics=metrics
            )
    if as_json:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=2))
        return
    console.print(results_table(result), markup=False, highlight=False)
    console.print("wrote " + ", ".join(result["files"]), markup=False)
