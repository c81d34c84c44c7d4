"""What the published MIGM-Shortcut code computes, reproduced: its shortcut forward and its MaskGIT
base on the reference outputs in `tests/fixtures/published/maskgit-shortcut/` (made by the
published modules at tiny dims), the zoo import of its files, its full-step rule, its image mapping
and its training options."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import PUBLISHED
from helpers import rel
from safetensors.torch import load_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import build
from migm.shortcut_zoo.export import load_shortcut, read_zoo_config
from migm.shortcut_zoo.published import published_arch_config
from migm.shortcut_zoo.train import TrainConfig, check_config, get_lr, shortcut_loss
from migm.trajectories.base.checkpoints import load_state_dict
from migm.trajectories.base.maskgit import load_maskgit
from migm.trajectories.base.vqgan import VQGANConfig, VQGANDecoder, load_vqgan
from migm.trajectories.errors import MigmError
from migm.trajectories.schedule import full_steps

FIXTURES = PUBLISHED / "maskgit-shortcut"
runner = CliRunner()
VARIANTS = ["b2", "b1-no-t"]


@pytest.fixture(scope="module")
def io() -> dict:
    return load_file(str(FIXTURES / "io.safetensors"))


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "meta.json").read_text())


@pytest.fixture(scope="module")
def base(meta):
    return load_maskgit(str(FIXTURES / "base.pth"), heads=meta["base"]["heads"])


def shortcut_inputs(io: dict, base) -> tuple:
    """The fixture's inputs in our forward contract: new tokens embedded as tok_emb[id] + pos_emb[position]."""
    B = io["new_ids"].shape[0]
    positions = io["new_map"].nonzero()[:, 1].view(B, -1)  # row-major: increasing positions, as published
    emb = base.embed(io["new_ids"], positions)
    return io["prev"], emb, positions, torch.ones_like(positions, dtype=torch.bool), io["ratio"]


def test_base_forward_matches_published(io, base):
    cond = torch.where(io["base_drop"], base.num_classes, io["base_labels"])  # dropped label: the null class
    logits, feature = base.forward(io["base_tokens"].flatten(1), cond)
    assert rel(logits, io["base_logits"]) < 1e-4
    assert rel(feature, io["base_feature"]) < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_published_shortcut_forward_is_reproduced(io, meta, base, variant):
    state = load_state_dict(FIXTURES / f"shortcut-{variant}.pth", "state_dict", "shortcut state dict")  # weights-only
    found, published = published_arch_config(state, variant), meta["shortcuts"][variant]
    assert (found["bottleneck"], found["blocks"], found["time"]) == (
        published["bottleneck_ratio"],
        published["n_block"],
        published["embed_t"],
    )
    model = build("tiny-transformer", **found, heads=published["num_heads"]).eval()
    model.load_state_dict(state, strict=True)
    feat, emb, pos, valid, ratio = shortcut_inputs(io, base)
    with torch.no_grad():
        out = model(feat, emb, pos, valid, ratio)
        assert rel(out, io[f"out_{variant}"]) < 1e-4
        # padded new tokens (a batch mixing steps) change nothing: still the published output
        pad = lambda t, v: torch.cat([t, torch.full_like(t[:, :2], v)], dim=1)  # noqa: E731
        padded = model(feat, pad(emb, 50.0), pad(pos, 0), pad(valid, False), ratio)
        assert rel(padded, io[f"out_{variant}"]) < 1e-4


def test_the_old_adaln_would_not_pass(io, base):
    """The check can fail: the old adaLN (`shift, scale` after a SiLU) misses the published output by far
    more than 1e-4, although the residual keeps the output close to its input."""
    state = load_state_dict(FIXTURES / "shortcut-b2.pth", "state_dict", "shortcut state dict")
    model = build("tiny-transformer", **published_arch_config(state, "b2"), heads=4).eval()
    model.load_state_dict(state)
    feat, emb, pos, valid, ratio = shortcut_inputs(io, base)
    with torch.no_grad():
        x, new = model.proj_in(feat), model.new_token_proj_in(emb)
        for block in model.blocks:
            x = block(x, new, ~valid)
        x = model.last_layer(x)
        shift, scale = model.adaLN_modulation(torch.nn.functional.silu(model.time_embedder(1000 * ratio))).chunk(
            2, dim=-1
        )
        old = feat + model.proj_out(x * (1 + scale[:, None]) + shift[:, None])
    assert rel(old, io["out_b2"]) > 1e-3


def write_vqgan(folder: Path, n_embed: int) -> Path:
    """A taming-layout VQGAN folder (model.yaml + last.ckpt) with random decoder weights."""
    cfg = VQGANConfig(
        n_embed=n_embed,
        embed_dim=8,
        z_channels=16,
        resolution=16,
        ch=32,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[8],
    )
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    dd = {
        k: getattr(cfg, k)
        for k in ("z_channels", "resolution", "out_ch", "ch", "ch_mult", "num_res_blocks", "attn_resolutions")
    }
    params = {"n_embed": n_embed, "embed_dim": cfg.embed_dim, "ddconfig": dd}
    (folder / "model.yaml").write_text(yaml.safe_dump({"model": {"params": params}}))
    torch.save({"state_dict": VQGANDecoder(cfg).state_dict()}, folder / "last.ckpt")
    return folder


def test_zoo_import_reproduces_the_published_outputs_and_samples(io, base, tmp_path):
    base_opts = ["--checkpoint", str(FIXTURES / "base.pth"), "--heads", "4"]
    import_opts = [*base_opts, "--steps", "6"]  # N for the card's cost figures (the grid has 9 tokens)
    for variant in VARIANTS:
        out = tmp_path / variant
        r = runner.invoke(
            app,
            [
                "zoo",
                "import",
                "--published",
                str(FIXTURES / f"shortcut-{variant}.pth"),
                *import_opts,
                "--shortcut-heads",
                "4",
                "--out",
                str(out),
            ],
        )
        assert r.exit_code == 0, r.output
        config = read_zoo_config(out)
        assert config["arch_config"]["time"] == (variant == "b2") and config["arch_config"]["heads"] == 4
        with torch.no_grad():
            assert rel(load_shortcut(out, base)(*shortcut_inputs(io, base)), io[f"out_{variant}"]) < 1e-4
    # heads that do not divide the shortcut's width (24 for b2): one line, nothing written
    r = runner.invoke(
        app,
        [
            "zoo",
            "import",
            "--published",
            str(FIXTURES / "shortcut-b2.pth"),
            *import_opts,
            "--out",
            str(tmp_path / "bad"),
        ],
    )
    assert (
        r.exit_code == 2
        and r.output.startswith("error: --shortcut-heads must divide")
        and len(r.output.splitlines()) == 1
    )
    assert not (tmp_path / "bad").exists()
    # sampling with the imported shortcut runs (N6 B3 on the 3x3 grid)
    vqgan = write_vqgan(tmp_path / "vqgan", n_embed=32)
    r = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "maskgit",
            *base_opts,
            "--vqgan",
            str(vqgan),
            "--shortcut",
            str(tmp_path / "b2"),
            "--steps",
            "6",
            "--budget",
            "3",
            "--classes",
            "0,1",
            "--per-class",
            "2",
            "--quiet",
            "--json",
            "--out",
            str(tmp_path / "s.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 4 and (tmp_path / "s.png").exists()


def test_zoo_folders_of_the_old_forward_are_refused(tmp_path):
    out = tmp_path / "zoo"
    r = runner.invoke(
        app,
        [
            "zoo",
            "import",
            "--published",
            str(FIXTURES / "shortcut-b2.pth"),
            "--checkpoint",
            str(FIXTURES / "base.pth"),
            "--heads",
            "4",
            "--shortcut-heads",
            "4",
            "--steps",
            "6",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    config = json.loads((out / "config.json").read_text())
    for old in (1, None):  # zoo format 1, and folders from before formats were numbered
        (out / "config.json").write_text(
            json.dumps({**config, "zoo_format": old} if old else {k: v for k, v in config.items() if k != "zoo_format"})
        )
        r = runner.invoke(app, ["zoo", "list", str(out)])
        assert r.exit_code == 2 and "old tiny-transformer forward" in r.output and "retrain" in r.output
        assert len(r.output.strip().splitlines()) == 1
    # mlp and gru compute what they computed under format 1: their folders still load
    (out / "config.json").write_text(json.dumps({**config, "zoo_format": 1, "arch": "mlp"}))
    assert read_zoo_config(out)["arch"] == "mlp"


def test_full_steps_follow_the_published_rule():
    """Examples; every (N, B) of the published table is checked in test_published_sampler."""
    assert full_steps(15, 10) == [0, 2, 3, 4, 6, 8, 9, 10, 12, 14]
    assert full_steps(45, 10) == [0, 4, 9, 14, 18, 22, 27, 31, 36, 40]  # 45·(7/10) = 31.499…: 31
    for N in range(1, 65):
        assert full_steps(N, N) == list(range(N))


def test_decoded_pixels_map_each_image_by_its_min_and_max(tmp_path):
    vq = load_vqgan(write_vqgan(tmp_path / "vq", n_embed=32))
    tokens = torch.randint(0, 32, (3, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = vq.quantize.embedding(tokens).view(3, 3, 3, -1).permute(0, 3, 1, 2)
        raw = vq.decoder(vq.post_quant_conv(z))
    lo, hi = raw.amin(dim=(1, 2, 3), keepdim=True), raw.amax(dim=(1, 2, 3), keepdim=True)
    minmax = vq(tokens)  # the default
    assert torch.allclose(minmax, (raw - lo) / (hi - lo), atol=1e-6)
    assert torch.allclose(minmax.amin(dim=(1, 2, 3)), torch.zeros(3)) and torch.allclose(
        minmax.amax(dim=(1, 2, 3)), torch.ones(3)
    )
    assert torch.allclose(vq(tokens, "clamp"), (raw.clamp(-1, 1) + 1) / 2, atol=1e-6)
    assert not torch.allclose(vq(tokens, "clamp"), minmax, atol=1e-3)


def test_pixels_option_reaches_the_decoder(tmp_path):
    vqgan = write_vqgan(tmp_path / "vq", n_embed=32)
    tokens = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(1))
    clamp = load_maskgit(str(FIXTURES / "base.pth"), vqgan=str(vqgan), heads=4, pixels="clamp").decode(tokens)
    default = load_maskgit(str(FIXTURES / "base.pth"), vqgan=str(vqgan), heads=4).decode(tokens)
    assert torch.allclose(default.amax(dim=(1, 2, 3)), torch.ones(2)) and not torch.allclose(clamp, default, atol=1e-3)
    r = runner.invoke(
        app,
        [
            "generate",
            "--model",
            "maskgit",
            "--checkpoint",
            str(FIXTURES / "base.pth"),
            "--heads",
            "4",
            "--vqgan",
            str(vqgan),
            "--pixels",
            "nearest",
            "--out",
            str(tmp_path / "g.png"),
        ],
    )
    assert r.exit_code == 2 and r.output.startswith("error: --pixels must be one of minmax, clamp")
    assert not (tmp_path / "g.png").exists()


# --- training options of the published trainer ------------------------------------------------------


def test_step_lr_decay_is_a_tenth_from_the_given_step_on():
    cfg = TrainConfig(data="-", lr=1e-3, warmup=0, lr_schedule="step", lr_decay_step=5, steps=20)
    assert [get_lr(s, cfg) for s in (0, 4)] == [1e-3, 1e-3]
    assert [get_lr(s, cfg) for s in (5, 19)] == pytest.approx([1e-4, 1e-4])
    default = TrainConfig(data="-", steps=20, warmup=2)  # unchanged: warm-up, then cosine to 10%
    assert default.lr_schedule == "cosine" and get_lr(19, default) == pytest.approx(
        1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * 17 / 18)))
    )


def loss_batch(base, seed: int = 0) -> tuple[torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    T, D, L = base.L + base.C, base.D, base.L
    target = torch.randn(2, T, D, generator=g)
    still = torch.rand(2, L, generator=g) < 0.6
    return target + 0.3 * torch.randn(2, T, D, generator=g), {"target": target, "still_masked": still}


def test_loss_weights_and_kl_temperature(base):
    pred, batch = loss_batch(base)
    keep = batch["still_masked"]
    mse = ((pred - batch["target"]) ** 2).mean(-1)[:, : base.L][keep].mean()

    def kl(T):  # KL(target ‖ prediction) of softmax(logits / T), per still-masked position
        p = torch.softmax(base.head(batch["target"]) / T, -1)
        q = torch.softmax(base.head(pred) / T, -1)
        return (p * (p.log() - q.log())).sum(-1)[keep].mean()

    assert shortcut_loss(pred, batch, base, TrainConfig(data="-")).item() == pytest.approx(mse.item(), rel=1e-5)
    cfg = TrainConfig(data="-", loss="mse+kl", mse_weight=2.0, kl_weight=0.5, kl_temperature=3.0)
    expected = 2.0 * mse + 0.5 * 9.0 * kl(3.0)
    assert shortcut_loss(pred, batch, base, cfg).item() == pytest.approx(expected.item(), rel=1e-4)
    assert kl(3.0) != pytest.approx(kl(1.0).item(), rel=1e-2)  # the temperature matters
    kl_only = TrainConfig(data="-", loss="mse+kl", mse_weight=0.0, kl_weight=1.0)
    assert shortcut_loss(pred, batch, base, kl_only).item() == pytest.approx(kl(1.0).item(), rel=1e-4)


def test_shortcut_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = build("tiny-transformer", dim=32, heads=2, dropout=0.5)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    args = (
        torch.randn(2, 10, 32),
        torch.randn(2, 3, 32),
        torch.tensor([[0, 1, 2], [3, 4, 5]]),
        torch.ones(2, 3, dtype=torch.bool),
        torch.rand(2),
    )
    same = build("tiny-transformer", dim=32, heads=2)
    same.load_state_dict(model.state_dict())
    with torch.no_grad():
        model.train()
        assert not torch.allclose(model(*args), model(*args))
        model.eval()
        assert torch.equal(model(*args), same.eval()(*args))


def test_bad_training_options_are_one_line_errors(tmp_path):
    for cfg in (
        TrainConfig(data="-", lr_schedule="linear"),
        TrainConfig(data="-", kl_temperature=0.0),
        TrainConfig(data="-", mse_weight=0.0),
    ):
        with pytest.raises(MigmError):
            check_config(cfg)
    r = runner.invoke(app, ["train", "--data", str(tmp_path), "--loss", "mse+kl", "--kl-temperature", "-1"])
    assert r.exit_code == 2 and r.output.startswith("error: kl-temperature must be positive")
    with pytest.raises(MigmError, match="dropout"):
        build("tiny-transformer", dim=32, dropout=1.5)


@pytest.mark.parametrize(
    "options, absent",
    [
        ({"bottleneck": 1}, ("proj_in.weight", "proj_out.weight", "new_token_proj_in.weight")),
        ({"time": "off"}, ("time_embedder.mlp.0.weight", "adaLN_modulation.weight")),
        ({"bottleneck": 1, "time": False}, ("proj_in.weight", "adaLN_modulation.weight")),
    ],
)
def test_published_variants_as_arch_options_start_at_the_cache_map(options, absent):
    model = build("tiny-transformer", dim=32, heads=2, **options)
    assert not set(absent) & set(model.state_dict())
    feat = torch.randn(2, 10, 32)
    args = (
        torch.randn(2, 3, 32),
        torch.tensor([[0, 1, 2], [3, 4, 5]]),
        torch.ones(2, 3, dtype=torch.bool),
        torch.rand(2),
    )
    with torch.no_grad():
        assert torch.equal(model(feat, *args), feat)  # zero-initialised last map: training starts at `cache`
