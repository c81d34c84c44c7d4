"""Everything about a base model's trajectory: bases, the rollout, the dataset format, pairs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("migm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"
