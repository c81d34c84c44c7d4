"""Base names -> loaders: the built-in families, and third-party ones from the `migm.bases` entry-point group.

A plugin package declares, in its pyproject.toml,

    [project.entry-points."migm.bases"]
    theirs = "their_package.module:load_theirs"

and `--model theirs` then works in every command. A loader's keyword arguments are the base options
it takes (`checkpoint`, `vqgan`, `heads`, `pixels`, `height`, `width`, and `device` / `precision` when
it places its own weights); it returns an object following `protocol.Base`. A plugin is imported only
when its name is used (or listed by `migm models`); one that fails to import is a one-line error
naming it. A built-in name wins over a plugin of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points

from migm.trajectories.errors import MigmError

GROUP = "migm.bases"


@dataclass(frozen=True)
class Registration:
    name: str
    loader: Callable
    description: str
    source: str  # "built-in", or the plugin's distribution and entry point


# name -> (module, loader, description): imported on first use, so a command loads only its family
BUILTIN: dict[str, tuple[str, str, str]] = {
    "maskgit-digits": (
        "migm.trajectories.base.digits",
        "load_maskgit_digits",
        "class-conditional MaskGIT on scikit-learn's 8x8 digits (L=64, V=17), shipped in the package",
    ),
    "dimoo-digits": (
        "migm.trajectories.base.dimoo_digits",
        "load_dimoo_digits",
        "text-to-image Lumina-DiMOO (LLaDA) on scikit-learn's 8x8 digits, prompts naming the digit "
        '("a handwritten seven", "the digit 7"); shipped in the package',
    ),
    "maskgit": (
        "migm.trajectories.base.maskgit",
        "load_maskgit",
        "published MaskGIT ImageNet checkpoint: --checkpoint FILE [--vqgan DIR to decode] [--heads 16]",
    ),
    "dimoo": (
        "migm.trajectories.base.dimoo_loading",
        "load_dimoo",
        "Lumina-DiMOO text-to-image (LLaDA): --checkpoint DIR (its Hugging Face folder) [--height/--width 1024]",
    ),
    "amused": (
        "migm.trajectories.base.amused",
        "load_amused",
        "aMUSEd text-to-image (diffusers UVit2DModel + VQModel + CLIP): --checkpoint DIR (its diffusers folder)",
    ),
}


def plugin_entry_points() -> dict[str, EntryPoint]:
    """The `migm.bases` entry points of the installed distributions, by name (built-in names left out)."""
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in BUILTIN}


def names() -> list[str]:
    """Every registered name, built-in and plugin (no plugin is imported)."""
    return sorted({*BUILTIN, *plugin_entry_points()})


def plugin_source(ep: EntryPoint) -> str:
    dist = ep.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "plugin"
    return f"{where} ({ep.value})"


def load_plugin(ep: EntryPoint) -> Registration:
    """Import a plugin's loader; any failure is a one-line error naming the plugin."""
    try:
        loader = ep.load()
    except Exception as e:  # a plugin may raise anything while importing
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise MigmError(f"base plugin {ep.name!r} ({ep.value}) failed to import: {type(e).__name__}: {first}") from None
    if not callable(loader):
        raise MigmError(f"base plugin {ep.name!r} ({ep.value}) is not a loader function")
    doc = (loader.__doc__ or "").strip().splitlines()
    return Registration(ep.name, loader, doc[0] if doc else "", plugin_source(ep))


def registration(name: str) -> Registration:
    """The loader registered under `name`, or a one-line error listing the known names."""
    if name in BUILTIN:
        module, attr, description = BUILTIN[name]
        return Registration(name, getattr(import_module(module), attr), description, "built-in")
    plugins = plugin_entry_points()
    if name not in plugins:
        raise MigmError(f"unknown model {name!r}; known models: {', '.join(names())}")
    return load_plugin(plugins[name])


def all_registrations() -> list[Registration]:
    """Every base, plugins imported (`migm models`): a plugin that fails is an error."""
    return [registration(n) for n in names()]
