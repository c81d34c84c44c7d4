"""`--model amused --checkpoint DIR` through every command on a tiny random diffusers folder, and the
one-line errors of bad aMUSEd input."""

import json
import shutil

import pytest
from amused_folder import write_amused
from helpers import ok, refused
from test_image_metrics import clip_dir  # noqa: F401  (a tiny random CLIP folder)
from typer.testing import CliRunner

from migm.trajectories.schedule import full_steps

runner = CliRunner()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_amused(tmp_path_factory.mktemp("amused") / "amused-tiny")


def test_generate_dump_verify_train_sample_bench(folder, tmp_path):
    args = ["--model", "amused", "--checkpoint", str(folder)]
    prompts = ["--prompt", "the red cat", "--prompt", "a dog"]
    ok(["generate", *args, *prompts, "--per-class", "2", "--steps", "8", "--out", str(tmp_path / "g.png"), "-q"])
    assert (tmp_path / "g.txt").read_text() == "row 1: the red cat\nrow 2: a dog\n"
    ds = tmp_path / "ds"
    ok(["dump-trajectories", *args, *prompts, "--num-samples", "8", "--steps", "8", "--batch-size", "4",
        "--shard-size", "4", "--out", str(ds), "-q"])  # fmt: skip
    manifest = json.loads((ds / "dataset.json").read_text())
    assert manifest["sampler"]["rule"] == "amused" and manifest["text"]["image_offset"] is None
    assert manifest["dims"]["C"] == 0 and manifest["branches"] == 2
    ok(["verify", str(ds)])
    zoo = tmp_path / "zoo" / "tt"
    ok(["train", "--data", str(ds), *args, "--steps", "20", "--batch-size", "16", "--out", str(zoo), "-q"])
    out = ok(["sample", *args, "--shortcut", str(zoo), "--prompt", "a red dog", "--per-class", "2", "--steps", "8",
              "--budget", "3", "--out", str(tmp_path / "s.png"), "--json", "-q"])  # fmt: skip
    assert json.loads(out)["full_steps"] == full_steps(8, 3)
    assert (tmp_path / "s.png").stat().st_size > 0
    ok(["bench", *args, "--shortcut", str(zoo), *prompts, "--configs", "N8,N8B4", "--samples", "4",
        "--repeats", "1", "--batch-size", "4", "--out", str(tmp_path / "bench"), "-q", "--json"])  # fmt: skip
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"vanilla", "shortcut:tt", "cache", "taylor"}


def test_bad_amused_input_is_one_line(folder, tmp_path):
    out = str(tmp_path / "g.png")
    gen = ["generate", "--model", "amused", "--prompt", "a cat", "--out", out]
    for part in ("transformer", "vqvae"):
        broken = tmp_path / f"no-{part}"
        shutil.copytree(folder, broken)
        shutil.rmtree(broken / part)
        assert f"missing {part}/" in refused([*gen, "--checkpoint", str(broken)])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "model.pth").write_bytes(b"not a diffusers folder")
    assert "not an aMUSEd diffusers folder" in refused([*gen, "--checkpoint", str(plain)])
    assert "--checkpoint" in refused(gen)
    args = ["generate", "--model", "amused", "--checkpoint", str(folder), "--out", out]
    assert "not --classes" in refused([*args, "--classes", "0-3"])
    assert "multiple of 2" in refused([*args, "--prompt", "a cat", "--height", "7"])


def test_score_reports_the_clip_score_of_amused_samples(folder, clip_dir, tmp_path):  # noqa: F811 (the fixture)
    (tmp_path / "p.txt").write_text("the red cat\na dog\n")
    args = ["score", "--model", "amused", "--checkpoint", str(folder), "--prompts", str(tmp_path / "p.txt")]
    result = json.loads(ok([*args, "--samples", "2", "--steps", "4", "--clip", str(clip_dir), "--json", "-q"]))
    assert 0 <= result["clip_score"] <= 100 and "accuracy" not in result
    assert "no classifier scorer" in refused(args)  # no scorer ships for aMUSEd: FID or CLIP must be asked for
