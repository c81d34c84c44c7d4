"""The MaskGIT transformer loads state dicts in the published MaskGIT v1.0 layout, strictly."""

import pytest
import torch
from conftest import published_layout

from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.base.maskgit import MaskGITConfig, MaskTransformer
from migm.trajectories.errors import MigmError


def test_published_vocab_layout_matches_the_256px_checkpoint():
    cfg = MaskGITConfig()  # hidden 768, codebook 1024, 1000 classes, 16x16 grid
    assert cfg.vocab_size == 2026 and cfg.L + 1 == 257


CFG = MaskGITConfig(grid=4, codebook_size=11, num_classes=5, hidden_dim=24, depth=3, heads=4, mlp_dim=40)


def make_state():
    g = torch.Generator().manual_seed(0)
    layout = published_layout(D=24, depth=3, mlp=40, vocab=11 + 1 + 5 + 1, L=16)
    return {k: torch.randn(shape, generator=g) for k, shape in layout.items()}


def test_strict_load_of_published_layout():
    net = MaskTransformer(CFG)
    state = make_state()
    assert set(net.state_dict()) == set(state)
    load_state_dict_strict(net, state, "checkpoint")
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])


def test_loaded_weights_define_the_logits():
    net = MaskTransformer(CFG).eval()
    load_state_dict_strict(net, make_state(), "checkpoint")
    tokens = torch.randint(0, 12, (2, 16))
    feature = net.features(net.input_ids(tokens, torch.tensor([0, 5])))
    logits = net.head(feature)
    assert feature.shape == (2, 17, 24) and logits.shape == (2, 16, 11)
    expected = feature @ net.tok_emb.weight.T + net.bias
    assert torch.allclose(logits, expected[:, :16, :11], atol=1e-5)


def test_missing_key_is_named():
    state = make_state()
    del state["transformer.layers.1.0.fn.mha.in_proj_weight"]
    with pytest.raises(MigmError, match=r"missing keys: transformer\.layers\.1\.0\.fn\.mha\.in_proj_weight"):
        load_state_dict_strict(MaskTransformer(CFG), state, "checkpoint")


def test_extra_key_is_named():
    state = make_state()
    state["transformer.layers.3.0.norm.weight"] = torch.zeros(24)
    with pytest.raises(MigmError, match=r"unexpected keys: transformer\.layers\.3\.0\.norm\.weight"):
        load_state_dict_strict(MaskTransformer(CFG), state, "checkpoint")


def test_wrong_shape_is_named():
    state = make_state()
    state["bias"] = torch.zeros(17, 99)
    with pytest.raises(MigmError, match=r"wrong shapes: bias"):
        load_state_dict_strict(MaskTransformer(CFG), state, "checkpoint")
