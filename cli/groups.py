"""Option groups: options several commands share, declared once and handed to a command as one value.

`@group(name, build, options)` adds the options (parameter name -> (Annotated type, default)) to a
command's signature in place of its parameter `name`, and calls the command with `name=build(**values)`.
A command declares `spec: BaseSpec` and gets the spec its --model/--checkpoint/… options make, by name:
no option list is restated, and no option is passed by position."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from migm.cli.app import (
    CheckpointOpt,
    ClipOpt,
    DeviceOpt,
    FidDimsOpt,
    FidRefOpt,
    GuidanceOpt,
    HeadsOpt,
    HeightOpt,
    InceptionWeightsOpt,
    ModelOpt,
    PixelsOpt,
    PrecisionOpt,
    PromptOpt,
    PromptsFileOpt,
    RTempOpt,
    SmTempOpt,
    TemperatureOpt,
    VqganOpt,
    WidthOpt,
    call,
    parse_prompts,
)
from migm.trajectories.base import BaseSpec

Options = dict[str, tuple[Any, Any]]


def group(name: str, build: Callable[..., Any], options: Options) -> Callable[[Callable], Callable]:
    """Decorator: the command's parameter `name` becomes the group's options (see the module docstring)."""

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True)
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.parameters.items() if n != name]
        if name not in own.parameters or {p.name for p in kept} & set(options):
            raise TypeError(f"{command.__name__}: option group {name!r} does not fit its parameters")
        added = [
            inspect.Parameter(option, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
            for option, (annotation, default) in options.items()
        ]

        @functools.wraps(command)
        def wrapper(**values):
            grouped = {option: values.pop(option) for option in options}
            return command(**values, **{name: call(build, **grouped)})

        wrapper.__signature__ = own.replace(parameters=kept + added)
        wrapper.__annotations__ = {p.name: p.annotation for p in kept + added}
        return wrapper

    return decorate


# --- the groups -----------------------------------------------------------------------------------------

BASE_OPTIONS: Options = {
    "model": (ModelOpt, "maskgit-digits"),
    "checkpoint": (CheckpointOpt, None),
    "vqgan": (VqganOpt, None),
    "heads": (HeadsOpt, None),
    "pixels": (PixelsOpt, None),
    "precision": (PrecisionOpt, None),
    "device": (DeviceOpt, "auto"),
    "height": (HeightOpt, None),
    "width": (WidthOpt, None),
}


def base_spec(model: str | None, **options) -> BaseSpec:
    """The base options of a command, parsed once into the spec that `load_base` loads."""
    return BaseSpec(model, **options)


def base_options(omit: tuple[str, ...] = (), **changed: tuple[Any, Any]) -> Callable[[Callable], Callable]:
    """The command's `spec: BaseSpec` from the base options, less `omit`, with `changed` declarations."""
    options = {k: v for k, v in BASE_OPTIONS.items() if k not in omit} | changed
    return group("spec", base_spec, options)


SAMPLER_OPTIONS: Options = {
    "guidance": (GuidanceOpt, None),
    "r_temp": (RTempOpt, None),
    "sm_temp": (SmTempOpt, None),
    "temperature": (TemperatureOpt, None),
}
# the command's `sampler: dict` of the sampling options the user set (None: the base's default)
sampler_options = group("sampler", dict, SAMPLER_OPTIONS)

# the command's `prompt_list: list[str] | None`: --prompt (repeatable) and --prompts FILE, read and checked
prompt_options = group(
    "prompt_list",
    lambda prompt, prompts: parse_prompts(prompt, prompts),
    {"prompt": (PromptOpt, None), "prompts": (PromptsFileOpt, None)},
)

METRIC_OPTIONS: Options = {
    "fid_ref": (FidRefOpt, None),
    "inception_weights": (InceptionWeightsOpt, None),
    "fid_dims": (FidDimsOpt, 2048),
    "clip": (ClipOpt, None),
}
# the command's `metric_options: dict` (what `load_metrics` loads)
metric_options = group("metric_options", dict, METRIC_OPTIONS)


def option(flag: str, kind: Any, help: str, *names: str) -> Any:
    """An Annotated option type of one flag."""
    return Annotated[kind, typer.Option(flag, *names, help=help)]
