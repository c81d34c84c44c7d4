"""Commands on shortcuts: train, zoo list, zoo show, zoo import."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from migm.cli.app import (
    JsonOpt,
    QuietOpt,
    SeedOpt,
    StorageOpt,
    app,
    call,
    console,
    err_console,
    parse_classes,
    parse_overrides,
    plain,
    print_metrics,
    print_per_step,
    steps_for,
)
from migm.cli.groups import (
    Options,
    base_options,
    group,
    option,
    prompt_options,
    sampler_options,
)
from migm.trajectories.base import BaseSpec
from migm.trajectories.errors import MigmError


def parse_weights(text: str | None) -> list[float] | None:
    """'1,0.5,0.25' -> [1.0, 0.5, 0.25] (None: not given)."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise MigmError(f"--rollout-weights takes comma-separated numbers, e.g. 1,0.5,0.25, got {text!r}") from None


def live_config(live: bool, data: str | None, model: str | None, compile: bool = False, **options):
    """`LiveConfig` of `train --live` (None without it), after checking the options belong together."""
    from migm.trajectories.live import LiveConfig

    if compile and not live:
        raise MigmError("--compile compiles the rollouts of --live; training on --data samples nothing")
    if live and data is not None:
        raise MigmError("give --data DIR or --live, not both")
    if not live and data is None:
        raise MigmError("give --data DIR (a trajectory dataset), or --live --model NAME to train from rollouts")
    sampler = ("steps", "classes", "prompts", "guidance", "r_temp", "sm_temp", "temperature")
    if not live:
        if any(options[k] is not None for k in sampler):
            raise MigmError("--classes, --prompt(s), --sampling-steps and sampler options are for --live")
        return None
    if model is None:
        raise MigmError("--live rolls out a base: give it with --model (and its checkpoint options)")
    return LiveConfig(**options)


# TrainConfig's fields the command line sets, one option each (the others: --data, --out, -a, --rollout-weights, --live)
TRAIN_OPTIONS: Options = {
    "arch": (
        option(
            "--arch",
            str,
            "tiny-transformer, mlp, gru, or dimoo-transformer (default: the base's own: "
            "dimoo-transformer for DiMOO-architecture bases, tiny-transformer otherwise).",
        ),
        None,
    ),
    "steps": (option("--steps", int, "Optimizer steps."), 2000),
    "batch_size": (option("--batch-size", int, "Pairs per step and process."), 128),
    "lr": (option("--lr", float, "Peak learning rate (AdamW, warm-up then --lr-schedule)."), 1e-3),
    "warmup": (option("--warmup", int, "Linear warm-up steps (published: 0)."), 100),
    "lr_schedule": (
        option(
            "--lr-schedule",
            str,
            "cosine (to 10% of the peak), or step: x0.1 from --lr-decay-step on (published).",
        ),
        "cosine",
    ),
    "lr_decay_step": (
        option("--lr-decay-step", int, "Step of the x0.1 decay with --lr-schedule step (published: 1000)."),
        1000,
    ),
    "weight_decay": (option("--weight-decay", float, "AdamW weight decay."), 0.01),
    "grad_clip": (option("--grad-clip", float, "Gradient norm clip; 0: none (published: none)."), 1.0),
    "ema": (option("--ema", float, "EMA decay of the exported weights."), 0.999),
    "loss": (option("--loss", str, "mse, or mse+kl (adds KL between the base head's distributions)."), "mse"),
    "mse_weight": (option("--mse-weight", float, "Weight of the feature MSE."), 1.0),
    "mse_positions": (
        option(
            "--mse-positions",
            str,
            "Where the MSE is taken: masked (image cells still masked after the step) or all (every real "
            "position, as the published DiMOO trainer).",
        ),
        "masked",
    ),
    "kl_weight": (option("--kl-weight", float, "Weight of the KL term (--loss mse+kl)."), 0.1),
    "kl_temperature": (
        option("--kl-temperature", float, "T of the KL term: softmax(logits / T), loss scaled by T^2."),
        1.0,
    ),
    "val_fraction": (option("--val-fraction", float, "Held-out fraction of samples."), 0.05),
    "rollout": (
        option(
            "--rollout",
            int,
            "K: train on windows of K consecutive steps, chaining the shortcut from one true feature with "
            "the recorded new tokens, a loss at every chained step (1: one-step pairs). --batch-size counts "
            "windows.",
        ),
        1,
    ),
    "workers": (option("--workers", int, "DataLoader worker processes."), 0),
    "save_every": (option("--save-every", int, "Checkpoint every this many steps."), 500),
    "stop_at": (
        option("--stop-at", Optional[int], "Stop after this step, leaving a checkpoint for --resume."),
        None,
    ),
    "seed": (SeedOpt, 0),
}


def _live_options(sampling_steps, classes, live_batch, buffer, replay, val_samples) -> dict:
    """The `LiveConfig` fields the --live options set (the sampler and prompts come from their groups)."""
    return {
        "steps": sampling_steps,
        "classes": parse_classes(classes) if classes else None,
        "batch_size": live_batch,
        "buffer": buffer,
        "replay": replay,
        "val_samples": val_samples,
    }


LIVE_OPTIONS: Options = {
    "sampling_steps": (
        option("--sampling-steps", Optional[int], "--live: sampling steps N (default: the base's, else 16)."),
        None,
    ),
    "classes": (option("--classes", Optional[str], "--live: classes to roll out, e.g. 0-9 (default: all)."), None),
    "buffer": (option("--buffer", int, "--live: pairs the replay buffer holds (whole rollout batches)."), 16384),
    "replay": (option("--replay", float, "--live: times each rolled-out pair is drawn for training, on average."), 4.0),
    "live_batch": (option("--live-batch", int, "--live: samples per rollout batch."), 64),
    "val_samples": (
        option("--val-samples", int, "--live: held-out samples 0..V-1 (rolled out once for validation)."),
        64,
    ),
}


def on_policy_config(share: float | None, budgets: str | None, start: int, ramp: int):
    """`OnPolicyConfig` of `train --on-policy SHARE` (None without it)."""
    from migm.trajectories.on_policy import OnPolicyConfig

    if share is None:
        if budgets is not None or start or ramp:
            raise MigmError("--on-policy-budget, --on-policy-start and --on-policy-ramp go with --on-policy SHARE")
        return None
    try:
        parsed = [int(b) for b in (budgets or "4").split(",")]
    except ValueError:
        raise MigmError(f"--on-policy-budget takes comma-separated budgets, e.g. 2,4, got {budgets!r}") from None
    return OnPolicyConfig(fraction=share, budgets=parsed, start=start, ramp=ramp)


def _on_policy_options(on_policy, on_policy_budget, on_policy_start, on_policy_ramp, chain_budget) -> dict:
    """The TrainConfig fields of on-policy training and budget-aware chains (docs/on-policy.md)."""
    return {
        "on_policy": on_policy_config(on_policy, on_policy_budget, on_policy_start, on_policy_ramp),
        "chain_budget": chain_budget,
    }


ON_POLICY_OPTIONS: Options = {
    "on_policy": (
        option(
            "--on-policy",
            Optional[float],
            "--live: SHARE in (0, 1] of each batch from on-policy pairs: the base rolled out with the current "
            "shortcut in the loop at --on-policy-budget, the base's feature on its states as target.",
        ),
        None,
    ),
    "on_policy_budget": (
        option("--on-policy-budget", Optional[str], "--on-policy: budgets B of those rollouts, cycled (default 4)."),
        None,
    ),
    "on_policy_start": (option("--on-policy-start", int, "--on-policy: step of the first on-policy rollout."), 0),
    "on_policy_ramp": (option("--on-policy-ramp", int, "--on-policy: steps over which the share grows from 0."), 0),
    "chain_budget": (
        option(
            "--chain-budget",
            Optional[int],
            "--live: chain the shortcut from each full step to the next of the placement for (N, B), a loss at "
            "every chained step (weights: --rollout-weights, one per step of the longest chain).",
        ),
        None,
    ),
}
TRAIN_MODEL = (option("--model", Optional[str], "Base model (default: the one the dataset names).", "-m"), None)


DataOpt = Annotated[
    Optional[str], typer.Option("--data", help="Trajectory dataset folder or URL, e.g. s3://bucket/set (or --live).")
]
CacheDirOpt = Annotated[
    Optional[str],
    typer.Option("--cache-dir", help="--data URL: local folder of the shard cache (default: the temporary folder)."),
]
CacheSizeOpt = Annotated[
    str,
    typer.Option(
        "--cache-size",
        help="--data URL: local bytes of whole shards kept per reading process, e.g. 2GB (0: read straight from the store).",
    ),
]
OutOpt = Annotated[Optional[str], typer.Option("--out", "-o", help="Zoo folder to write (default: zoo/ARCH).")]
ArchOptionOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--arch-option",
        "-a",
        help="Arch hyper-parameter, key=value (repeatable), e.g. -a bottleneck=2 -a blocks=1.",
    ),
]
RolloutWeightsOpt = Annotated[
    Optional[str],
    typer.Option("--rollout-weights", help="Loss weight of each chained step, e.g. 1,0.5,0.25 (default: equal)."),
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")]
LiveOpt = Annotated[
    bool,
    typer.Option(
        "--live",
        help="No dataset: roll out the base (--model, on the GPU when present) in this job and train from a "
        "replay buffer of recent pairs; the pairs equal a dump's of the same --seed and conditions.",
    ),
]


@app.command()
@base_options(omit=("vqgan", "pixels"), model=TRAIN_MODEL)
@sampler_options
@prompt_options
@group("live_options", _live_options, LIVE_OPTIONS)
@group("train_options", dict, TRAIN_OPTIONS)
@group("on_policy_options", _on_policy_options, ON_POLICY_OPTIONS)
def train(
    on_policy_options: dict,
    train_options: dict,
    live_options: dict,
    sampler: dict,
    prompt_list: list[str] | None,
    spec: BaseSpec,
    data: DataOpt = None,
    storage_option: StorageOpt = None,
    cache_dir: CacheDirOpt = None,
    cache_size: CacheSizeOpt = "2GB",
    out: OutOpt = None,
    arch_option: ArchOptionOpt = None,
    rollout_weights: RolloutWeightsOpt = None,
    resume: ResumeOpt = False,
    live: LiveOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a shortcut on a trajectory dataset (or --live rollouts) and export it as a zoo folder.

    The base must be the one the dataset was dumped from (same fingerprint): real checkpoints take
    the same --model / --checkpoint / --heads as dump-trajectories. With --live the base given is
    rolled out in this job: held-out samples 0..V-1 validate, training samples follow them."""
    from migm.shortcut_zoo.train import TrainConfig
    from migm.shortcut_zoo.train import train as run
    from migm.trajectories.store.cache import cache_config
    from migm.trajectories.store.location import parse_storage_options

    live_cfg = call(live_config, live, data, spec.name, spec.compile, prompts=prompt_list, **sampler, **live_options)
    cfg = TrainConfig(
        data=data,
        out=out or f"zoo/{train_options['arch']}",
        arch_config=call(parse_overrides, arch_option or []),
        rollout_weights=call(parse_weights, rollout_weights),
        live=live_cfg,
        storage_options=call(parse_storage_options, storage_option),
        cache=call(cache_config, cache_dir, cache_size),
        **train_options,
        **on_policy_options,
    )
    if quiet or as_json:
        result = call(run, cfg, spec, resume=resume)
    else:
        with training_bar(min(cfg.steps, cfg.stop_at or cfg.steps)) as report:
            result = call(run, cfg, spec, resume=resume, progress=report)
    print_training(cfg, result, as_json)


@contextmanager
def training_bar(total: int):
    """A progress bar of optimizer steps; yields the `progress(step, loss, rate)` callback of `train`."""
    columns = [TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("train", total=total, info="")
        yield lambda step, loss, rate: bar.update(task, completed=step, info=f"loss {loss:.4f}  {rate:,.0f} pairs/s")


def print_training(cfg, result: dict, as_json: bool) -> None:
    """What `train` prints: where it stopped, or the exported shortcut's validation figures."""
    result.pop("losses", None)
    if "stopped_at" in result:
        stopped = f"stopped at step {result['stopped_at']}; resume with --resume (checkpoint {result['checkpoint']})"
        console.print(plain(stopped))
        return
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if "metrics" not in result:  # a non-main rank
        return
    m, cost = result["metrics"]["overall"], result["cost"]
    print_metrics(
        f"{cfg.out} ({result['arch']}, {cost['parameters']:,} parameters, {cost['relative_cost']:.3f}x a base forward)",
        {
            "val cosine": m["cos"],
            "cache cosine": m["cache_cos"],
            "val MSE / cache MSE": m["mse_ratio_to_cache"],
            "token agreement": m["agree"],
            "cache token agreement": m["cache_agree"],
            "pairs/s": result["training"]["pairs_per_second"],
            "minutes": result["training"]["seconds"] / 60,
        },
        False,
    )
    print_per_step(result["metrics"]["per_step"])
    console.print(plain(f"wrote {cfg.out}/model.safetensors, config.json, README.md"))


zoo_app = typer.Typer(help="Shortcut zoo folders: list, show, import.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@zoo_app.command("list")
def zoo_list(
    root: Annotated[str, typer.Argument(help="Folder holding zoo folders.")] = "zoo", as_json: JsonOpt = False
) -> None:
    """List the shortcuts under a folder with their base and validation figures."""
    from migm.cards import figure
    from migm.shortcut_zoo.export import list_zoo

    rows = call(list_zoo, root)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("path", "arch", "base", "params", "cost", "val cosine", "MSE / cache", "agreement")
    for r in rows:
        table.add_row(
            plain(r["path"]),
            plain(r["arch"]),
            plain(r["base"]),
            figure(r["parameters"], ","),
            figure(r["relative_cost"], ".3f"),
            figure(r["cos"], ".4f"),
            figure(r["mse_ratio_to_cache"], ".3f"),
            figure(r["agree"], ".4f"),
        )
    console.print(table)


@zoo_app.command("show")
def zoo_show(path: Annotated[str, typer.Argument(help="Zoo folder.")]) -> None:
    """Print a shortcut's model card, rendered (tables drawn); its control characters are shown inert."""
    from rich.markdown import Markdown

    from migm.shortcut_zoo.export import read_model_card
    from migm.trajectories.checks import inert

    console.print(Markdown(inert(call(read_model_card, path))))


IMPORT_BASE = (option("--base", str, "Base the shortcut belongs to.", "--model"), "maskgit")


PublishedOpt = Annotated[
    str, typer.Option("--published", help="Published MIGM-Shortcut state dict (torch file, read weights-only).")
]
ZooImportOutOpt = Annotated[str, typer.Option("--out", "-o", help="Zoo folder to write (new or empty).")]
ShortcutHeadsOpt = Annotated[
    int,
    typer.Option("--shortcut-heads", help="Attention heads of a MaskGIT shortcut (released: 16; DiMOO: the base's)."),
]
BottleneckOpt = Annotated[
    Optional[int], typer.Option("--bottleneck", help="Expected D / hidden (checked against the file).")
]
BlocksOpt = Annotated[Optional[int], typer.Option("--blocks", help="Expected blocks (checked against the file).")]
StepsOpt = Annotated[
    Optional[int],
    typer.Option("--steps", help="N the shortcut is meant for (cost accounting, card); default: the base's, else 32."),
]


@zoo_app.command("import")
@base_options(omit=("vqgan", "pixels", "precision", "device", "compile"), model=IMPORT_BASE)
def zoo_import(
    spec: BaseSpec,
    published: PublishedOpt,
    out: ZooImportOutOpt,
    shortcut_heads: ShortcutHeadsOpt = 16,
    bottleneck: BottleneckOpt = None,
    blocks: BlocksOpt = None,
    steps: StepsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wrap a published shortcut into a zoo folder bound to its base's fingerprint (loaded on the CPU)."""
    from migm.shortcut_zoo.published import import_published
    from migm.trajectories.base import hub, load_base

    base = call(load_base, replace(spec, device="cpu"))
    steps = steps_for(base, steps, 32)
    config = call(
        import_published,
        call(hub.local, published),
        out,
        base,
        shortcut_heads=shortcut_heads,
        bottleneck=bottleneck,
        blocks=blocks,
        steps=steps,
    )
    if as_json:
        print(json.dumps(config, indent=2))
        return
    a = config["arch_config"]
    console.print(
        plain(
            f"wrote {out} ({config['arch']}, bottleneck {a['bottleneck']}, {a['blocks']} block(s), "
            f"{a['heads']} heads, mask-ratio conditioning {'on' if a['time'] else 'off'}, "
            f"{config['cost']['parameters']:,} parameters, {config['cost']['relative_cost']:.3f}x a base forward, "
            f"base {config['base']['name']} {config['base']['fingerprint'][:12]})"
        )
    )
