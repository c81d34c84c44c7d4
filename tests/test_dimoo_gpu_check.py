"""The prepared DiMOO GPU check (benchmarks/dimoo_gpu_check.py): its smoke run through gpu_check.sh
after the MaskGIT check, its bf16 padded-batch phase, and its full-size model built on the meta device."""

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from migm.shortcut_zoo.archs import build_for_base
from migm.trajectories.base.llada import LLaDA

ROOT = Path(__file__).resolve().parents[1]


def load_check():
    spec = importlib.util.spec_from_file_location("dimoo_gpu_check", ROOT / "benchmarks" / "dimoo_gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bare_python(tmp_path: Path) -> dict:
    """Environment for a Python that has torch and the rest but not migm, as on a lent GPU machine (its own
    torch, nothing of ours installed): this interpreter without `site` (so no editable install of migm),
    its site-packages on PYTHONPATH as plain folders."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    paths = sysconfig.get_paths()
    return {"PYTHON": str(wrapper), "PYTHONPATH": os.pathsep.join(dict.fromkeys([paths["purelib"], paths["platlib"]]))}


def test_gpu_check_sh_runs_maskgit_then_dimoo_smoke(tmp_path):
    """Both prepared checks, MaskGIT first, each printing its JSON line, with a Python where migm is not
    installed (the script imports this checkout). Eager only: the compiled rows run the same code through
    `compile_base` / `compile_shortcut`, whose tokens tests/test_compile.py checks (an inductor compile of
    both smoke models takes minutes on two shared cores)."""
    env = bare_python(tmp_path)
    assert subprocess.run([env["PYTHON"], "-c", "import migm"], env=env, capture_output=True).returncode != 0
    r = subprocess.run(
        [
            "bash",
            str(ROOT / "benchmarks" / "gpu_check.sh"),
            "--smoke",
            "--repeats",
            "1",
            "--batch",
            "1",
            "--no-compile",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [x["benchmark"] for x in results] == ["gpu_check", "dimoo_gpu_check"]
    maskgit, dimoo = results
    assert maskgit["smoke"] and maskgit["batches"] == [1]  # the arguments reach both
    assert set(maskgit["rows"]) == {"eager"}  # --no-compile
    rows = maskgit["rows"]["eager"]["1"]
    assert set(rows) == {"N32", "N32B12"} and all(r["runs"] == 1 and r["ms_per_image"] > 0 for r in rows.values())
    assert all(r["tflops"] > 0 and r["mfu"] is None for r in rows.values())  # no known peak on a CPU
    assert set(maskgit["ratios"]) == {"eager batch 1"} and 0.4 < maskgit["ratios"]["eager batch 1"]["ideal"] < 1
    assert maskgit["compiled_vs_eager"] == {} and dimoo["compiled_vs_eager"] == {}  # nothing compiled to compare
    assert set(maskgit["attention"]) == {"base", "shortcut"}
    assert all(set(a) == {"flash", "efficient"} for a in maskgit["attention"].values())
    assert 0 < maskgit["logits_relative_error"]["bf16"] < 0.1
    assert dimoo["smoke"] and dimoo["errors"] == {}
    assert 0 < dimoo["logits_relative_error"]["bf16"] < 0.1
    # fp32 on the CPU: a padded row computes what it computes alone
    assert dimoo["padded"]["feature_relative_error"] < 1e-5
    assert dimoo["padded"]["token_agreement"] == {"N8": 1.0, "N8B4": 1.0}
    assert set(dimoo["latency"]) == {"eager batch 1"}  # --batch 1: batch 1 only; --no-compile: eager only
    rows = dimoo["latency"]["eager batch 1"]["configs"]
    assert set(rows) == {"N64", "N64B11", "N64B14"}
    assert all(r["runs"] == 1 and r["ms_per_image"] > 0 and r["tflops"] > 0 for r in rows.values())
    assert all(set(a) == {"flash", "efficient"} for a in dimoo["attention"].values())
    ideal = {k.split(": ")[1]: v["ideal"] for k, v in dimoo["speedups"].items()}
    assert 1 < ideal["N64 / N64B14"] < ideal["N64 / N64B11"] < 64 / 11
    assert {"1 logits bf16 vs fp32 (2 layers)", "2 padded batch vs alone", "3 latency eager batch 1"} < set(
        dimoo["elapsed_s"]
    )


def test_padded_batch_phase_in_bf16():
    check = load_check()
    sizes = check.SMOKE
    tokenizer = check.WordIds(sizes["text_vocab"])  # the stand-in used without the fixture tokenizer
    base = check.make_base(sizes, check.random_llada(sizes["llada"], "cpu", torch.bfloat16, seed=0), tokenizer, "bf16")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny bf16 ops: threads only add overhead
    try:
        out = check.padded_vs_alone(base, check.random_shortcut(base, seed=0), steps=4)
    finally:
        torch.set_num_threads(threads)
    assert out["feature_relative_error"] < 0.02  # bf16 rounding, not a padding leak
    assert set(out["token_agreement"]) == {"N4", "N4B2"}
    assert all(v >= 0.5 for v in out["token_agreement"].values())


def test_full_size_is_the_released_8b_model():
    check = load_check()
    sizes = check.FULL
    with torch.device("meta"):
        net = LLaDA(sizes["llada"])
    assert 8.0e9 < sum(p.numel() for p in net.parameters()) < 8.2e9
    base = check.make_base(sizes, net, check.WordIds(sizes["text_vocab"]), "bf16")
    assert (base.L, base.V, base.D) == (64 * 64, 8192, 4096)
    assert sizes["special"].image_offset + base.V <= sizes["llada"].vocab_size
    assert max(base._encode_one(check.PROMPTS[0])) < min(v for v in vars(sizes["special"]).values() if v)
    with torch.device("meta"):
        shortcut = build_for_base("dimoo-transformer", base, **check.SHORTCUT)
    assert shortcut.cfg.hidden == 2048 and shortcut.cfg.mlp_hidden == 12288


def test_mfu_uses_the_cards_bf16_dense_peak_and_leaves_unknown_cards_blank():
    from migm.shortcut_zoo.gpu import peak_tflops, utilisation

    names = {
        "NVIDIA H100 80GB HBM3": 989.0,
        "NVIDIA H100 PCIe": 756.0,
        "NVIDIA H200": 989.0,
        "NVIDIA A100-SXM4-80GB": 312.0,
        "NVIDIA L40S": 362.0,
        "NVIDIA L4": 121.0,
        "NVIDIA GeForce RTX 4090": 165.0,
        "NVIDIA GeForce GTX 1080": None,
    }
    assert {name: peak_tflops(name) for name in names} == names
    tflops, mfu = utilisation(237.4e9 * 20, 0.0444, peak_tflops("NVIDIA H100 80GB HBM3"))  # the H100 log's step
    assert round(tflops) == 107 and round(100 * mfu) == 11
    assert utilisation(1e12, 1.0, None) == (1.0, None)


def test_token_agreement_counts_equal_tokens_and_whole_images():
    from migm.shortcut_zoo.gpu import token_agreement

    eager = torch.arange(12).view(3, 4)
    compiled = eager.clone()
    compiled[0, 1] = 99  # one flipped draw in the first image
    assert token_agreement(compiled, eager) == pytest.approx({"tokens": 11 / 12, "images": 2 / 3})
    assert token_agreement(eager, eager) == {"tokens": 1.0, "images": 1.0}
