"""The shipped maskgit-digits base and classifier hold the quality the README states."""

import torch

from trajectories.base import get_base
from trajectories.base.digits import load_classifier, load_digits_split
from trajectories.sample import score


def test_classifier_is_accurate_on_held_out_digits():
    data = load_digits_split()
    clf = load_classifier()
    pred = clf(torch.from_numpy(data["x_test"])).argmax(-1)
    assert (pred == torch.from_numpy(data["y_test"])).float().mean().item() >= 0.97


def test_base_samples_are_the_requested_class():
    metrics = score("maskgit-digits", samples=1000, steps=16, seed=0, device="cpu")
    assert metrics["accuracy"] >= 0.90, metrics


def test_base_dims_and_fingerprint():
    base = get_base("maskgit-digits")
    assert (base.L, base.C, base.V, base.mask_id, base.num_classes) == (64, 1, 17, 17, 10)
    assert len(base.fingerprint) == 64 and base.fingerprint == get_base("maskgit-digits").fingerprint
    images = base.decode(torch.randint(0, 17, (2, 64)))
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
