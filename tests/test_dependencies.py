"""Dependency bounds that are true: torch from the first release with every API the code uses, the
FID stack pinned where its internals are used, and the install route that a missing torch-fidelity names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
import torch

from migm.shortcut_zoo import image_metrics as metrics
from migm.trajectories.errors import MigmError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement(name: str, group: list[str]) -> str:
    return next(r for r in group if re.match(rf"{re.escape(name)}\b", r))


def test_torch_lower_bound_has_the_weights_only_loader_api():
    # torch.serialization.safe_globals (the checkpoint loader) came in 2.5
    assert requirement("torch", PYPROJECT["project"]["dependencies"]) == "torch>=2.5"
    assert hasattr(torch.serialization, "safe_globals")


def test_fid_stack_is_pinned_to_the_tested_releases():
    from importlib.metadata import version

    fidelity = requirement("torch-fidelity", PYPROJECT["project"]["optional-dependencies"]["metrics"])
    assert fidelity == metrics.FIDELITY == f"torch-fidelity=={version('torch-fidelity')}"
    makefile = (ROOT / "Makefile").read_text()
    assert f"FIDELITY := {metrics.FIDELITY}" in makefile and '--no-deps "$(FIDELITY)"' in makefile
    torchmetrics = requirement("torchmetrics", PYPROJECT["project"]["dependencies"])
    assert torchmetrics == "torchmetrics>=1.9,<1.10" and version("torchmetrics").startswith("1.9.")


def test_missing_torch_fidelity_names_both_install_routes(monkeypatch):
    monkeypatch.setattr(metrics, "_bare_fidelity", lambda: False)  # as where torch-fidelity is not installed
    with pytest.raises(MigmError) as e:
        metrics.fidelity()
    assert f"pip install --no-deps {metrics.FIDELITY}" in str(e.value) and "migm[metrics]" in str(e.value)
