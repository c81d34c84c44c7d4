"""The shipped maskgit-digits base and classifier hold the quality the README states."""

import torch

from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.digits import load_classifier, load_digits_split
from migm.trajectories.generate import score
from migm.trajectories.rollout import SamplerConfig


def test_classifier_is_accurate_on_held_out_digits():
    data = load_digits_split()
    clf = load_classifier()
    pred = clf(torch.from_numpy(data["x_test"])).argmax(-1)
    assert (pred == torch.from_numpy(data["y_test"])).float().mean().item() >= 0.97


def test_base_samples_are_the_requested_class():
    base = load_base(BaseSpec("maskgit-digits", device="cpu"))
    metrics = score(base, 400, SamplerConfig.for_base(base, 16), seed=0)  # 40 per class; `make demo` scores 1000
    assert metrics["accuracy"] >= 0.90, metrics


def test_base_dims_and_fingerprint():
    base = load_base(BaseSpec("maskgit-digits"))
    assert (base.L, base.C, base.V, base.mask_id, base.num_classes) == (64, 1, 17, 17, 10)
    assert len(base.fingerprint) == 64 and base.fingerprint == load_base(BaseSpec("maskgit-digits")).fingerprint
    images = base.decode(torch.randint(0, 17, (2, 64)))
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
