"""`migm sample`: generation with a shortcut (or a training-free peer) at the non-full steps."""

from __future__ import annotations

from pathlib import Path

from shortcut_zoo.export import load_shortcut
from shortcut_zoo.predictors import check_predictor_name, make_predictor
from trajectories.errors import MigmError
from trajectories.sample import generate


def predictor_factory(predictor: str | None, shortcut: str | None, force: bool = False):
    """What builds the predictor once the base is loaded: a zoo shortcut or a named peer (or None)."""
    if predictor is None and shortcut is None:
        return None
    name = predictor or "shortcut"
    if name == "shortcut" and shortcut is None:
        raise MigmError("the shortcut predictor needs --shortcut zoo/NAME")
    if name != "shortcut" and shortcut is not None:
        raise MigmError(f"--shortcut goes with --predictor shortcut, not {name!r}")
    check_predictor_name(name)
    if name == "shortcut":
        return lambda base: make_predictor("shortcut", load_shortcut(shortcut, base, force=force))
    return lambda base: make_predictor(name)


def sample(model: str, classes: list[int], per_class: int, steps: int, seed: int, out: str | Path,
           budget: int | None = None, shortcut: str | None = None, predictor: str | None = None,
           force: bool = False, **kwargs) -> dict:  # fmt: skip
    """Sample a PNG grid; B of the N steps run the base, the rest the predictor."""
    factory = predictor_factory(predictor, shortcut, force)
    result = generate(model, classes, per_class, steps, seed, out, budget=budget, predictor_for=factory, **kwargs)
    full = result["sampler"]["budget"] if factory is not None and budget is not None else steps
    return {**result, "predictor": (predictor or "shortcut") if factory else "vanilla", "full_steps": full}
