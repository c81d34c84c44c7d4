"""maskgit-digits: the embedded default base, and the digit classifier that scores its samples.

scikit-learn's 1,797 handwritten digits on their native 8×8 grid; the 17 grey levels (0…16) are
the tokens, so no tokenizer is needed (L = 64, V = 17). Weights ship in `weights/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer
from migm.trajectories.errors import MigmError
from migm.trajectories.frechet import frechet_distance, frechet_to, moments

WEIGHTS = Path(__file__).parent / "weights"
LEVELS = 17  # grey levels 0…16
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_split() -> dict[str, np.ndarray]:
    """The fixed train / held-out split: images as int64 [n, 8, 8] in 0…16, labels [n]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x, y = d.images.astype(np.int64), d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    return {"x_train": x_tr, "y_train": y_tr, "x_test": x_te, "y_test": y_te}


def shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts by up to one pixel in each direction, filling with background (0)."""
    n = images.shape[0]
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(8)).view(n, 8, 1).expand(n, 8, 8)
    cols = (dx.view(n, 1) + torch.arange(8)).view(n, 1, 8).expand(n, 8, 8)
    return padded[torch.arange(n).view(n, 1, 1), rows, cols]


def decode_digits(tokens: torch.Tensor) -> torch.Tensor:
    """[B, 64] grey levels -> [B, 3, 8, 8] images in [0, 1], ink dark on white like the scans."""
    grey = 1 - tokens.float().clamp(0, LEVELS - 1) / (LEVELS - 1)
    return grey.view(-1, 1, 8, 8).expand(-1, 3, 8, 8).contiguous()


def load_maskgit_digits(weights_dir: str | Path | None = None) -> MaskGIT:
    folder = Path(weights_dir) if weights_dir else WEIGHTS
    cfg_path, w_path = folder / "maskgit-digits.json", folder / "maskgit-digits.safetensors"
    if not cfg_path.exists() or not w_path.exists():
        raise MigmError(f"maskgit-digits weights not found in {folder} (run `make train-digits`)")
    meta = json.loads(cfg_path.read_text())
    cfg = MaskGITConfig(**meta["model"])
    net = MaskTransformer(cfg)
    load_state_dict_strict(net, load_file(str(w_path)), str(w_path))
    base = MaskGIT("maskgit-digits", cfg, net, decode_digits, sampler_defaults=meta.get("sampler", {}))
    base.scorer, base.score_statistics = score_digits, digit_statistics
    return base


# --- the classifier that scores samples -----------------------------------------------------------


class DigitClassifier(nn.Module):
    """Small CNN on 8×8 grey levels; `features` (the penultimate layer) feed the Fréchet distance."""

    def __init__(self, width: int = 32, feature_dim: int = 64):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, feature_dim), nn.ReLU())
        self.out = nn.Linear(feature_dim, 10)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.float().view(-1, 1, 8, 8) / (LEVELS - 1)
        return self.fc(self.conv(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(tokens))


def load_classifier(weights_dir: str | Path | None = None) -> DigitClassifier:
    folder = Path(weights_dir) if weights_dir else WEIGHTS
    meta = json.loads((folder / "digit-classifier.json").read_text())
    clf = DigitClassifier(**meta["model"])
    load_state_dict_strict(clf, load_file(str(folder / "digit-classifier.safetensors")), "digit classifier")
    return clf.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def _real_features() -> np.ndarray:
    """The shipped classifier's features of the held-out real digits (loaded once)."""
    real = torch.from_numpy(load_digits_split()["x_test"]).view(-1, 64)
    with torch.no_grad():
        return load_classifier().features(real).double().numpy()


@torch.no_grad()
def digit_statistics(tokens: torch.Tensor, labels: torch.Tensor) -> dict[str, Callable[[np.ndarray], float]]:
    """The scores of `score_digits` as functions of a subset of the samples (indices, repeats allowed),
    for bootstrap intervals: the classifier runs once, a resample only recomputes the statistic."""
    clf = load_classifier()
    feats = clf.features(tokens.cpu().view(-1, 64))
    correct = (clf.out(feats).argmax(-1) == labels.cpu()).double().numpy()
    feats, frechet = feats.double().numpy(), frechet_to(*moments(_real_features()))
    return {"accuracy": lambda i: float(correct[i].mean()), "frechet": lambda i: frechet(*moments(feats[i]))}


@torch.no_grad()
def score_digits(tokens: torch.Tensor, labels: torch.Tensor, clf: DigitClassifier | None = None) -> dict:
    """Class accuracy of generated digits and Fréchet distance to the held-out real digits."""
    shipped = clf is None
    clf = clf or load_classifier()
    tokens = tokens.cpu().view(-1, 64)
    feats = clf.features(tokens)
    acc = (clf.out(feats).argmax(-1) == labels.cpu()).float().mean().item()
    if shipped:  # the shipped classifier's real features are computed once per process
        real = _real_features()
    else:
        real = clf.features(torch.from_numpy(load_digits_split()["x_test"]).view(-1, 64)).double().numpy()
    fd = frechet_distance(*moments(feats.double().numpy()), *moments(real))
    return {"accuracy": acc, "frechet": fd, "samples": len(tokens)}
