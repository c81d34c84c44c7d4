"""FID, Inception Score and CLIP score (shortcut_zoo/image_metrics.py) on random-weight networks of the real
classes saved to local files: torch-fidelity's Inception-v3 in its weight format, and a tiny transformers
CLIP saved with save_pretrained. A real Inception forward at 299 px is ~6 GFLOP per image, so most tests
resize to 75 px (Inception-v3's smallest input) through the class's INPUT_IMAGE_SIZE; one test runs the
published 299 px path against torchmetrics' own FID. FIDs use 64-d features (--fid-dims 64): torchmetrics'
FID on 2048-d ones takes an eigendecomposition of a 2048 x 2048 product, tens of seconds on 2 cores."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from helpers import one_line_error
from PIL import Image
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.image_metrics import (
    FEATURES,
    FeatureStats,
    feature_stats,
    fid,
    fidelity,
    inception_outputs,
    inception_score,
    load_clip,
    load_inception,
    to_uint8,
    weights_only_loads,
)
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import cycled_conditions, cycled_prompts, sample_many
from migm.trajectories.rollout import SamplerConfig

runner = CliRunner()


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A random-weight torch-fidelity Inception-v3 state dict, saved as its weights file is (torch.save)."""
    root = tmp_path_factory.mktemp("inception")
    Inception = fidelity().FeatureExtractorInceptionV3

    class Fresh(Inception):  # the library's constructor loads a weights file: keep the random init instead
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    torch.save({}, root / "empty.pth")
    torch.manual_seed(0)
    with weights_only_loads():
        net = Fresh("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(root / "empty.pth"))
    with torch.no_grad():
        for m in net.modules():  # variance-preserving init, so features differ between images
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = root / "weights-inception-random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def small(monkeypatch):
    """Inception input resized to 75 px instead of 299 (16x fewer FLOPs); the network is unchanged."""
    monkeypatch.setattr(fidelity().FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)


def images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


def perturbed(x: torch.Tensor, amount: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x.int() + torch.randint(-amount, amount + 1, x.shape, generator=g)).clamp(0, 255).to(torch.uint8)


def test_fid_at_299_px_equals_torchmetrics_own(inception_file):
    """Our path (one torch-fidelity Inception pass, statistics, torchmetrics' FID) gives torchmetrics'
    FrechetInceptionDistance on the same weights with torch-fidelity's resize (antialias=False)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = images(2, 0), images(2, 1)
    net = load_inception(str(inception_file), dims=64)
    ours = fid(feature_stats(inception_outputs(net, a)[0]), feature_stats(inception_outputs(net, b)[0]))
    with weights_only_loads():
        theirs = FrechetInceptionDistance(
            feature=64, feature_extractor_weights_path=str(inception_file), antialias=False
        )
    theirs.update(a, real=True)
    theirs.update(b, real=False)
    assert ours > 0 and ours == pytest.approx(float(theirs.compute()), rel=1e-5)


def test_fid_is_zero_against_itself_and_grows_with_perturbation(inception_file, small):
    from torchmetrics.image.fid import NoTrainInceptionV3

    a = images(3, 0)
    assert inception_outputs(load_inception(str(inception_file)), a)[0].shape == (3, FEATURES)  # the published layer
    net = load_inception(str(inception_file), dims=64)
    features, logits = inception_outputs(net, a)
    stats = feature_stats(features)
    near = fid(stats, feature_stats(inception_outputs(net, perturbed(a, 20, 1))[0]))
    far = fid(stats, feature_stats(inception_outputs(net, perturbed(a, 120, 2))[0]))
    assert abs(fid(stats, stats)) < 1e-6 * (1 + np.trace(stats.sigma))
    assert 0 < near < far
    # the IS logits of the same pass are torchmetrics' own (its Inception for IS, with torch-fidelity's resize)
    with weights_only_loads():
        theirs = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], str(inception_file), antialias=False)
    assert torch.allclose(logits, theirs(a), rtol=1e-5, atol=1e-5)


def test_inception_score_is_the_published_definition():
    """exp(E_x KL(p(y|x) || p(y))) per split of a seeded shuffle, mean and std over 10 splits."""
    logits = 3 * torch.randn(40, 1008, generator=torch.Generator().manual_seed(0))
    mean, std = inception_score(logits, seed=5)
    torch.manual_seed(5)
    p = logits[torch.randperm(40)].double().softmax(1).numpy()
    scores = [np.exp((s * (np.log(s) - np.log(s.mean(0, keepdims=True)))).sum(1).mean()) for s in np.split(p, 10)]
    assert mean > 1.5 and (mean, std) == pytest.approx((np.mean(scores), np.std(scores, ddof=1)), rel=1e-5)
    assert inception_score(logits, seed=5) == (mean, std)  # seeded: the same split shuffle every time


def test_stats_file_round_trips_and_bad_files_are_refused(tmp_path):
    g = np.random.default_rng(0)
    x = g.normal(size=(5, 64))
    stats = FeatureStats(x.mean(0), np.cov(x, rowvar=False), 5)
    path = stats.save(tmp_path / "ref.npz")
    back = FeatureStats.load(path, dims=64)
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma) and back.n == 5
    with np.load(path) as data:  # the common format: mu and sigma by name
        assert set(data.files) >= {"mu", "sigma"}
    assert not [p.name for p in tmp_path.iterdir() if p.name != "ref.npz"]  # no temporary left
    other = FeatureStats(x[:3].mean(0), np.cov(x[:3], rowvar=False), 3)
    assert fid(back, other) == pytest.approx(fid(stats, other), rel=1e-12)

    np.savez(tmp_path / "no-sigma.npz", mu=stats.mu)
    np.savez(tmp_path / "objects.npz", mu=np.array([{"a": 1}], dtype=object), sigma=stats.sigma)
    for name, match in [("no-sigma.npz", "need arrays"), ("ref.npz", "2048-d"), ("objects.npz", "cannot read")]:
        with pytest.raises(MigmError, match=match):
            FeatureStats.load(tmp_path / name)  # the published 2048-d statistics by default


def test_to_uint8_is_the_png_writers_mapping(tmp_path):
    from migm.trajectories.generate import save_grid

    x = torch.rand(1, 3, 5, 7)
    x[0, 0, 0, :3] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255])  # halves round as the writer's do
    save_grid(x, rows=1, path=tmp_path / "g.png", scale=1, pad=0)
    written = torch.from_numpy(np.array(Image.open(tmp_path / "g.png"))).permute(2, 0, 1)
    assert torch.equal(to_uint8(x)[0], written)


def write_grid_tiles(grid_png, rows: int, out_dir, H: int = 8, pad: int = 1, scale: int = 4):
    """The tiles of a one-column `migm generate` grid, back at their own size, as PNG files."""
    canvas = np.asarray(Image.open(grid_png))
    out_dir.mkdir()
    for r in range(rows):
        y = (pad + r * (H + pad)) * scale
        tile = canvas[y : y + H * scale : scale, pad * scale : (pad + H) * scale : scale]
        Image.fromarray(tile).save(out_dir / f"{r}.png")
    return out_dir


def test_score_sees_the_images_generate_writes_and_folder_equals_npz(inception_file, small, tmp_path):
    """`migm generate` and `migm score` draw the same 3 samples (classes 0-2, seed 0): their FID is ~0
    against the written images, whether --fid-ref is the folder or its `migm fid-stats` file."""
    r = runner.invoke(app, ["generate", "--classes", "0-2", "--per-class", "1", "--out", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    folder = write_grid_tiles(tmp_path / "g.png", 3, tmp_path / "ref")
    weights = ["--inception-weights", str(inception_file), "--fid-dims", "64"]
    r = runner.invoke(app, ["fid-stats", str(folder), "--out", str(tmp_path / "ref.npz"), *weights, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["images"] == 3 and FeatureStats.load(tmp_path / "ref.npz", dims=64).n == 3
    results = {}
    for ref in (str(folder), str(tmp_path / "ref.npz")):
        r = runner.invoke(app, ["score", "--samples", "3", "--fid-ref", ref, *weights, "--json", "--quiet"])
        assert r.exit_code == 0, r.output
        results[ref] = json.loads(r.output)
    by_folder, by_npz = results.values()
    assert {"accuracy", "frechet"} <= set(by_folder)  # the digits base keeps its classifier metrics
    assert abs(by_folder["fid"]) < 1e-3 and by_folder["inception_score"] > 0
    assert by_npz["fid"] == pytest.approx(by_folder["fid"], abs=1e-9)
    other = ["score", "--samples", "3", "--seed", "1", "--fid-ref", str(tmp_path / "ref.npz"), *weights, "--json"]
    r = runner.invoke(app, other)  # other samples: a distance away from the written ones
    assert r.exit_code == 0 and json.loads(r.output)["fid"] > 100 * abs(by_folder["fid"]) + 1e-6


def test_bench_adds_fid_and_is_columns(inception_file, small, tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 64))
    FeatureStats(x.mean(0), np.cov(x, rowvar=False), 4).save(tmp_path / "ref.npz")
    args = ["--configs", "N4,N4B2", "--predictors", "cache", "--samples", "3", "--repeats", "1"]
    r = runner.invoke(
        app,
        ["bench", *args, "--fid-ref", str(tmp_path / "ref.npz"), "--fid-dims", "64"]
        + ["--inception-weights", str(inception_file)]
        + ["--out", str(tmp_path / "b"), "--quiet"],
    )
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "b" / "results.json").read_text())
    vanilla, cache = result["rows"]
    assert vanilla["fid"] > 0 and vanilla["fid_spread"] >= 0 and cache["fid"] > 0 and cache["inception_score"] > 0
    assert vanilla["accuracy"] is not None and result["image_metrics"]["fid_ref"].endswith("ref.npz")
    table = (tmp_path / "b" / "results.md").read_text()
    assert "| FID | IS |" in table and f"{vanilla['fid']:.2f} ± {vanilla['fid_spread']:.2f}" in table
    assert (tmp_path / "b" / "pareto.png").stat().st_size > 0


class _System:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_weights_are_loaded_weights_only_and_bad_ones_are_one_line_errors(inception_file, tmp_path):
    sneaky, created = tmp_path / "sneaky.pth", tmp_path / "created-by-unpickling"
    state = torch.load(inception_file, weights_only=True)
    torch.save(dict(state) | {"hook": _System(created)}, sneaky)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, wrong)
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(images(1, i)[0].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    cases = [
        (str(sneaky), "refused by the weights-only loader"),
        (str(wrong), "not torch-fidelity's Inception-v3 weights"),
        (str(tmp_path / "missing.pth"), "does not exist"),
    ]
    for weights, message in cases:
        r = runner.invoke(
            app, ["fid-stats", str(folder), "--out", str(tmp_path / "s.npz"), "--inception-weights", weights]
        )
        one_line_error(r, message)
    assert not created.exists() and not (tmp_path / "s.npz").exists()
    # torch-fidelity's own loader (weights_only=False in its code) is made weights-only too
    with weights_only_loads(), pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        fidelity().FeatureExtractorInceptionV3("x", ["2048"], feature_extractor_weights_path=str(sneaky))
    assert not created.exists()


def test_missing_weights_offline_is_a_one_line_error(tmp_path, monkeypatch):
    """No --inception-weights, nothing in torch.hub's folder, and no network (a proxy that refuses)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    folder = tmp_path / "ref"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(images(1, i)[0].permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    r = runner.invoke(app, ["score", "--samples", "2", "--fid-ref", str(folder), "--quiet"])
    one_line_error(r, "cannot download torch-fidelity's Inception-v3 weights")
    assert "--inception-weights" in r.output and str(tmp_path / "torch-home") in r.output
    assert not list((tmp_path / "torch-home").rglob("*.pth*"))  # no partial download left


def test_option_mistakes_are_one_line_errors(inception_file, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 64))
    FeatureStats(x.mean(0), np.cov(x, rowvar=False), 3).save(tmp_path / "ref64.npz")
    cases = [
        ["score", "--fid-dims", "64"],  # no reference
        ["score", "--fid-ref", str(tmp_path / "ref64.npz"), "--fid-dims", "100"],
        ["score", "--fid-ref", str(tmp_path / "ref64.npz"), "--inception-weights", str(inception_file)],  # 2048-d
        ["score", "--inception-weights", str(inception_file)],  # weights without a reference
        ["score", "--fid-ref", str(tmp_path / "nothing")],
        ["score", "--fid-ref", str(tmp_path / "missing.npz")],
        ["score", "--clip", str(tmp_path)],  # a class-conditional base has no prompts
        ["fid-stats", str(tmp_path / "no-images"), "--out", str(tmp_path / "s.npz")],
        ["fid-stats", str(tmp_path), "--out", str(tmp_path / "s.txt")],
    ]
    for args in cases:
        r = runner.invoke(app, args)
        one_line_error(r)


# --- CLIP score ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random CLIP (transformers CLIPConfig) with a byte-level BPE tokenizer over printable ASCII
    and CLIP's image processor, saved with save_pretrained as a real CLIP folder is."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor

    folder = tmp_path_factory.mktemp("clip")
    chars = [chr(i) for i in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]}
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2)
        | dict(num_attention_heads=2, max_position_embeddings=77, pad_token_id=vocab["<|endoftext|>"], **special),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        | dict(image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = ImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dimoo_digits():
    return load_base(BaseSpec(name="dimoo-digits", device="cpu"))


def direct_clip_score(folder, images: torch.Tensor, prompts: list[str]) -> float:
    """CLIP score straight from transformers' CLIPModel forward: max(mean 100·cos(image, text), 0)."""
    from transformers import CLIPModel

    model, processor = CLIPModel.from_pretrained(folder), load_clip(folder)[1]
    inputs = processor(text=prompts, images=list(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    return max(100 * cos.mean().item(), 0.0)


def test_clip_score_of_a_text_base_equals_transformers_clip(clip_dir, dimoo_digits, tmp_path):
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("a handwritten seven\nthe digit 3\n")
    r = runner.invoke(
        app,
        ["score", "--model", "dimoo-digits", "--prompts", str(prompt_file), "--samples", "4", "--steps", "4"]
        + ["--clip", str(clip_dir), "--json", "--quiet"],
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert {"accuracy", "frechet", "clip_score"} <= set(result) and "fid" not in result
    # the same samples, drawn and decoded here, scored by transformers directly
    prompts = ["a handwritten seven", "the digit 3"]
    labels, cond = cycled_conditions(dimoo_digits, 4, prompts)
    tokens = sample_many(dimoo_digits, labels, SamplerConfig.for_base(dimoo_digits, 4), 0, cond=cond).tokens
    texts = cycled_prompts(dimoo_digits, 4, prompts)
    expected = direct_clip_score(clip_dir, to_uint8(dimoo_digits.decode(tokens)), texts)
    assert result["clip_score"] == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_bench_adds_a_clip_column_for_a_text_base(clip_dir, tmp_path):
    r = runner.invoke(
        app,
        ["bench", "--model", "dimoo-digits", "--prompt", "the digit 5", "--prompt", "a handwritten two"]
        + ["--configs", "N4,N4B2", "--predictors", "cache", "--samples", "2", "--repeats", "1"]
        + ["--clip", str(clip_dir), "--out", str(tmp_path / "b"), "--quiet", "--json"],
    )
    assert r.exit_code == 0, r.output
    vanilla, cache = json.loads(r.output)["rows"]
    assert 0 <= cache["clip_score"] <= 100 and vanilla["clip_score_spread"] >= 0 and "fid" not in vanilla
    assert "| CLIP score |" in (tmp_path / "b" / "results.md").read_text()


def test_clip_folder_mistakes_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "missing"):
        r = runner.invoke(app, ["score", "--model", "dimoo-digits", "--samples", "2", "--clip", str(folder)])
        one_line_error(r, "--clip")
