"""The shipped maskgit-digits base and classifier hold the quality the README states."""

import pytest
import torch

from migm.shortcut_zoo.score import score
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.digits import load_classifier, load_digits_split
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


# sha256 over each shipped base's config and weights: a change to either (or to the fingerprint scheme)
# orphans every dataset and zoo folder made with it, so it must be deliberate
SHIPPED_FINGERPRINTS = {
    "maskgit-digits": "9aceabc9dcf537c64ff093d6886008e4e1e59cda909c937f59fea2ce7e7f208f",
    "dimoo-digits": "5a3352ce69c9231608026dd5240a0db595c112f6c3f5b6e243f2dfe48b8f74f5",
}


@pytest.mark.parametrize("name", sorted(SHIPPED_FINGERPRINTS))
def test_shipped_base_fingerprint_is_fixed(name):
    assert load_base(BaseSpec(name, device="cpu")).fingerprint == SHIPPED_FINGERPRINTS[name]


def test_base_dims_and_fingerprint():
    base = load_base(BaseSpec("maskgit-digits"))
    assert (base.L, base.C, base.V, base.mask_id, base.num_classes) == (64, 1, 17, 17, 10)
    assert len(base.fingerprint) == 64 and base.fingerprint == load_base(BaseSpec("maskgit-digits")).fingerprint
    images = base.decode(torch.randint(0, 17, (2, 64)))
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
