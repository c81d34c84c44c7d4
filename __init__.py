"""migm: learned shortcuts for masked image generation models.

The Python API is the one the `migm` CLI is built on: each name below is the function or config a
command calls, so a script and the CLI do the same thing.

    import migm

    base = migm.load_base(migm.BaseSpec("maskgit-digits"))
    migm.dump_trajectories(migm.DumpConfig(num_samples=64, steps=16, out="data/digits-n16"), base)
    ds = migm.open_dataset("data/digits-n16")
    migm.train(migm.TrainConfig(data="data/digits-n16", arch="tiny-transformer", out="zoo/tt"))
    shortcut = migm.load_shortcut("zoo/tt", base)

In the installed wheel this file is `migm/__init__.py`; the rooms `trajectories/`, `shortcut_zoo/`,
`cli/` and `cards/` are its subpackages (`migm.trajectories`, …). Names resolve on first use, so
`import migm` stays cheap for the CLI.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("migm")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0+local"

# public name -> module that defines it
_API = {
    "BaseSpec": "migm.trajectories.base",
    "load_base": "migm.trajectories.base",
    "SamplerConfig": "migm.trajectories.rollout",
    "rollout": "migm.trajectories.rollout",
    "DumpConfig": "migm.trajectories.dump",
    "dump_trajectories": "migm.trajectories.dump",
    "open_dataset": "migm.trajectories.store.dataset",
    "MigmError": "migm.trajectories.errors",
    "TrainConfig": "migm.shortcut_zoo.train",
    "train": "migm.shortcut_zoo.train",
    "load_shortcut": "migm.shortcut_zoo.export",
    "sample": "migm.shortcut_zoo.sample",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'migm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
