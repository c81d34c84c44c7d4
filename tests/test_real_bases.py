"""Published MaskGIT checkpoints, taming VQGAN folders and published shortcuts, built here at tiny
sizes in the published layouts (key names carried by these tests), loaded from local paths."""

import json
from pathlib import Path

import pytest
import torch
from conftest import (
    CLASSES,
    DEPTH,
    GRID,
    HEADS,
    MLP,
    D,
    V,
    maskgit_state,
    published_shortcut_layout,
    randn_state,
    vqgan_layout,
    write_maskgit,
    write_vqgan,
)
from PIL import Image
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.archs import build
from migm.shortcut_zoo.export import load_shortcut
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.checkpoints import load_state_dict_strict
from migm.trajectories.base.vqgan import VQGANConfig, VQGANDecoder
from migm.trajectories.errors import MigmError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_published_vqgan_f16_decoder_layout():
    """At the published f16 config the decoder has exactly the published keys (197 tensors, 42,777,731 elements)."""
    layout = vqgan_layout(128, [1, 1, 2, 2, 4], 2, {4}, z=256, embed_dim=256, n_embed=1024)
    own = {k: tuple(v.shape) for k, v in VQGANDecoder(VQGANConfig()).state_dict().items()}
    assert own == layout
    assert len(own) == 197 and sum(torch.Size(s).numel() for s in own.values()) == 42_777_731
    assert own["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1) and "decoder.up.4.attn.2.q.weight" in own


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {"checkpoint": write_maskgit(root / "maskgit.pth"), "vqgan": write_vqgan(root / "vqgan"), "root": root}


def test_checkpoint_loads_strictly_with_inferred_dims(files):
    base = load_base(BaseSpec("maskgit", checkpoint=str(files["checkpoint"]), vqgan=str(files["vqgan"]), heads=HEADS))
    c = base.cfg
    assert (c.grid, c.codebook_size, c.num_classes, c.hidden_dim, c.depth, c.mlp_dim, c.heads) == (
        GRID,
        V,
        CLASSES,
        D,
        DEPTH,
        MLP,
        HEADS,
    )
    state = maskgit_state()
    assert all(torch.equal(v, state[k]) for k, v in base.net.state_dict().items())
    # the codebook size is inferred the same without the VQGAN (a power of two), so is the fingerprint
    alone = load_base(BaseSpec("maskgit", checkpoint=str(files["checkpoint"]), heads=HEADS))
    assert alone.cfg == c and alone.fingerprint == base.fingerprint and len(base.fingerprint) == 64
    # a DDP-saved bare state dict loads too
    bare = files["root"] / "bare.pt"
    torch.save({"module." + k: v for k, v in state.items()}, bare)
    assert load_base(BaseSpec("maskgit", checkpoint=str(bare), heads=HEADS)).fingerprint == base.fingerprint


def test_vqgan_decodes_to_rgb_in_unit_range(files):
    base = load_base(BaseSpec("maskgit", checkpoint=str(files["checkpoint"]), vqgan=str(files["vqgan"]), heads=HEADS))
    images = base.decode(torch.randint(0, V, (3, GRID * GRID)))
    assert images.shape == (3, 3, GRID * 2, GRID * 2) and images.dtype == torch.float32  # f = 2 at this ch_mult
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


@pytest.mark.parametrize(
    "change, name", [("rename", "first_layer.2.weight"), ("drop", "transformer.layers.1.0.norm.bias")]
)
def test_renamed_or_missing_maskgit_key_is_named(files, tmp_path, change, name):
    state = maskgit_state()
    value = state.pop(name)
    if change == "rename":
        state[name + "_renamed"] = value
    path = write_maskgit(tmp_path / "bad.pth", state)
    with pytest.raises(MigmError, match=name.replace(".", r"\.")) as e:
        load_base(BaseSpec("maskgit", checkpoint=str(path), heads=HEADS))
    assert "missing keys" in str(e.value) and (change == "drop" or name + "_renamed" in str(e.value))


def test_missing_vqgan_key_is_named(tmp_path):
    folder = write_vqgan(tmp_path / "vq", drop="decoder.mid.attn_1.q.weight")
    from migm.trajectories.base.vqgan import load_vqgan

    with pytest.raises(MigmError, match=r"missing keys: decoder\.mid\.attn_1\.q\.weight"):
        load_vqgan(folder)


def test_bad_files_give_short_errors(files, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a checkpoint\n")
    for args in (
        ["--checkpoint", str(junk)],
        ["--checkpoint", str(tmp_path / "absent.pth")],
        ["--checkpoint", str(files["checkpoint"]), "--vqgan", str(tmp_path)],
        ["--checkpoint", str(files["checkpoint"]), "--heads", "5"],
    ):
        r = runner.invoke(app, ["generate", "--model", "maskgit", *args, "--out", str(tmp_path / "g.png")])
        assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["generate", "--checkpoint", str(files["checkpoint"]), "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 2 and "not used by --model maskgit-digits" in r.output
    assert not (tmp_path / "g.png").exists()


class _Runs:
    """Pickles as a call to shutil.copyfile: a full unpickle would create `dst`."""

    def __init__(self, src, dst):
        self.args = (src, dst)

    def __reduce__(self):
        import shutil

        return shutil.copyfile, self.args


def test_nothing_is_unpickled_beyond_weights_only(tmp_path):
    src, dst = tmp_path / "src.txt", tmp_path / "created-by-unpickling.txt"
    src.write_text("x")
    path = tmp_path / "sneaky.pth"
    torch.save({"model_state_dict": maskgit_state(), "hook": _Runs(str(src), str(dst))}, path)
    base = load_base(BaseSpec("maskgit", checkpoint=str(path), heads=HEADS))  # the weights load; the hook stays inert
    assert base.L == GRID * GRID and not dst.exists()

    class _System:
        def __reduce__(self):
            import os

            return os.system, (f"touch {dst}",)

    torch.save({"model_state_dict": maskgit_state(), "hook": _System()}, path)
    with pytest.raises(MigmError, match="refused by the weights-only loader"):
        load_base(BaseSpec("maskgit", checkpoint=str(path), heads=HEADS))
    assert not dst.exists()


def test_generate_writes_an_rgb_grid_and_bf16_samples(files, tmp_path):
    out = tmp_path / "grid.png"
    args = [
        "--model",
        "maskgit",
        "--checkpoint",
        str(files["checkpoint"]),
        "--vqgan",
        str(files["vqgan"]),
        "--heads",
        "4",
        "--classes",
        "0-2",
        "--per-class",
        "3",
        "--steps",
        "8",
        "--quiet",
    ]
    r = runner.invoke(app, ["generate", *args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    img = Image.open(out)
    assert img.mode == "RGB" and img.size == (2 * (3 * (12 + 1) + 1), 2 * (3 * (12 + 1) + 1))  # 12-px images, x2
    r = runner.invoke(app, ["generate", *args, "--precision", "bf16", "--out", str(tmp_path / "bf16.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 9
    r = runner.invoke(
        app, ["generate", *args, "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path / "h.png")]
    )
    assert r.exit_code == 2 and "fp16 needs a CUDA device" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_a_short_error(files, tmp_path):
    r = runner.invoke(
        app,
        [
            "generate",
            "--model",
            "maskgit",
            "--checkpoint",
            str(files["checkpoint"]),
            "--heads",
            "4",
            "--device",
            "cuda",
            "--out",
            str(tmp_path / "g.png"),
        ],
    )
    assert r.exit_code == 2 and r.output.startswith("error: ") and "no CUDA GPU" in r.output


def published_shortcut_state() -> dict:
    return randn_state(published_shortcut_layout(D=D, H=D // 2, blocks=1, time_hidden=30), seed=2, scale=0.1)


def test_imported_published_shortcut_matches_direct_load_and_samples(files, tmp_path):
    state = published_shortcut_state()
    path = tmp_path / "shortcut.pth"
    torch.save(state, path)  # the published file is a plain pickled state dict
    out = tmp_path / "zoo" / "published"
    out.parent.mkdir()
    r = runner.invoke(
        app,
        [
            "zoo",
            "import",
            "--published",
            str(path),
            "--base",
            "maskgit",
            "--checkpoint",
            str(files["checkpoint"]),
            "--heads",
            "4",
            "--shortcut-heads",
            "4",
            "--bottleneck",
            "2",
            "--blocks",
            "1",
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    base = load_base(BaseSpec("maskgit", checkpoint=str(files["checkpoint"]), heads=HEADS))
    imported = load_shortcut(out, base)
    direct = build("tiny-transformer", dim=D, bottleneck=2, blocks=1, heads=HEADS, time_hidden=30).eval()
    load_state_dict_strict(direct, state, "published shortcut")
    g = torch.Generator().manual_seed(3)
    feat, new_emb = torch.randn(4, GRID * GRID + 1, D, generator=g), torch.randn(4, 3, D, generator=g)
    args = (
        feat,
        new_emb,
        torch.randint(0, 36, (4, 3), generator=g),
        torch.ones(4, 3, dtype=torch.bool),
        torch.rand(4, generator=g),
    )
    with torch.no_grad():
        assert torch.equal(imported(*args), direct(*args))
    assert "origin" in json.loads((out / "config.json").read_text())
    # a wrong expectation, and an existing folder, are refused
    r = runner.invoke(
        app,
        [
            "zoo",
            "import",
            "--published",
            str(path),
            "--checkpoint",
            str(files["checkpoint"]),
            "--heads",
            "4",
            "--blocks",
            "2",
            "--out",
            str(tmp_path / "zoo" / "other"),
        ],
    )
    assert r.exit_code == 2 and "blocks 1" in r.output
    # sampling with it runs (N8 B3), and the zoo lists it
    r = runner.invoke(
        app,
        [
            "sample",
            "--model",
            "maskgit",
            "--checkpoint",
            str(files["checkpoint"]),
            "--vqgan",
            str(files["vqgan"]),
            "--heads",
            "4",
            "--shortcut",
            str(out),
            "--steps",
            "8",
            "--budget",
            "3",
            "--classes",
            "0,1",
            "--per-class",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "s.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["zoo", "list", str(out.parent), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["base"] == "maskgit"


def test_dump_and_bench_run_on_a_published_checkpoint(files, tmp_path):
    base_args = ["--model", "maskgit", "--checkpoint", str(files["checkpoint"]), "--heads", "4"]
    r = runner.invoke(
        app,
        [
            "dump-trajectories",
            *base_args,
            "--num-samples",
            "4",
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "ds"),
            "--quiet",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert manifest["base"]["name"] == "maskgit" and manifest["dims"]["D"] == D and manifest["dims"]["L"] == GRID * GRID
    r = runner.invoke(
        app,
        [
            "bench",
            *base_args,
            "--configs",
            "N4,N4B2",
            "--predictors",
            "cache",
            "--samples",
            "4",
            "--batch-size",
            "4",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "bench"),
            "--quiet",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [row["method"] for row in rows] == ["vanilla", "cache"] and rows[0]["frechet"] is None
    assert (tmp_path / "bench" / "pareto.png").exists()
