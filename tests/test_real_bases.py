"""Published MaskGIT checkpoints, taming VQGAN folders and published shortcuts, built here at tiny
sizes in the published layouts (key names carried by these tests), loaded from local paths."""

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from shortcut_zoo.archs import build
from shortcut_zoo.export import load_shortcut
from test_checkpoint_layout import published_layout
from test_zoo import published_shortcut_layout
from trajectories.base import get_base
from trajectories.base.maskgit import load_state_dict_strict
from trajectories.base.vqgan import VQGANConfig, VQGANDecoder
from trajectories.errors import MigmError

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# tiny MaskGIT: 6x6 tokens, codebook 16, 10 classes, hidden 32, depth 2, mlp 64, 4 heads
GRID, V, CLASSES, D, DEPTH, MLP, HEADS = 6, 16, 10, 32, 2, 64, 4

MODEL_YAML = """model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 16
    ddconfig:
      double_z: false
      z_channels: 16
      resolution: 16
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult:
      - 1
      - 2
      num_res_blocks: 1
      attn_resolutions:
      - 8
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 250001
        disc_weight: 0.8
        codebook_weight: 1.0
"""


def vqgan_layout(ch: int, ch_mult: list[int], blocks: int, attn_levels: set[int], z: int, embed_dim: int, n_embed: int) -> dict:
    """Key names and shapes of the taming VQGAN's decoding path (`decoder.*`, codebook, post_quant_conv)."""

    def resnet(p, c_in, c_out):
        keys = {f"{p}.norm1.weight": (c_in,), f"{p}.norm1.bias": (c_in,), f"{p}.conv1.weight": (c_out, c_in, 3, 3),
                f"{p}.conv1.bias": (c_out,), f"{p}.norm2.weight": (c_out,), f"{p}.norm2.bias": (c_out,),
                f"{p}.conv2.weight": (c_out, c_out, 3, 3), f"{p}.conv2.bias": (c_out,)}  # fmt: skip
        if c_in != c_out:
            keys |= {f"{p}.nin_shortcut.weight": (c_out, c_in, 1, 1), f"{p}.nin_shortcut.bias": (c_out,)}
        return keys

    def attn(p, c):
        keys = {f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,)}
        for name in ("q", "k", "v", "proj_out"):
            keys |= {f"{p}.{name}.weight": (c, c, 1, 1), f"{p}.{name}.bias": (c,)}
        return keys

    c = ch * ch_mult[-1]
    keys = {"quantize.embedding.weight": (n_embed, embed_dim), "post_quant_conv.weight": (z, embed_dim, 1, 1),
            "post_quant_conv.bias": (z,), "decoder.conv_in.weight": (c, z, 3, 3), "decoder.conv_in.bias": (c,)}  # fmt: skip
    keys |= resnet("decoder.mid.block_1", c, c) | attn("decoder.mid.attn_1", c) | resnet("decoder.mid.block_2", c, c)
    for level in reversed(range(len(ch_mult))):
        c_out = ch * ch_mult[level]
        for j in range(blocks + 1):
            keys |= resnet(f"decoder.up.{level}.block.{j}", c, c_out)
            c = c_out
            if level in attn_levels:
                keys |= attn(f"decoder.up.{level}.attn.{j}", c)
        if level:
            keys |= {f"decoder.up.{level}.upsample.conv.weight": (c, c, 3, 3), f"decoder.up.{level}.upsample.conv.bias": (c,)}
    return keys | {"decoder.norm_out.weight": (c,), "decoder.norm_out.bias": (c,), "decoder.conv_out.weight": (3, c, 3, 3),
                   "decoder.conv_out.bias": (3,)}  # fmt: skip


def test_published_vqgan_f16_decoder_layout():
    """At the published f16 config the decoder has exactly the published keys (197 tensors, 42,777,731 elements)."""
    layout = vqgan_layout(128, [1, 1, 2, 2, 4], 2, {4}, z=256, embed_dim=256, n_embed=1024)
    own = {k: tuple(v.shape) for k, v in VQGANDecoder(VQGANConfig()).state_dict().items()}
    assert own == layout
    assert len(own) == 197 and sum(torch.Size(s).numel() for s in own.values()) == 42_777_731
    assert own["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1) and "decoder.up.4.attn.2.q.weight" in own


def _randn(layout: dict, seed: int, scale: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(shape, generator=g) for k, shape in layout.items()}


def _lightning_callback_class():
    """A class pickled under PyTorch Lightning's module name, as taming's last.ckpt carries one."""
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass

    ModelCheckpoint.__module__ = module.__name__
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    return module, ModelCheckpoint


def maskgit_state() -> dict:
    return _randn(published_layout(D=D, depth=DEPTH, mlp=MLP, vocab=V + 1 + CLASSES + 1, L=GRID * GRID), seed=0)


def write_maskgit(path: Path, state: dict | None = None) -> Path:
    state = maskgit_state() if state is None else state
    torch.save({"iter": 1000, "global_epoch": 3, "model_state_dict": state,
                "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "args": argparse.Namespace(img_size=GRID * 16, bsize=256)}, path)  # fmt: skip
    return path


def write_vqgan(folder: Path, drop: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.yaml").write_text(MODEL_YAML)
    state = _randn(vqgan_layout(32, [1, 2], 1, {1}, z=16, embed_dim=8, n_embed=16), seed=1, scale=0.2)
    state |= {"encoder.conv_in.weight": torch.randn(32, 3, 3, 3), "quant_conv.weight": torch.randn(8, 8, 1, 1),
              "loss.discriminator.main.0.weight": torch.randn(4, 3, 4, 4), "loss.logvar": torch.zeros(())}  # fmt: skip
    if drop:
        state.pop(drop)
    module, callback = _lightning_callback_class()
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", module.__name__]
    for name in names:  # only while saving: loading never imports them
        sys.modules[name] = module if name == module.__name__ else types.ModuleType(name)
    try:
        torch.save({"epoch": 5, "global_step": 100, "pytorch-lightning_version": "1.0.8", "state_dict": state,
                    "callbacks": {callback: {"best_model_score": None}}, "optimizer_states": []}, folder / "last.ckpt")  # fmt: skip
    finally:
        for name in names:
            del sys.modules[name]
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    return {"checkpoint": write_maskgit(root / "maskgit.pth"), "vqgan": write_vqgan(root / "vqgan"), "root": root}


def test_checkpoint_loads_strictly_with_inferred_dims(files):
    base = get_base("maskgit", checkpoint=str(files["checkpoint"]), vqgan=str(files["vqgan"]), heads=HEADS)
    c = base.cfg
    assert (c.grid, c.codebook_size, c.num_classes, c.hidden_dim, c.depth, c.mlp_dim, c.heads) == (GRID, V, CLASSES, D, DEPTH, MLP, HEADS)
    state = maskgit_state()
    assert all(torch.equal(v, state[k]) for k, v in base.net.state_dict().items())
    # the codebook size is inferred the same without the VQGAN (a power of two), so is the fingerprint
    alone = get_base("maskgit", checkpoint=str(files["checkpoint"]), heads=HEADS)
    assert alone.cfg == c and alone.fingerprint == base.fingerprint and len(base.fingerprint) == 64
    # a DDP-saved bare state dict loads too
    bare = files["root"] / "bare.pt"
    torch.save({"module." + k: v for k, v in state.items()}, bare)
    assert get_base("maskgit", checkpoint=str(bare), heads=HEADS).fingerprint == base.fingerprint


def test_vqgan_decodes_to_rgb_in_unit_range(files):
    base = get_base("maskgit", checkpoint=str(files["checkpoint"]), vqgan=str(files["vqgan"]), heads=HEADS)
    images = base.decode(torch.randint(0, V, (3, GRID * GRID)))
    assert images.shape == (3, 3, GRID * 2, GRID * 2) and images.dtype == torch.float32  # f = 2 at this ch_mult
    assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


@pytest.mark.parametrize("change, name", [("rename", "first_layer.2.weight"), ("drop", "transformer.layers.1.0.norm.bias")])
def test_renamed_or_missing_maskgit_key_is_named(files, tmp_path, change, name):
    state = maskgit_state()
    value = state.pop(name)
    if change == "rename":
        state[name + "_renamed"] = value
    path = write_maskgit(tmp_path / "bad.pth", state)
    with pytest.raises(MigmError, match=name.replace(".", r"\.")) as e:
        get_base("maskgit", checkpoint=str(path), heads=HEADS)
    assert "missing keys" in str(e.value) and (change == "drop" or name + "_renamed" in str(e.value))


def test_missing_vqgan_key_is_named(tmp_path):
    folder = write_vqgan(tmp_path / "vq", drop="decoder.mid.attn_1.q.weight")
    from trajectories.base.vqgan import load_vqgan

    with pytest.raises(MigmError, match=r"missing keys: decoder\.mid\.attn_1\.q\.weight"):
        load_vqgan(folder)


def test_bad_files_give_short_errors(files, tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a checkpoint\n")
    for args in (["--checkpoint", str(junk)], ["--checkpoint", str(tmp_path / "absent.pth")],
                 ["--checkpoint", str(files["checkpoint"]), "--vqgan", str(tmp_path)],
                 ["--checkpoint", str(files["checkpoint"]), "--heads", "5"]):  # fmt: skip
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
    base = get_base("maskgit", checkpoint=str(path), heads=HEADS)  # the weights load; the hook stays inert
    assert base.L == GRID * GRID and not dst.exists()

    class _System:
        def __reduce__(self):
            import os

            return os.system, (f"touch {dst}",)

    torch.save({"model_state_dict": maskgit_state(), "hook": _System()}, path)
    with pytest.raises(MigmError, match="refused by the weights-only loader"):
        get_base("maskgit", checkpoint=str(path), heads=HEADS)
    assert not dst.exists()


def test_generate_writes_an_rgb_grid_and_bf16_samples(files, tmp_path):
    out = tmp_path / "grid.png"
    args = ["--model", "maskgit", "--checkpoint", str(files["checkpoint"]), "--vqgan", str(files["vqgan"]), "--heads", "4",
            "--classes", "0-2", "--per-class", "3", "--steps", "8", "--quiet"]  # fmt: skip
    r = runner.invoke(app, ["generate", *args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    img = Image.open(out)
    assert img.mode == "RGB" and img.size == (2 * (3 * (12 + 1) + 1), 2 * (3 * (12 + 1) + 1))  # 12-px images, x2
    r = runner.invoke(app, ["generate", *args, "--precision", "bf16", "--out", str(tmp_path / "bf16.png"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 9
    r = runner.invoke(app, ["generate", *args, "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path / "h.png")])
    assert r.exit_code == 2 and "fp16 needs --device cuda" in r.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_a_short_error(files, tmp_path):
    r = runner.invoke(app, ["generate", "--model", "maskgit", "--checkpoint", str(files["checkpoint"]), "--heads", "4",
                            "--device", "cuda", "--out", str(tmp_path / "g.png")])  # fmt: skip
    assert r.exit_code == 2 and r.output.startswith("error: ") and "no CUDA GPU" in r.output


def published_shortcut_state() -> dict:
    return _randn(published_shortcut_layout(D=D, H=D // 2, blocks=1, time_hidden=30), seed=2, scale=0.1)


def test_imported_published_shortcut_matches_direct_load_and_samples(files, tmp_path):
    state = published_shortcut_state()
    path = tmp_path / "shortcut.pth"
    torch.save(state, path)  # the published file is a plain pickled state dict
    out = tmp_path / "zoo" / "published"
    out.parent.mkdir()
    r = runner.invoke(app, ["zoo", "import", "--published", str(path), "--base", "maskgit", "--checkpoint",
                            str(files["checkpoint"]), "--heads", "4", "--bottleneck", "2", "--blocks", "1", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    base = get_base("maskgit", checkpoint=str(files["checkpoint"]), heads=HEADS)
    imported = load_shortcut(out, base)
    direct = build("tiny-transformer", dim=D, bottleneck=2, blocks=1, heads=HEADS, time_hidden=30).eval()
    load_state_dict_strict(direct, state, "published shortcut")
    g = torch.Generator().manual_seed(3)
    feat, new_emb = torch.randn(4, GRID * GRID + 1, D, generator=g), torch.randn(4, 3, D, generator=g)
    args = (feat, new_emb, torch.randint(0, 36, (4, 3), generator=g), torch.ones(4, 3, dtype=torch.bool), torch.rand(4, generator=g))
    with torch.no_grad():
        assert torch.equal(imported(*args), direct(*args))
    assert "origin" in json.loads((out / "config.json").read_text())
    # a wrong expectation, and an existing folder, are refused
    r = runner.invoke(app, ["zoo", "import", "--published", str(path), "--checkpoint", str(files["checkpoint"]),
                            "--heads", "4", "--blocks", "2", "--out", str(tmp_path / "zoo" / "other")])  # fmt: skip
    assert r.exit_code == 2 and "blocks 1" in r.output
    # sampling with it runs (N8 B3), and the zoo lists it
    r = runner.invoke(app, ["sample", "--model", "maskgit", "--checkpoint", str(files["checkpoint"]), "--vqgan",
                            str(files["vqgan"]), "--heads", "4", "--shortcut", str(out), "--steps", "8", "--budget", "3",
                            "--classes", "0,1", "--per-class", "2", "--quiet", "--out", str(tmp_path / "s.png")])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["zoo", "list", str(out.parent), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)[0]["base"] == "maskgit"


def test_dump_and_bench_run_on_a_published_checkpoint(files, tmp_path):
    base_args = ["--model", "maskgit", "--checkpoint", str(files["checkpoint"]), "--heads", "4"]
    r = runner.invoke(app, ["dump-trajectories", *base_args, "--num-samples", "4", "--steps", "4", "--batch-size", "2",
                            "--out", str(tmp_path / "ds"), "--quiet", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert manifest["base"]["name"] == "maskgit" and manifest["dims"]["D"] == D and manifest["dims"]["L"] == GRID * GRID
    r = runner.invoke(app, ["bench", *base_args, "--configs", "N4,N4B2", "--predictors", "cache", "--samples", "4",
                            "--batch-size", "4", "--repeats", "1", "--out", str(tmp_path / "bench"), "--quiet", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [row["method"] for row in rows] == ["vanilla", "cache"] and rows[0]["frechet"] is None
    assert (tmp_path / "bench" / "pareto.png").exists()


def test_gpu_check_smoke_runs_on_cpu():
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["smoke"] and set(result["ms_per_batch"]) == {"N15", "N32", "N15B7", "N32B12"}
    assert 0 < result["logits_relative_error"]["bf16"] < 0.1
