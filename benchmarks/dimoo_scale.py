"""Lumina-DiMOO at the released dims: (b) bytes per trajectory per codec, (c) counted-FLOPs ideal latency of N64B11.

    python benchmarks/dimoo_scale.py [--steps 3] [--probe-steps 21,42,63] [--parts b,c]
                                     [--json benchmarks/results/dimoo-scale.json]

Both parts use the released DiMOO widths as `benchmarks/dimoo_memory.py` assumes them (LLaDA-8B: d_model
4096, 32 heads, 32 KV heads, MLP 12288, vocabulary 134656; 32 layers), 1024 x 1024 pixels (a 64 x 64 grid,
L = 4096 cells), N = 64, the published DiMOO rule with CFG (s = 4, both branches), 8192 image codes (the
released VQ codebook), and the published example prompt below. The tokenizer is a word-level one built
over that prompt (the released LLaDA tokenizer is not available offline): one id per word or punctuation
mark, so the prompt is a little shorter in tokens than with the real BPE tokenizer (about 1.3 tokens a
word for English text); the sequence is ~4,250 positions either way, so the difference is ~1 %.

(b) Writes a released-layout folder with ONE block and random bf16 weights (the writer of
`dimoo_memory.py`; its VQ folder is a random diffusers VQModel with 8192 codes, never decoded), loads it
with `load_dimoo` in fp32 on the CPU (bf16 matmuls have no fast path on a CPU without AVX-512), and runs
THE rollout for the first `--steps` of the N = 64 steps (the recorder stops it), recording each step's
features as a dump does (`StepRecorder`: float16, rows cond then uncond, padded to the longer row).
The first steps see an almost fully masked image (most positions get the same input embedding) and
compress far better than later ones, and the rollout cannot be resumed from a chosen state, so
`--probe-steps` adds one forward each at a synthetic later state: the cells the schedule has committed
before that step hold random codes at random cells (a random-weight model samples near-uniform codes
anyway). Every state's features go through the project's writers (`ZarrShardWriter`,
`ParquetShardWriter`, zstd level 3) with every codec `parse_codec` accepts, one 1-row 1-step shard per
branch; the bytes on disk of the feature arrays / columns are the bytes of that step of that row (the
few KB of tokens, order, cells and prompt ids a row also holds are left out). A whole N = 64 row is the
sum over its 64 steps, interpolated linearly between the measured steps; the sample is both rows.
Checked (lossless): a 2-row shard of the recorded steps, as a dump writes it, has the bytes of its 1-step
shards.
"lossless (bf16 features)" rounds the features to bf16 before the float16 cast: what a bf16 base (the
default on a GPU) hands the recorder.

(c) FlopCounterMode (`shortcut_zoo.cost.count_flops`) of: one base forward per branch (all 32 layers
+ the head), the head alone (image-code logits at the 4096 cells), and one call of the released shortcut
(`dimoo-transformer`, bottleneck 2, 1 block, built for the base; 219,797,204 parameters) per branch with
K new tokens (cond: every prompt id + L/N cells; uncond: L/N cells; also each shortcut step's own K).
    ideal(N, B) = B * t_full + (N - B) * (t_shortcut + t_head),  t = counted FLOPs of both branches
Counted on fake tensors (FakeTensorMode: no storage is allocated), with the math attention kernel, so the
attention matmuls are counted: the meta device cannot run these modules (RMSNorm and RoPE open
`torch.autocast(x.device.type)`, which has no "meta" type), and FlopCounterMode does not see the CPU's
fused attention kernel. Checks printed under the table: fake and real CPU counts agree on a tiny model,
and the count is linear in layers (1 layer + 31 x (2 layers - 1 layer) = the counted 32 layers).
The sampling itself (log-softmax, inverse-CDF draw, top-k over L x V values, the CFG combine) is
elementwise work FlopCounterMode does not count; it is estimated at 23 operations per logit (negligible).

Prints Markdown tables and writes the JSON (`--json`). Most of the time is the 6 two-row base forwards at
~4,240 positions (2.4 TFLOP a row) and the ~200 shard writes: 19.5 minutes on the 2-core development
machine while other jobs kept its load average at ~5 (10.9 CPU-minutes; forwards 2.3-2.5 minutes each,
writes 3.4 minutes, part c 40 s); an idle machine takes about half. Needs ~10 GB of memory and ~3 GB of
temporary disk (`--tmp`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from dimoo_memory import FIXTURE, RELEASED, write_checkpoint
from torch.nn.attention import SDPBackend, sdpa_kernel

from migm.shortcut_zoo.archs import build, build_for_base
from migm.shortcut_zoo.bench import cpu_name
from migm.shortcut_zoo.cost import count_flops
from migm.trajectories.base.dimoo import DiMOO
from migm.trajectories.base.dimoo_layout import SYSTEM_PROMPT, UNCONDITION, SpecialTokens, prompt_text, sequence_ids
from migm.trajectories.base.dimoo_loading import load_dimoo, load_tokenizer
from migm.trajectories.base.llada import LLaDA, LLaDAConfig
from migm.trajectories.dump import WRITERS, DumpConfig, StepRecorder, sample_major, text_fields, text_layout
from migm.trajectories.rollout import SamplerConfig, autocast, rollout, sample_seeds, stack_cond
from migm.trajectories.schedule import dimoo_schedule, full_steps
from migm.trajectories.store.codecs import Codec, parse_codec
from migm.trajectories.store.schema import Dims, path_size

# The example prompt of the published README (inference/inference_t2i.py), 58 words.
PROMPT = (
    "A striking photograph of a glass of orange juice on a wooden kitchen table, capturing a playful moment. "
    'The orange juice splashes out of the glass and forms the word "Smile" in a whimsical, swirling script '
    "just above the glass. The background is softly blurred, revealing a cozy, homely kitchen with warm "
    "lighting and a sense of comfort."
)
N = 64
SIZE = 1024  # pixels: a 64 x 64 grid
CODES = 8192  # image codes of the released VQ
LAYERS = 32  # LLaDA-8B
SHORTCUT = {"bottleneck": 2, "blocks": 1}  # the released DiMOO shortcut
PUBLISHED_SHORTCUT_PARAMETERS = 219.8e6
BUDGET = 11
# (label, codec, features): float16 as recorded, or rounded to bf16 first (what a bf16 base hands the recorder)
VARIANTS = [("lossless", "lossless", "float16"), ("lossless (bf16 features)", "lossless", "bf16")]
VARIANTS += [(f"quant:bits={b}", f"quant:bits={b}", "float16") for b in range(8, 1, -1)]  # every bits parse_codec takes
BRANCHES = ("cond", "uncond")
SAMPLING_OPS_PER_LOGIT = 20  # log-softmax, exp, cumsum, compare, gather, Gumbel, top-k: an upper-end guess


class Stop(Exception):
    """Raised by the recorder to end the rollout after the recorded steps."""


# ---- the folder: released widths, one block, a tokenizer for the prompt, 8192 codes -------------------


def write_tokenizer(folder: Path) -> None:
    """A word-level tokenizer covering the prompt and the markup (one id per word or punctuation mark)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    pre = pre_tokenizers.Whitespace()
    words = sorted({w for text in (SYSTEM_PROMPT, PROMPT) for w, _ in pre.pre_tokenize_str(text)})
    tok = Tokenizer(models.WordLevel({"[UNK]": 0} | {w: i + 1 for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(["<system>", "</system>", "<user>", "</user>", UNCONDITION])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    shutil.copyfile(FIXTURE / "tokenizer_config.json", folder / "tokenizer_config.json")


def write_vqvae(folder: Path) -> None:
    """The fixture's tiny VQ architecture with the released 8192 codes (random weights, never decoded)."""
    from diffusers import VQModel

    cfg = json.loads((FIXTURE / "vqvae" / "config.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")} | {"num_vq_embeddings": CODES}
    VQModel(**cfg).save_pretrained(str(folder / "vqvae"), safe_serialization=True)


# ---- (c) counted FLOPs ------------------------------------------------------------------------------
# Counted on fake tensors (FakeTensorMode: shapes and devices, no storage), with the math attention kernel:
# the meta device cannot run the base (RMSNorm and RoPE open `torch.autocast(x.device.type)`, and autocast
# has no "meta" type), and FlopCounterMode does not see the CPU's fused attention kernel.


def counting():
    """The context every count runs in: the math attention kernel (its matmuls are what is counted)."""
    return sdpa_kernel(SDPBackend.MATH)


def fake_base(layers: int, tokenizer) -> DiMOO:
    """A DiMOO at the released widths with `layers` blocks; built inside FakeTensorMode it holds no weights."""
    net = LLaDA(LLaDAConfig.from_hf({**RELEASED, "n_layers": layers}))
    return DiMOO(net, tokenizer, SpecialTokens(), (SIZE // 16, SIZE // 16), CODES, Path(), 8, "flops", "bf16")


def branch_rows(tokenizer) -> dict[str, dict[str, torch.Tensor]]:
    """Per branch: prompt ids [1, P] and the sequence ids / valid [1, T] of an all-masked image (real
    tensors: a sequence's length is data, which fake tensors do not hold)."""
    out = {}
    for branch, user_text in (("cond", PROMPT), ("uncond", UNCONDITION)):
        cond = torch.tensor([tokenizer(prompt_text(user_text), add_special_tokens=False)["input_ids"]])
        tokens = torch.full((1, (SIZE // 16) ** 2), CODES)
        ids, valid = sequence_ids(tokens, cond, SpecialTokens(), SIZE // 16, SIZE // 16, CODES)
        out[branch] = {"cond": cond, "ids": ids, "valid": valid}
    return out


def forward_flops(base: DiMOO, fake, row: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(transformer, head) FLOPs of one base forward of one row; `fake` turns real tensors into fake ones."""
    with counting():
        features = count_flops(base.net.features, fake(row["ids"]), fake(row["valid"]))
        feat = torch.empty(1, row["ids"].shape[1], base.D)
        head = count_flops(base.head, feat, fake(row["cond"]))
    return features, head


def shortcut_flops(model, T: int, K: int, D: int) -> int:
    """FLOPs of one shortcut call on a row of T positions with K new tokens."""
    args = (
        torch.empty(1, T, D),
        torch.empty(1, K, D),
        torch.zeros(1, K, dtype=torch.long),
        torch.ones(1, K, dtype=torch.bool),
        torch.full((1,), 0.5),
    )
    with counting():
        return count_flops(model, *args)


def tiny_check() -> dict:
    """Counts of a tiny LLaDA and a tiny dimoo-transformer (padded rows) on real CPU tensors and on fake
    ones; and on the meta device, where the base and the shortcut do not run (autocast has no meta type)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = LLaDAConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=300)
    ids = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(0))
    valid = torch.arange(40)[None] < torch.tensor([[40], [33]])
    sc = dict(dim=64, heads=4, mlp_hidden=128, bottleneck=2, blocks=1)

    def count(net, shortcut, convert):
        inputs = (torch.zeros(2, 40, 64), torch.zeros(2, 7, 64), torch.zeros(2, 7, dtype=torch.long))
        inputs += (torch.ones(2, 7, dtype=torch.bool), torch.full((2,), 0.5), convert(valid))
        return {
            "base": count_flops(net.features, convert(ids), convert(valid)),
            "shortcut": count_flops(shortcut, *inputs),
        }

    net, shortcut = LLaDA(cfg), build("dimoo-transformer", **sc)
    out = {"cpu_default_kernel": count(net, shortcut, lambda t: t)}
    with counting():
        out["cpu_math_kernel"] = count(net, shortcut, lambda t: t)
    with FakeTensorMode() as mode, counting():
        out["fake_math_kernel"] = count(LLaDA(cfg), build("dimoo-transformer", **sc), mode.from_tensor)
    try:
        with torch.device("meta"):
            out["meta"] = count(LLaDA(cfg), build("dimoo-transformer", **sc), lambda t: t.to("meta"))
    except RuntimeError as e:
        out["meta"] = f"fails: {str(e).splitlines()[0]}"
    out["fake_equals_cpu_math"] = out["fake_math_kernel"] == out["cpu_math_kernel"]
    return out


def part_c(tokenizer) -> dict:
    from torch._subclasses.fake_tensor import FakeTensorMode

    check = tiny_check()
    seqs = branch_rows(tokenizer)
    L = (SIZE // 16) ** 2
    counts = dimoo_schedule(L, N)
    full = set(full_steps(N, BUDGET))
    with FakeTensorMode() as mode:
        fake = mode.from_tensor
        base = fake_base(LAYERS, tokenizer)
        rows = {}
        for branch, seq in seqs.items():
            features, head = forward_flops(base, fake, seq)
            rows[branch] = {"prompt_ids": seq["cond"].shape[1], "T": seq["ids"].shape[1]}
            rows[branch] |= {"features": features, "head": head, "forward": features + head}

        # linearity in layers: the per-layer count of 1 and 2 layers predicts 32
        per_layer = {layers: forward_flops(fake_base(layers, tokenizer), fake, seqs["cond"])[0] for layers in (1, 2)}
        predicted = per_layer[1] + (LAYERS - 1) * (per_layer[2] - per_layer[1])

        shortcut = build_for_base("dimoo-transformer", base, **SHORTCUT)
        parameters = sum(p.numel() for p in shortcut.parameters())
        by_module = {}
        for name, p in shortcut.named_parameters():
            key = ".".join(name.split(".")[:3]) if name.startswith("blocks.") else name.split(".")[0]
            by_module[key] = by_module.get(key, 0) + p.numel()

        for branch, r in rows.items():
            r["shortcut_K"] = L // N + (r["prompt_ids"] if branch == "cond" else 0)
            r["shortcut"] = shortcut_flops(shortcut, r["T"], r["shortcut_K"], base.D)

        # each shortcut step's own K: the cells committed at the step before (+ the prompt in the cond branch)
        exact = 0
        for s in sorted(set(range(N)) - full):
            exact += shortcut_flops(shortcut, rows["cond"]["T"], counts[s - 1] + rows["cond"]["prompt_ids"], base.D)
            exact += shortcut_flops(shortcut, rows["uncond"]["T"], counts[s - 1], base.D)

    t_full = sum(r["forward"] for r in rows.values())
    t_head = sum(r["head"] for r in rows.values())
    t_shortcut = sum(r["shortcut"] for r in rows.values())
    sampling = (SAMPLING_OPS_PER_LOGIT + 3) * L * CODES  # per step, + the CFG combine (3 per logit)
    ideal = lambda B: B * t_full + (N - B) * (t_shortcut + t_head)  # noqa: E731
    ratio = ideal(BUDGET) / ideal(N)
    return {
        "layers": LAYERS,
        "method": "FlopCounterMode on fake tensors (FakeTensorMode), math attention kernel, all 32 layers counted",
        "rows": rows,
        "layer_check": {
            "one_layer": per_layer[1],
            "two_layers": per_layer[2],
            "predicted_32": predicted,
            "counted_32": rows["cond"]["features"],
            "equal": predicted == rows["cond"]["features"],
        },
        "tiny_check": check,
        "shortcut_parameters": parameters,
        "shortcut_parameters_by_module": by_module,
        "shortcut_matches_published": abs(parameters - PUBLISHED_SHORTCUT_PARAMETERS) < 0.05e6,
        "t_full": t_full,
        "t_head": t_head,
        "t_shortcut": t_shortcut,
        "sampling_estimate_per_step": sampling,
        "ideal_N64_B11": ideal(BUDGET),
        "ideal_N64_B64": ideal(N),
        "ratio": ratio,
        "speedup": 1 / ratio,
        "ratio_with_sampling": (ideal(BUDGET) + N * sampling) / (ideal(N) + N * sampling),
        "ratio_exact_schedule_K": (BUDGET * t_full + exact + (N - BUDGET) * t_head) / ideal(N),
        "full_steps": sorted(full),
    }


def print_c(c: dict) -> None:
    T = 1e12
    r = c["rows"]
    print(
        f"\n(c) Counted FLOPs at the released dims (d_model 4096, 32 layers, MLP 12288, 1024x1024 -> 4096 cells, "
        f"{CODES} codes): FlopCounterMode on fake tensors, all 32 layers; cond row T = {r['cond']['T']} "
        f"({r['cond']['prompt_ids']} prompt ids), uncond row T = {r['uncond']['T']} ({r['uncond']['prompt_ids']})"
    )
    print("| per call | cond (TFLOP) | uncond (TFLOP) | both branches (TFLOP) |")
    print("|---|---|---|---|")
    for key, label in (
        ("features", "base transformer (32 layers)"),
        ("head", "t_head: base head (image-code logits at the 4096 cells)"),
        ("forward", "t_full: base forward = transformer + head"),
        ("shortcut", f"t_shortcut: shortcut call (K = {r['cond']['shortcut_K']} / {r['uncond']['shortcut_K']})"),
    ):
        both = r["cond"][key] + r["uncond"][key]
        print(f"| {label} | {r['cond'][key] / T:.4f} | {r['uncond'][key] / T:.4f} | {both / T:.4f} |")
    print(f"| sampling per step (estimate, not counted) | | | {c['sampling_estimate_per_step'] / T:.5f} |")
    print(f"| ideal(64, 64) = 64 t_full | | | {c['ideal_N64_B64'] / T:.1f} |")
    print(f"| ideal(64, 11) = 11 t_full + 53 (t_shortcut + t_head) | | | {c['ideal_N64_B11'] / T:.1f} |")
    print(f"| **ideal(64, 11) / ideal(64, 64)** | | | **{c['ratio']:.4f}** (speed-up {c['speedup']:.2f}x) |")
    print(
        f"shortcut parameters {c['shortcut_parameters']:,} (published 219.8M: "
        f"{'match' if c['shortcut_matches_published'] else 'NO MATCH'}); ratio with the sampling estimate "
        f"{c['ratio_with_sampling']:.4f}; with each shortcut step's own K (the cells committed the step before) "
        f"{c['ratio_exact_schedule_K']:.4f}"
    )
    lc, tc = c["layer_check"], c["tiny_check"]
    print(
        f"checks: transformer 1 layer {lc['one_layer'] / T:.4f} T, 2 layers {lc['two_layers'] / T:.4f} T -> 32 "
        f"predicted {lc['predicted_32'] / T:.4f} T, counted {lc['counted_32'] / T:.4f} T "
        f"({'equal' if lc['equal'] else 'DIFFER'}); tiny model: fake {tc['fake_math_kernel']} vs CPU "
        f"{tc['cpu_math_kernel']} ({'equal' if tc['fake_equals_cpu_math'] else 'DIFFER'}); CPU default attention "
        f"kernel {tc['cpu_default_kernel']} (attention not counted); meta device: {tc['meta']}"
    )


# ---- (b) bytes per trajectory -----------------------------------------------------------------------


def roll_few(base: DiMOO, steps: int, seed: int = 0) -> dict:
    """The first `steps` of an N = 64 DiMOO rollout of PROMPT with CFG, every step's feature recorded as a
    dump records it (float16, sample-major rows: cond, uncond), and rounded to bf16 first."""
    config = SamplerConfig.for_base(base, N)
    _, _, dims = text_layout(DumpConfig(prompts=[PROMPT], steps=steps), base, branches=2)
    cond = base.encode_prompts([PROMPT])
    rec = StepRecorder(1, 2, dims)
    rec_bf16 = np.zeros_like(rec.features)
    tokens = torch.full((1, base.L), base.V, dtype=torch.long)
    order = torch.full((1, base.L), -1, dtype=torch.long)
    seconds = []
    start = time.perf_counter()

    def record(step, feature, new_ids, new_pos):
        rec(step, feature, new_ids, new_pos)
        f = feature.to(torch.bfloat16).to(torch.float16).cpu().numpy()
        rec_bf16[:, step, : f.shape[1]] = sample_major(f, 2)
        tokens.scatter_(1, new_pos.cpu(), new_ids.cpu())
        order.scatter_(1, new_pos.cpu(), step)
        seconds.append(time.perf_counter() - start - sum(seconds))
        print(f"  step {step}: {seconds[-1]:.0f} s", flush=True)
        if step + 1 == steps:
            raise Stop

    seeds = sample_seeds(seed, 0, 1)
    try:
        rollout(base, cond, seeds, config, recorder=record)
    except Stop:
        pass
    fields = {
        **text_fields(base, cond, 2, dims),
        "tokens": np.repeat(tokens.numpy(), 2, axis=0).astype(np.int16),
        "order": np.repeat(order.numpy(), 2, axis=0).astype(np.int16),
        "cond": np.zeros(2, dtype=np.int32),
        "branch": np.arange(2, dtype=np.uint8),
        "sample_id": np.zeros(2, dtype=np.int64),
        "seed": np.array(seeds * 2, dtype=np.uint64),
    }
    features = {"float16": rec.features, "bf16": rec_bf16}
    return {"dims": dims, "cond": cond, "features": features, "fields": fields, "seconds": seconds, "config": config}


def probe(base: DiMOO, cond: torch.Tensor, step: int, T: int) -> dict:
    """Features [2, 1, T, D] of one forward at a synthetic state: the cells the schedule has committed
    before `step` hold random codes at random cells (the rollout cannot start from a given state)."""
    g = torch.Generator().manual_seed(step)
    committed = sum(dimoo_schedule(base.L, N)[:step])
    tokens = torch.full((1, base.L), base.V, dtype=torch.long)
    tokens[0, torch.randperm(base.L, generator=g)[:committed]] = torch.randint(0, base.V, (committed,), generator=g)
    t = time.perf_counter()
    with torch.no_grad(), autocast(base):
        feature = base.forward(tokens.repeat(2, 1), stack_cond(cond, base.null_cond(1)))[1]
    seconds = time.perf_counter() - t
    print(f"  probe at step {step}: {seconds:.0f} s", flush=True)
    out = {}
    for key, f in (("float16", feature), ("bf16", feature.to(torch.bfloat16))):
        padded = np.zeros((2, 1, T, base.D), dtype=np.float16)
        padded[:, 0, : feature.shape[1]] = f.to(torch.float16).numpy()
        out[key] = padded
    return {"step": step, "synthetic": True, "masked": base.L - committed, "seconds": seconds, "features": out}


def feature_bytes(fmt: str, path: Path) -> int:
    """Bytes on disk of the feature arrays (Zarr) or columns (Parquet) of a shard."""
    if fmt == "zarr":
        return sum(path_size(p) for p in path.iterdir() if p.name.startswith("features"))
    meta = pq.ParquetFile(path).metadata
    return sum(
        meta.row_group(g).column(j).total_compressed_size
        for g in range(meta.num_row_groups)
        for j in range(meta.num_columns)
        if meta.row_group(g).column(j).path_in_schema.startswith("features")
    )


def measure(tmp: Path, fmt: str, codec: Codec, encoded: dict, fields: dict, dims: Dims, rows: list[int]) -> int:
    """Write `rows` of the encoded features [rows, n, T, D] as one shard (Dims.N = n) through the project's
    writer; returns the bytes on disk of its feature arrays."""
    path = tmp / ("shard.parquet" if fmt == "parquet" else "shard.zarr")
    writer = WRITERS[fmt](path, len(rows), dims, codec)
    writer.write(0, {**{k: v[rows] for k, v in encoded.items()}, **{k: v[rows] for k, v in fields.items()}})
    writer.commit()
    size = feature_bytes(fmt, path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


def part_b(base: DiMOO, steps: int, probe_steps: list[int], tmp: Path) -> dict:
    t0 = time.perf_counter()
    run = roll_few(base, steps)
    dims, fields = run["dims"], run["fields"]
    states = [
        {
            "step": s,
            "synthetic": False,
            "masked": base.L - sum(dimoo_schedule(base.L, N)[:s]),
            "features": {k: v[:, s : s + 1] for k, v in run["features"].items()},
        }
        for s in range(steps)
    ]
    states += [probe(base, run["cond"], s, dims.T) for s in probe_steps]
    forward_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    one_step = replace(dims, N=1)
    rows = []
    for label, spec, key in VARIANTS:
        codec = parse_codec(spec)
        for fmt in WRITERS:
            per_state = []
            for st in states:
                encoded = codec.encode(st["features"][key])
                sizes = {b: measure(tmp, fmt, codec, encoded, fields, one_step, [i]) for i, b in enumerate(BRANCHES)}
                per_state.append({"step": st["step"], **sizes})
            # lossless check: the rollout steps as a dump writes them (both rows, Dims.N = steps) have the
            # bytes of their 1-step shards
            joint = None
            if not codec.lossy:
                joint = measure(tmp, fmt, codec, codec.encode(run["features"][key]), fields, dims, [0, 1])
            recorded = sum(p[b] for p in per_state[:steps] for b in BRANCHES)
            first = {b: float(np.mean([p[b] for p in per_state[:steps]])) * N for b in BRANCHES}
            first["sample"] = first["cond"] + first["uncond"]
            rows.append(
                {
                    "codec": label,
                    "format": fmt,
                    "bytes_per_state": per_state,
                    "bytes_N64": trajectory_bytes(per_state),
                    "first_steps_x64": first,
                    "joint_shard_of_recorded_steps": joint,
                    "sum_of_one_step_shards": recorded,
                }
            )
        print(f"  wrote {label}: {time.perf_counter() - t1:.0f} s", flush=True)

    D = base.D
    lengths = [int(x) for x in fields["length"]]
    raw = {"cond": dims.T * D * 2 * N, "uncond": dims.T * D * 2 * N}
    published = {"cond": lengths[0] * D * 2 * N, "uncond": lengths[1] * D * 2 * N}
    for d in (raw, published):
        d["sample"] = d["cond"] + d["uncond"]
    return {
        "steps_recorded": steps,
        "probe_steps": probe_steps,
        "N": N,
        "dims": {"L": dims.L, "C": dims.C, "T": dims.T, "D": dims.D, "V": dims.V, "P": dims.P},
        "row_lengths": {"cond": lengths[0], "uncond": lengths[1]},
        "states": [{k: v for k, v in st.items() if k != "features"} for st in states],
        "sampler": run["config"].to_dict(),
        "step_seconds": run["seconds"],
        "forward_seconds": forward_seconds,
        "write_seconds": time.perf_counter() - t1,
        "raw_float16_N64": raw,
        "published_bf16_N64": published,
        "rows": rows,
    }


def trajectory_bytes(per_state: list[dict]) -> dict[str, float]:
    """Bytes of a whole N = 64 row from the bytes at the measured steps: linear interpolation between
    them, constant beyond the last; the sample is both rows."""
    steps = np.array([p["step"] for p in per_state], dtype=float)
    order = np.argsort(steps)
    out = {}
    for b in BRANCHES:
        values = np.array([p[b] for p in per_state], dtype=float)
        out[b] = float(np.interp(np.arange(N), steps[order], values[order]).sum())
    out["sample"] = out["cond"] + out["uncond"]
    return out


def print_b(b: dict) -> None:
    MB, GB = 1e6, 1e9
    d = b["dims"]
    states = b["states"]
    rec = f"0-{b['steps_recorded'] - 1}"
    print(
        f"\n(b) Bytes per trajectory at the released dims: 1 block at the released widths, random weights, fp32 on "
        f"the CPU; 1024x1024 (L = {d['L']}), D = {d['D']}, rows padded to T = {d['T']} (cond "
        f"{b['row_lengths']['cond']}, uncond {b['row_lengths']['uncond']} positions); steps {rec} of an N = {N} "
        f"rollout (DiMOO rule, CFG s = 4, both branches) + synthetic states at steps "
        f"{', '.join(map(str, b['probe_steps']))} (random codes at the cells committed by then); bytes on disk of "
        f"the feature arrays through the project's writers; N = 64 by linear interpolation over the measured "
        f"steps. MB = 1e6, GB = 1e9."
    )
    print(
        "| codec | format | cond, N=64 (GB) | uncond, N=64 (GB) | sample, N=64 (GB) | published / this | "
        f"sample from steps {rec} only, x64 (GB) |"
    )
    print("|---|---|---|---|---|---|---|")
    pub = b["published_bf16_N64"]
    for label, v in (("published: bf16 pickles, own length", pub), ("raw float16, padded to T", b["raw_float16_N64"])):
        print(
            f"| {label} | - | {v['cond'] / GB:.3f} | {v['uncond'] / GB:.3f} | {v['sample'] / GB:.3f} | "
            f"{pub['sample'] / v['sample']:.2f}x | - |"
        )
    for r in b["rows"]:
        v = r["bytes_N64"]
        print(
            f"| {r['codec']} | {r['format']} | {v['cond'] / GB:.3f} | {v['uncond'] / GB:.3f} | {v['sample'] / GB:.3f} "
            f"| {pub['sample'] / v['sample']:.1f}x | {r['first_steps_x64']['sample'] / GB:.3f} |"
        )

    print("\nBytes per step per row at each measured step (cond / uncond, MB; * = synthetic state):")
    heads = [f"{s['step']}{'*' if s['synthetic'] else ''} ({s['masked']} masked)" for s in states]
    print("| codec | format | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(states))
    raw = b["raw_float16_N64"]["cond"] / N
    print("| raw float16 | - | " + " | ".join(f"{raw / MB:.2f}" for _ in states) + " |")
    for r in b["rows"]:
        cells = " | ".join(f"{p['cond'] / MB:.2f} / {p['uncond'] / MB:.2f}" for p in r["bytes_per_state"])
        print(f"| {r['codec']} | {r['format']} | {cells} |")
    checks = [
        f"{r['codec']} {r['format']} {r['joint_shard_of_recorded_steps'] / r['sum_of_one_step_shards']:.4f}"
        for r in b["rows"]
        if r["joint_shard_of_recorded_steps"] is not None
    ]
    print(f"check, a 2-row shard of steps {rec} (as a dump writes it) / its 1-step 1-row shards: {'; '.join(checks)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="steps of the N = 64 rollout to record (part b)")
    p.add_argument("--probe-steps", default="21,42,63", help="synthetic later states to measure ('': none)")
    p.add_argument("--parts", default="b,c")
    p.add_argument("--tmp", default=None, help="folder for the checkpoint and shards (default: the system's)")
    p.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = p.parse_args()
    if not FIXTURE.is_dir():
        sys.exit(f"the published DiMOO fixture is needed for its tokenizer config and VQ architecture: {FIXTURE}")
    parts = set(args.parts.split(","))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    result = {
        "benchmark": "dimoo_scale",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "load_average_at_start": os.getloadavg(),  # other processes sharing the cores slow every timing
        "torch": torch.__version__,
        "dims": RELEASED | {"n_layers": LAYERS},
        "height": SIZE,
        "width": SIZE,
        "codes": CODES,
        "prompt": PROMPT,
        "prompt_words": len(PROMPT.split()),
        "tokenizer": "word-level over the prompt (one id per word or punctuation mark), not the released BPE",
    }
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp) / "dimoo"
        if "b" in parts:
            t = time.perf_counter()
            write_checkpoint(folder, 1, 2**30)
            write_tokenizer(folder)
            write_vqvae(folder)
            base = load_dimoo(str(folder), SIZE, SIZE, device="cpu", precision="fp32")
            print(f"wrote and loaded the 1-block checkpoint in {time.perf_counter() - t:.0f} s", flush=True)
            tokenizer = base.tokenizer
        else:
            write_tokenizer(folder)
            tokenizer = load_tokenizer(folder)
        if "c" in parts:
            result["c"] = part_c(tokenizer)
            print_c(result["c"])
        if "b" in parts:
            probe_steps = [int(s) for s in args.probe_steps.split(",") if s]
            result["b"] = part_b(base, args.steps, probe_steps, Path(tmp))
            print_b(result["b"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["load_average_at_end"] = os.getloadavg()
    print(f"\ntotal {result['seconds']:.0f} s (load average {result['load_average_at_start'][0]:.1f} at the start)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
