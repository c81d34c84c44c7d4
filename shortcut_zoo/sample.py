"""`migm sample`: generation with a shortcut (or a training-free peer) at the non-full steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from migm.shortcut_zoo.export import load_shortcut, read_step_errors
from migm.shortcut_zoo.predictors import check_predictor_name, make_predictor
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import generate
from migm.trajectories.rollout import Predictor, SamplerConfig

PLACEMENTS = ("uniform", "auto")


def check_placement(placement: str) -> None:
    if placement not in PLACEMENTS:
        raise MigmError(f"placement must be uniform or auto, got {placement!r}")


def make_sampling_predictor(
    base, predictor: str | None, shortcut: str | None, force: bool = False, placement: str = "uniform"
) -> Predictor | None:
    """The predictor for the shortcut steps: a zoo shortcut or a named peer (None: vanilla). With
    `auto` placement a zoo shortcut places the full steps by the step errors stored with it."""
    check_placement(placement)
    if placement == "auto" and (shortcut is None or (predictor or "shortcut") != "shortcut"):
        raise MigmError(
            "--placement auto places full steps by a zoo shortcut's stored errors: give --shortcut zoo/NAME"
        )
    if predictor is None and shortcut is None:
        return None
    name = predictor or "shortcut"
    if name == "shortcut" and shortcut is None:
        raise MigmError("the shortcut predictor needs --shortcut zoo/NAME")
    if name != "shortcut" and shortcut is not None:
        raise MigmError(f"--shortcut goes with --predictor shortcut, not {name!r}")
    check_predictor_name(name, base)
    if name == "shortcut":
        errors = read_step_errors(shortcut) if placement == "auto" else None
        return make_predictor("shortcut", load_shortcut(shortcut, base, force=force), errors)
    return make_predictor(name)


def sample(
    base,
    classes: list[int] | None,
    per_class: int,
    config: SamplerConfig,
    seed: int,
    out: str | Path,
    shortcut: str | None = None,
    predictor: str | None = None,
    force: bool = False,
    batch_size: int = 250,
    progress: Callable[[int], None] | None = None,
    prompts: list[str] | None = None,
    placement: str = "uniform",
) -> dict:
    """Sample a PNG grid; B of the N steps run the base (placed `uniform`ly or, for a zoo shortcut,
    `auto`), the rest the predictor. The result lists the full steps."""
    runner = make_sampling_predictor(base, predictor, shortcut, force, placement)
    result = generate(
        base,
        classes,
        per_class,
        config,
        seed,
        out,
        batch_size=batch_size,
        predictor=runner,
        progress=progress,
        prompts=prompts,
    )
    return {
        **result,
        "predictor": (predictor or "shortcut") if runner is not None else "vanilla",
        "placement": placement,
    }
