"""Everything about a base model's trajectory: bases, the rollout, the dataset format, pairs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("migm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"


def __getattr__(name: str):
    # `trajectories.open_dataset(DIR)` without importing zarr and pyarrow for every command
    if name == "open_dataset":
        from migm.trajectories.store.dataset import open_dataset

        return open_dataset
    raise AttributeError(name)
