"""The shipped dimoo-digits base: it loads through the --model dimoo loader, its tokenizer carries
DiMOO's markup, prompts name their digit, `generate --prompt` draws that digit, and score works."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DIMOO_FIXTURE
from helpers import ok
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from migm.cli.main import app
from migm.shortcut_zoo.score import score
from migm.trajectories.base import BaseSpec, load_base
from migm.trajectories.base.digits import decode_digits, load_classifier
from migm.trajectories.base.dimoo_digits import (
    DIGIT_WORDS,
    HELD_OUT_PHRASINGS,
    PHRASINGS,
    TRAIN_PHRASINGS,
    WEIGHTS,
    label_of,
    phrase,
    prompts_of,
)
from migm.trajectories.base.dimoo_layout import UNCONDITION
from migm.trajectories.base.dimoo_loading import load_dimoo, load_tokenizer
from migm.trajectories.base.registry import names
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import cycled_conditions
from migm.trajectories.rollout import SamplerConfig

runner = CliRunner()
FIXTURE_TOKENIZER = DIMOO_FIXTURE / "checkpoint"


@pytest.fixture(scope="module")
def base():
    return load_base(BaseSpec(name="dimoo-digits", device="cpu"))


def test_the_shipped_folder_has_the_released_layout_without_a_vq_model():
    names = {p.name for p in WEIGHTS.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens.json"}
    assert expected <= names and "meta.json" in names and "vqvae" not in names
    keys = load_file(str(WEIGHTS / "model.safetensors")).keys()
    assert all(k.startswith("model.transformer.") for k in keys)  # the released key prefix


def test_loads_through_the_dimoo_loader(base):
    direct = load_dimoo(str(WEIGHTS), decoder=decode_digits, grid=(8, 8), name="dimoo-digits")
    assert base.name == "dimoo-digits" and base.fingerprint == direct.fingerprint and base.text
    assert (base.L, base.V, base.mask_id, base.num_classes, base.grid) == (64, 17, 17, 0, (8, 8))
    assert base.sampler_defaults["rule"] == "dimoo" and base.sampler_defaults["steps"] == 16
    cond = base.encode_prompts(["a handwritten seven", "the digit 3"])
    tokens = torch.randint(0, 18, (2, 64))
    for a, b in zip(base.forward(tokens, cond), direct.forward(tokens, cond)):
        assert torch.equal(a, b)
    # the name is part of the fingerprint: the same folder loaded as plain "dimoo" is another base
    assert load_dimoo(str(WEIGHTS), decoder=decode_digits, grid=(8, 8)).fingerprint != base.fingerprint
    assert "dimoo-digits" in names() and base.scorer is not None


def test_fingerprint_differs_from_random_weights_of_the_same_shape(base, tmp_path):
    folder = tmp_path / "random"
    shutil.copytree(WEIGHTS, folder)
    g = torch.Generator().manual_seed(0)
    state = {
        k: 0.02 * torch.randn(v.shape, generator=g) for k, v in load_file(str(WEIGHTS / "model.safetensors")).items()
    }
    save_file(state, str(folder / "model.safetensors"))
    other = load_dimoo(str(folder), decoder=decode_digits, grid=(8, 8), name="dimoo-digits")
    assert other.fingerprint != base.fingerprint


def test_without_vq_model_or_decoder_is_a_one_line_error(tmp_path):
    with pytest.raises(MigmError, match="vqvae/"):
        load_dimoo(str(WEIGHTS), grid=(8, 8))  # no decoder: the folder needs a VQ model
    folder = tmp_path / "nocodes"
    shutil.copytree(WEIGHTS, folder)
    special = json.loads((folder / "special_tokens.json").read_text())
    del special["codes"]
    (folder / "special_tokens.json").write_text(json.dumps(special))
    with pytest.raises(MigmError, match="must give codes"):
        load_dimoo(str(folder), decoder=decode_digits, grid=(8, 8))
    with pytest.raises(MigmError, match="--height not used by --model dimoo-digits"):
        load_base(BaseSpec(name="dimoo-digits", height=128, device="cpu"))


def test_tokenizer_round_trips_the_markup(base):
    tok = load_tokenizer(WEIGHTS)
    markup = ["<system>", "</system>", "<user>", "</user>", UNCONDITION]
    ids = [tok.convert_tokens_to_ids(m) for m in markup]
    assert len(set(ids)) == 5 and tok.unk_token_id not in ids
    assert base.special.uncondition == tok.convert_tokens_to_ids(UNCONDITION)
    (row,) = base.encode_prompts(["A Handwritten SEVEN"]).tolist()
    assert tok.decode(row) == (
        "<system> generate an image according to the text prompt . </system> <user> a handwritten seven </user>"
    )
    assert tok.unk_token_id not in row and row[0] == ids[0] and row[-1] == ids[3]
    assert base.null_cond(1)[0].tolist() == [*row[:-5], ids[2], ids[4], ids[3]]  # <user><uncondition></user>
    for prompt in prompts_of():  # every phrasing, held-out ones too, is in the vocabulary
        assert tok.unk_token_id not in base.encode_prompts([prompt])[0].tolist()
    # the markup ids the tokenizer does not give come right after it, then the 17 grey levels
    s = base.special
    assert sorted([s.boa, s.eoa, s.boi, s.eoi, s.newline, s.mask]) == list(range(len(tok), len(tok) + 6))
    assert s.image_offset == len(tok) + 6 and s.image_offset + base.V == base.net.cfg.vocab_size


def test_tokenizer_config_is_written_like_the_published_one():
    ours = json.loads((WEIGHTS / "tokenizer_config.json").read_text())
    published = json.loads((FIXTURE_TOKENIZER / "tokenizer_config.json").read_text())
    assert ours == published
    ours, published = (json.loads((f / "tokenizer.json").read_text()) for f in (WEIGHTS, FIXTURE_TOKENIZER))
    for key in ("normalizer", "pre_tokenizer", "post_processor"):
        assert ours[key] == published[key]
    assert ours["model"]["type"] == "WordLevel" and ours["model"]["unk_token"] == "[UNK]"


def test_label_of_reads_the_digit_a_prompt_names():
    for p in PHRASINGS:
        for d in range(10):
            assert label_of(phrase(p, d)) == d
    assert label_of("A HANDWRITTEN Seven") == 7 and label_of("the digit 7, handwritten") == 7
    assert label_of("seven, 7") == 7  # one digit named twice
    for prompt in ("a cat", "the digit 10", "a 3 and a 4", "three or seven", ""):
        assert label_of(prompt) == -1
    assert set(TRAIN_PHRASINGS).isdisjoint(HELD_OUT_PHRASINGS) and len(DIGIT_WORDS) == 10


def test_spread_labels_samples_by_the_named_digit(base):
    labels, cond = cycled_conditions(base, 25)  # no prompts: the base's default prompts, digits first
    assert labels.tolist() == [i % 10 for i in range(25)]
    assert torch.equal(cond[3, : (cond[3] >= 0).sum()], base.encode_prompts([base.default_prompts[3]])[0])
    labels, _ = cycled_conditions(base, 4, ["the digit 2", "number nine"])
    assert labels.tolist() == [2, 9, 2, 9]
    with pytest.raises(MigmError, match="names no class"):
        cycled_conditions(base, 4, ["a cat"])


def read_grid(path: Path, count: int) -> torch.Tensor:
    """The grey levels of the `count` 8x8 digits of a one-row PNG grid (4x upscale, 1 px gaps)."""
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    cells = [img[4 : 4 + 32 : 4, 4 + 36 * i : 4 + 36 * i + 32 : 4] for i in range(count)]
    return torch.tensor(np.round((1 - np.stack(cells) / 255) * 16)).long().view(count, 64)


def test_generate_prompt_draws_the_named_digit(tmp_path):
    out = tmp_path / "sevens.png"
    args = ["generate", "--model", "dimoo-digits", "--prompt", "a handwritten seven", "--per-class", "8"]
    r = runner.invoke(app, [*args, "--seed", "0", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sevens.txt").read_text() == "row 1: a handwritten seven\n"
    tokens = read_grid(out, 8)
    predicted = load_classifier()(tokens).argmax(-1)
    assert int((predicted == 7).sum()) >= 6, predicted.tolist()  # chance is 1 in 10


def test_score_reports_accuracy_and_frechet(base):
    config = SamplerConfig.for_base(base, 16)
    result = score(base, 40, config, seed=0)
    assert result["model"] == "dimoo-digits" and result["samples"] == 40
    assert result["accuracy"] >= 0.5 and result["frechet"] >= 0  # chance is 0.1
    r = runner.invoke(app, ["score", "--model", "dimoo-digits", "--samples", "20", "--steps", "8", "--json"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(r.stdout)
    assert metrics["samples"] == 20 and metrics["sampler"]["rule"] == "dimoo" and 0 <= metrics["accuracy"] <= 1


def test_cli_text_path_end_to_end(tmp_path):
    """dump --prompts -> verify -> inspect -> train dimoo-transformer -> sample --shortcut -> bench (shortcut,
    cache, taylor, ml-cache, accuracy scored by the named digit) -> push --dry-run, all on the shipped base."""

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a handwritten seven\nthe digit 3\nnumber one\n")
    data, zoo, model = tmp_path / "ds", tmp_path / "zoo" / "dd", ["--model", "dimoo-digits"]
    ok(["dump-trajectories", *model, "--prompts", str(prompts), "--num-samples", "6", "--steps", "6", "--out",
        str(data), "-q"])  # fmt: skip
    manifest = json.loads((data / "dataset.json").read_text())
    assert manifest["text"]["prompts"] == ["a handwritten seven", "the digit 3", "number one"]
    ok(["verify", str(data)])
    info = json.loads(ok(["inspect", str(data), "--plot", str(tmp_path / "smooth.png"), "--json"]))
    assert len(info["smoothness"]) == 5 and all(0 < c <= 1 for c in info["smoothness"])
    ok(["train", "--data", str(data), *model, "--arch", "dimoo-transformer", "--steps", "10", "--batch-size", "8",
        "--out", str(zoo), "-q"])  # fmt: skip
    out = ok(["sample", *model, "--shortcut", str(zoo), "--prompt", "number one", "--per-class", "2", "--steps", "6",
              "--budget", "3", "--out", str(tmp_path / "s.png"), "--json", "-q"])  # fmt: skip
    assert len(json.loads(out)["full_steps"]) == 3
    ok(["bench", *model, "--shortcut", str(zoo), "--prompts", str(prompts), "--configs", "N6,N6B3", "--predictors",
        "shortcut,cache,taylor,ml-cache", "--samples", "6", "--repeats", "1", "--out", str(tmp_path / "bench"), "-q"])  # fmt: skip
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"vanilla", "shortcut:dd", "cache", "taylor", "ml-cache"}
    assert all(0 <= r["accuracy"] <= 1 for r in rows)  # the shipped classifier scores every row
    out = ok(["push", str(data), "--repo-id", "me/dimoo-digits-n6", "--dry-run"])
    assert "dataset.json" in out and "dimoo-digits" in out
