"""Commands on shortcuts: train, zoo list, zoo show, zoo import."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from migm.cli.app import (
    CheckpointOpt,
    DeviceOpt,
    GuidanceOpt,
    HeadsOpt,
    HeightOpt,
    JsonOpt,
    PrecisionOpt,
    PromptOpt,
    PromptsFileOpt,
    QuietOpt,
    RTempOpt,
    SeedOpt,
    SmTempOpt,
    TemperatureOpt,
    WidthOpt,
    app,
    base_spec,
    call,
    console,
    err_console,
    parse_classes,
    parse_overrides,
    parse_prompts,
    plain,
    print_metrics,
    steps_for,
)
from migm.trajectories.errors import MigmError


def parse_weights(text: str | None) -> list[float] | None:
    """'1,0.5,0.25' -> [1.0, 0.5, 0.25] (None: not given)."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise MigmError(f"--rollout-weights takes comma-separated numbers, e.g. 1,0.5,0.25, got {text!r}") from None


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


def live_config(live: bool, data: str | None, model: str | None, **options):
    """`LiveConfig` of `train --live` (None without it), after checking the options belong together."""
    from migm.trajectories.live import LiveConfig

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


@app.command()
def train(
    data: Annotated[Optional[str], typer.Option("--data", help="Trajectory dataset folder (or --live).")] = None,
    arch: Annotated[
        str, typer.Option("--arch", help="tiny-transformer, mlp, gru, or dimoo-transformer (DiMOO-architecture bases).")
    ] = "tiny-transformer",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Zoo folder to write (default: zoo/ARCH).")] = None,
    arch_option: Annotated[
        Optional[list[str]],
        typer.Option(
            "--arch-option",
            "-a",
            help="Arch hyper-parameter, key=value (repeatable), e.g. -a bottleneck=2 -a blocks=1.",
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Pairs per step and process.")] = 128,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, warm-up then --lr-schedule).")] = 1e-3,
    warmup: Annotated[int, typer.Option("--warmup", help="Linear warm-up steps (published: 0).")] = 100,
    lr_schedule: Annotated[
        str,
        typer.Option(
            "--lr-schedule", help="cosine (to 10% of the peak), or step: x0.1 from --lr-decay-step on (published)."
        ),
    ] = "cosine",
    lr_decay_step: Annotated[
        int, typer.Option("--lr-decay-step", help="Step of the x0.1 decay with --lr-schedule step (published: 1000).")
    ] = 1000,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")] = 0.01,
    grad_clip: Annotated[
        float, typer.Option("--grad-clip", help="Gradient norm clip; 0: none (published: none).")
    ] = 1.0,
    ema: Annotated[float, typer.Option("--ema", help="EMA decay of the exported weights.")] = 0.999,
    loss: Annotated[
        str, typer.Option("--loss", help="mse, or mse+kl (adds KL between the base head's distributions).")
    ] = "mse",
    mse_weight: Annotated[float, typer.Option("--mse-weight", help="Weight of the feature MSE.")] = 1.0,
    mse_positions: Annotated[
        str,
        typer.Option(
            "--mse-positions",
            help="Where the MSE is taken: masked (image cells still masked after the step) or all (every real "
            "position, as the published DiMOO trainer).",
        ),
    ] = "masked",
    kl_weight: Annotated[float, typer.Option("--kl-weight", help="Weight of the KL term (--loss mse+kl).")] = 0.1,
    kl_temperature: Annotated[
        float, typer.Option("--kl-temperature", help="T of the KL term: softmax(logits / T), loss scaled by T^2.")
    ] = 1.0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Held-out fraction of samples.")] = 0.05,
    rollout: Annotated[
        int,
        typer.Option(
            "--rollout",
            help="K: train on windows of K consecutive steps, chaining the shortcut from one true feature with "
            "the recorded new tokens, a loss at every chained step (1: one-step pairs). --batch-size counts windows.",
        ),
    ] = 1,
    rollout_weights: Annotated[
        Optional[str],
        typer.Option("--rollout-weights", help="Loss weight of each chained step, e.g. 1,0.5,0.25 (default: equal)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader worker processes.")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", help="Checkpoint every this many steps.")] = 500,
    stop_at: Annotated[
        Optional[int], typer.Option("--stop-at", help="Stop after this step, leaving a checkpoint for --resume.")
    ] = None,
    seed: SeedOpt = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")] = False,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="No dataset: roll out the base (--model, on the GPU when present) in this job and train from a "
            "replay buffer of recent pairs; the pairs equal a dump's of the same --seed and conditions.",
        ),
    ] = False,
    classes: Annotated[
        Optional[str], typer.Option("--classes", help="--live: classes to roll out, e.g. 0-9 (default: all).")
    ] = None,
    prompt: PromptOpt = None,
    prompts: PromptsFileOpt = None,
    sampling_steps: Annotated[
        Optional[int], typer.Option("--sampling-steps", help="--live: sampling steps N (default: the base's, else 16).")
    ] = None,
    guidance: GuidanceOpt = None,
    r_temp: RTempOpt = None,
    sm_temp: SmTempOpt = None,
    temperature: TemperatureOpt = None,
    buffer: Annotated[
        int, typer.Option("--buffer", help="--live: pairs the replay buffer holds (whole rollout batches).")
    ] = 16384,
    replay: Annotated[
        float, typer.Option("--replay", help="--live: times each rolled-out pair is drawn for training, on average.")
    ] = 4.0,
    live_batch: Annotated[int, typer.Option("--live-batch", help="--live: samples per rollout batch.")] = 64,
    val_samples: Annotated[
        int,
        typer.Option("--val-samples", help="--live: held-out samples 0..V-1 (rolled out once) for validation."),
    ] = 64,
    on_policy: Annotated[
        Optional[float],
        typer.Option(
            "--on-policy",
            help="--live: SHARE in (0, 1] of each batch from on-policy pairs: the base rolled out with the "
            "current shortcut in the loop at --on-policy-budget, the base's feature on its states as target.",
        ),
    ] = None,
    on_policy_budget: Annotated[
        Optional[str],
        typer.Option(
            "--on-policy-budget", help="--on-policy: budgets B of those rollouts, cycled, e.g. 2,4 (default 4)."
        ),
    ] = None,
    on_policy_start: Annotated[
        int, typer.Option("--on-policy-start", help="--on-policy: step of the first on-policy rollout.")
    ] = 0,
    on_policy_ramp: Annotated[
        int, typer.Option("--on-policy-ramp", help="--on-policy: steps over which the share grows from 0.")
    ] = 0,
    chain_budget: Annotated[
        Optional[int],
        typer.Option(
            "--chain-budget",
            help="--live: chain the shortcut from each full step to the next of the placement for (N, B), a loss "
            "at every chained step (weights: --rollout-weights, one per step of the longest chain).",
        ),
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="Base model (default: the one the dataset names).")
    ] = None,
    checkpoint: CheckpointOpt = None,
    heads: HeadsOpt = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    precision: PrecisionOpt = None,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Train a shortcut on a trajectory dataset (or --live rollouts) and export it as a zoo folder.

    The base must be the one the dataset was dumped from (same fingerprint): real checkpoints take
    the same --model / --checkpoint / --heads as dump-trajectories. With --live the base given is
    rolled out in this job: held-out samples 0..V-1 validate, training samples follow them."""
    from migm.shortcut_zoo.train import TrainConfig
    from migm.shortcut_zoo.train import train as run

    live_cfg = call(
        live_config,
        live,
        data,
        model,
        steps=sampling_steps,
        classes=call(parse_classes, classes) if classes else None,
        prompts=call(parse_prompts, prompt, prompts),
        guidance=guidance,
        r_temp=r_temp,
        sm_temp=sm_temp,
        temperature=temperature,
        batch_size=live_batch,
        buffer=buffer,
        replay=replay,
        val_samples=val_samples,
    )
    cfg = TrainConfig(
        data=data,
        arch=arch,
        out=out or f"zoo/{arch}",
        arch_config=call(parse_overrides, arch_option or []),
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup=warmup,
        lr_schedule=lr_schedule,
        lr_decay_step=lr_decay_step,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        ema=ema,
        loss=loss,
        mse_weight=mse_weight,
        mse_positions=mse_positions,
        kl_weight=kl_weight,
        kl_temperature=kl_temperature,
        val_fraction=val_fraction,
        rollout=rollout,
        rollout_weights=call(parse_weights, rollout_weights),
        workers=workers,
        save_every=save_every,
        stop_at=stop_at,
        seed=seed,
        live=live_cfg,
        on_policy=call(on_policy_config, on_policy, on_policy_budget, on_policy_start, on_policy_ramp),
        chain_budget=chain_budget,
    )
    spec = base_spec(model, checkpoint, heads=heads, precision=precision, device=device, height=height, width=width)
    if not (quiet or as_json):
        columns = [
            TextColumn("training"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        ]
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("train", total=min(steps, stop_at or steps), info="")
            report = lambda step, loss, rate: bar.update(
                task, completed=step, info=f"loss {loss:.4f}  {rate:,.0f} pairs/s"
            )
            result = call(run, cfg, spec, resume=resume, progress=report)
    else:
        result = call(run, cfg, spec, resume=resume)
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
        f"{cfg.out} ({arch}, {cost['parameters']:,} parameters, {cost['relative_cost']:.3f}x a base forward)",
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


@zoo_app.command("import")
def zoo_import(
    published: Annotated[
        str, typer.Option("--published", help="Published MIGM-Shortcut state dict (torch file, read weights-only).")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Zoo folder to write (new or empty).")],
    checkpoint: CheckpointOpt = None,
    model: Annotated[str, typer.Option("--base", "--model", help="Base the shortcut belongs to.")] = "maskgit",
    heads: HeadsOpt = None,
    shortcut_heads: Annotated[
        int,
        typer.Option(
            "--shortcut-heads", help="Attention heads of a MaskGIT shortcut (released: 16; DiMOO: the base's)."
        ),
    ] = 16,
    bottleneck: Annotated[
        Optional[int], typer.Option("--bottleneck", help="Expected D / hidden (checked against the file).")
    ] = None,
    blocks: Annotated[
        Optional[int], typer.Option("--blocks", help="Expected blocks (checked against the file).")
    ] = None,
    steps: Annotated[
        Optional[int],
        typer.Option(
            "--steps", help="N the shortcut is meant for (cost accounting, card); default: the base's, else 32."
        ),
    ] = None,
    height: HeightOpt = None,
    width: WidthOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Wrap a published shortcut into a zoo folder bound to its base's fingerprint."""
    from migm.shortcut_zoo.export import import_published
    from migm.trajectories.base import hub, load_base

    base = call(load_base, base_spec(model, checkpoint, heads=heads, device="cpu", height=height, width=width))
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
