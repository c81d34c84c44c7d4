import pytest
import torch

from trajectories.base.digits import decode_digits
from trajectories.base.maskgit import MaskGIT, MaskGITConfig, MaskTransformer


@pytest.fixture(scope="session")
def tiny_base() -> MaskGIT:
    """A random-weight MaskGIT at tiny dims: fast, and enough to exercise the sampling loop."""
    torch.manual_seed(0)
    cfg = MaskGITConfig(grid=4, codebook_size=9, num_classes=3, hidden_dim=16, depth=1, heads=2, mlp_dim=32, dropout=0.0)
    net = MaskTransformer(cfg)
    with torch.no_grad():  # larger logits than the init gives, so sampling choices depend on the input
        net.tok_emb.weight.normal_(0, 1)
    return MaskGIT("tiny", cfg, net, decode_digits, sampler_defaults={"guidance": 2.0, "r_temp": 2.0})
