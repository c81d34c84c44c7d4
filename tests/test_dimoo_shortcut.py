"""The published DiMOO shortcut (`MDMShortcut`) reproduced by `dimoo-transformer` on the reference outputs in
`tests/fixtures/published/dimoo/` (made by the published code at tiny dims), its padded batches, its
build from a base, and its zoo import."""

import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from conftest import PUBLISHED
from helpers import rel
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import build, build_for_base
from migm.shortcut_zoo.export import load_shortcut, read_zoo_config
from migm.shortcut_zoo.published import import_published, published_dimoo_arch_config
from migm.trajectories.base.checkpoints import load_state_dict, load_state_dict_strict
from migm.trajectories.base.llada import LLaDAConfig
from migm.trajectories.errors import MigmError

FIXTURES = PUBLISHED
DIMOO = FIXTURES / "dimoo"
runner = CliRunner()


@pytest.fixture(scope="module")
def io() -> dict:
    return load_file(str(DIMOO / "io.safetensors"))


@pytest.fixture(scope="module")
def llada() -> LLaDAConfig:
    return LLaDAConfig.from_hf(json.loads((DIMOO / "checkpoint" / "config.json").read_text()))


@pytest.fixture(scope="module")
def stand_in(llada):
    """What the arch reads off a DiMOO base: its width and its LLaDA config."""
    return SimpleNamespace(
        name="dimoo-stand-in", D=llada.d_model, net=SimpleNamespace(cfg=llada), shortcut_arch="dimoo-transformer"
    )


@pytest.fixture(scope="module")
def wte() -> torch.Tensor:
    """The base's token embedding, read from the checkpoint shard the index names."""
    folder = DIMOO / "checkpoint"
    key = "model.transformer.wte.weight"
    shard = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][key]
    with safe_open(str(folder / shard), "pt") as f:
        return f.get_tensor(key)


@pytest.fixture(scope="module")
def published(stand_in):
    meta = json.loads((DIMOO / "meta.json").read_text())["shortcut"]
    model = build_for_base(
        "dimoo-transformer", stand_in, blocks=meta["n_block"], bottleneck=meta["bottleneck_ratio"]
    ).eval()
    load_state_dict_strict(model, load_state_dict(DIMOO / "shortcut.pth", "state_dict", "shortcut"), "shortcut.pth")
    return model


def fixture_inputs(io: dict, wte: torch.Tensor) -> tuple:
    """The fixture's shortcut inputs in our forward contract: new tokens are wte rows (no position
    added) at their absolute sequence positions (the true entries of sc_new_map, in increasing order)."""
    positions = io["sc_new_map"].nonzero()[:, 1].view(1, -1)
    return io["sc_prev"], wte[io["sc_new_ids"]], positions, torch.ones_like(positions, dtype=torch.bool), io["sc_ratio"]


def test_published_shortcut_loads_strictly_and_reproduces_sc_out(published, io, wte):
    assert asdict(published.cfg) == {
        "dim": 64,
        "bottleneck": 2,
        "blocks": 1,
        "heads": 4,
        "kv_heads": 4,
        "mlp_hidden": 128,
        "eps": 1e-5,
        "theta": 500000.0,
        "time": True,
        "time_freq": 256,
    }
    with torch.no_grad():
        out = published(*fixture_inputs(io, wte))
    assert rel(io["sc_out"], io["sc_prev"]) > 0.1  # the reference moves the feature: a no-op would fail
    assert rel(out, io["sc_out"]) < 1e-4


def test_padded_batch_equals_each_row_alone(published):
    """Rows of different lengths T and new-token counts K (one with none), right-padded, give what
    each row gives alone; padded positions come out zero."""
    g = torch.Generator().manual_seed(0)
    D = published.cfg.dim
    rows = []
    for T, K in ((35, 21), (28, 5), (20, 0)):
        pos = torch.randperm(T, generator=g)[:K].sort().values
        rows.append((torch.randn(T, D, generator=g), torch.randn(K, D, generator=g), pos))
    ratio = torch.tensor([0.75, 0.3, 0.9])
    T, K = max(r[0].shape[0] for r in rows), max(r[1].shape[0] for r in rows)
    feat, emb = torch.zeros(3, T, D), torch.full((3, K, D), 7.0)  # padded new tokens hold junk: it must not matter
    pos, new_valid = torch.zeros(3, K, dtype=torch.long), torch.zeros(3, K, dtype=torch.bool)
    feat_valid = torch.zeros(3, T, dtype=torch.bool)
    for i, (f, e, p) in enumerate(rows):
        feat[i, : len(f)], emb[i, : len(e)], pos[i, : len(p)] = f, e, p
        feat_valid[i, : len(f)], new_valid[i, : len(p)] = True, True
    with torch.no_grad():
        batch = published(feat, emb, pos, new_valid, ratio, feat_valid)
        for i, (f, e, p) in enumerate(rows):
            alone = published(f[None], e[None], p[None], torch.ones(1, len(p), dtype=torch.bool), ratio[i : i + 1])
            assert torch.isfinite(alone).all()
            assert rel(batch[i, : len(f)], alone[0]) < 1e-5
            assert (batch[i, len(f) :] == 0).all()
    assert rel(batch[2, :20], rows[2][0]) > 1e-3  # no new tokens still moves the feature (MLPs, self-attention)


def test_build_for_base_fills_the_block_shape_and_the_user_wins(stand_in, llada):
    model = build_for_base("dimoo-transformer", stand_in, bottleneck=1, blocks=2, heads=2, kv_heads=1, time="off")
    cfg = model.cfg
    assert (cfg.dim, cfg.heads, cfg.kv_heads, cfg.mlp_hidden) == (64, 2, 1, llada.mlp_hidden_size)
    assert (cfg.eps, cfg.theta) == (llada.rms_norm_eps, llada.rope_theta)
    # bottleneck 1: no projections, and time off: no mask-ratio conditioning, as published
    keys = set(model.state_dict())
    assert not any(k.split(".")[0] in {"proj_in", "proj_out", "new_token_proj_in", "time_embedder"} for k in keys)
    assert "blocks.1.self_attn.q_proj.weight" in keys and "adaLN_modulation.weight" not in keys
    # the saved config (every field filled) rebuilds the same module, with or without the base
    again = build("dimoo-transformer", **asdict(cfg))
    assert again.cfg == cfg and {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    # what a published file's keys say is read back off them
    found = published_dimoo_arch_config(model.state_dict(), "ours")
    assert found == {"dim": 64, "bottleneck": 1, "blocks": 2, "time": False}


def test_build_for_base_refuses_a_base_without_llada(llada):
    maskgit_like = SimpleNamespace(
        name="maskgit-digits", D=64, net=SimpleNamespace(cfg=object()), shortcut_arch="tiny-transformer"
    )
    with pytest.raises(MigmError, match="needs a DiMOO-architecture") as e:
        build_for_base("dimoo-transformer", maskgit_like)
    assert "\n" not in str(e.value)
    with pytest.raises(MigmError, match="dim 32 given, but the base has D = 64"):
        build_for_base("mlp", maskgit_like, dim=32)
    with pytest.raises(MigmError, match="heads and mlp_hidden come from the base"):
        build("dimoo-transformer", dim=64)


def test_bad_published_files_are_one_line_errors(stand_in, tmp_path):
    state = load_state_dict(DIMOO / "shortcut.pth", "state_dict", "shortcut")
    cases = {
        "missing.pth": ({k: v for k, v in state.items() if k != "blocks.0.cross_attn.ff_out.weight"}, "ff_out"),
        "not-dimoo.pth": ({k: v for k, v in state.items() if k != "ln_f.weight"}, "not a DiMOO MDMShortcut"),
        "misshaped.pth": ({**state, "ln_f.weight": torch.ones(31)}, "round"),
        "narrow.pth": ({**state, "blocks.0.self_attn.ff_proj.weight": torch.ones(64, 32)}, "ff_proj"),
    }
    for name, (bad, what) in cases.items():
        torch.save(bad, tmp_path / name)
        with pytest.raises(MigmError, match=what) as e:
            import_published(tmp_path / name, tmp_path / "zoo" / name, stand_in)
        assert "\n" not in str(e.value), name
        assert not (tmp_path / "zoo" / name).exists()  # nothing half-written


def test_a_dimoo_file_for_a_maskgit_base_says_so(tmp_path):
    maskgit = SimpleNamespace(name="maskgit", D=64, text=False, shortcut_arch="tiny-transformer")
    with pytest.raises(MigmError, match="import it with --base dimoo"):
        import_published(DIMOO / "shortcut.pth", tmp_path / "zoo", maskgit)


def test_a_maskgit_file_for_a_dimoo_base_says_so(stand_in, tmp_path):
    with pytest.raises(MigmError, match="not a DiMOO MDMShortcut state dict"):
        import_published(FIXTURES / "maskgit-shortcut" / "shortcut-b2.pth", tmp_path / "zoo", stand_in)


def test_zoo_import_cli_round_trips(published, io, wte, tmp_path):
    """`migm zoo import --published shortcut.pth --base dimoo --checkpoint DIR`: the zoo folder loads
    and gives the published output."""
    from migm.trajectories.base import BaseSpec, load_base
    from migm.trajectories.base.registry import names

    assert "dimoo" in names()
    out = tmp_path / "zoo"
    args = ["zoo", "import", "--published", str(DIMOO / "shortcut.pth"), "--base", "dimoo"]
    result = runner.invoke(app, [*args, "--checkpoint", str(DIMOO / "checkpoint"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "dimoo-transformer, bottleneck 2, 1 block(s), 4 heads" in result.output
    config = read_zoo_config(out)
    assert config["arch"] == "dimoo-transformer" and config["arch_config"] == asdict(published.cfg)
    base = load_base(BaseSpec("dimoo", checkpoint=str(DIMOO / "checkpoint"), device="cpu"))
    assert config["base"]["fingerprint"] == base.fingerprint
    loaded = load_shortcut(out, base)
    with torch.no_grad():
        assert rel(loaded(*fixture_inputs(io, wte)), io["sc_out"]) < 1e-4
