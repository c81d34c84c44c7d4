"""Peak host memory of loading a Lumina-DiMOO checkpoint at the released dims, shard by shard.

    python benchmarks/dimoo_memory.py [--layers 2] [--shard-mib 512] [--json benchmarks/results/dimoo-memory.json]

Writes a folder in the released layout with random bf16 weights at the released LLaDA-8B widths
(d_model 4096, 32 heads, 32 KV heads, MLP 12288, vocabulary 134656, as assumed below) but only
`--layers` blocks, so it fits a small machine, split into shards of at most `--shard-mib` (a tensor
larger than that gets a shard of its own). Tokenizer and VQ files come from the tiny published
fixture in tests/fixtures (they are not part of what is measured). Then, in a fresh process each:

- `load_dimoo(..., precision="bf16")` and `precision="fp32"` on the CPU: meta-device module, shards
  read one at a time, each tensor cast as it is read and assigned;
- a naive load for contrast: an fp32 module, every shard read into one state dict, `load_state_dict`,
  then cast to bf16.

Each child reads its resident set before the load (after imports) and its peak (VmHWM, reset just
before the load). On the CPU the loaded model itself is resident, so what loading costs is the peak
increase minus the loaded model's bytes; that part is what a GPU load would keep on the host, and it
must stay near one shard, not the model. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from migm.shortcut_zoo.bench import cpu_name
from migm.trajectories.base.dimoo_loading import VQ_WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "published" / "dimoo" / "checkpoint"
# The released Lumina-DiMOO is LLaDA-8B with its vocabulary extended by the image codes: 126356 + 8192
# codes = 134548 ids, padded to 134656 (the LLaDAConfig default). Assumed, not read from the release.
RELEASED = {
    "d_model": 4096,
    "n_heads": 32,
    "n_kv_heads": 32,
    "mlp_hidden_size": 12288,
    "vocab_size": 134656,
    "embedding_size": 134656,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
}

CHILD = """
import json, sys, time
from pathlib import Path
import torch, safetensors.torch, transformers  # imports belong to the baseline
from migm.trajectories.base.dimoo_loading import load_dimoo, load_tokenizer, shard_files
from migm.trajectories.base.llada import LLaDA, LLaDAConfig

mode, folder = sys.argv[1], Path(sys.argv[2])
load_tokenizer(folder)  # transformers' lazy modules imported before the baseline

def status(key):
    return 1024 * next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))

before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current resident set
t = time.perf_counter()
if mode == "naive":
    cfg = LLaDAConfig.from_hf(json.loads((folder / "config.json").read_text()))
    with torch.device("meta"):
        net = LLaDA(cfg)
    net = net.to_empty(device="cpu")  # fp32, as a module built without a dtype is
    state = {}
    for shard in shard_files(folder):
        state |= {k.removeprefix("model."): v for k, v in safetensors.torch.load_file(str(shard)).items()}
    net.load_state_dict(state)
    del state
    net = net.to(torch.bfloat16)
else:
    net = load_dimoo(str(folder), device="cpu", precision=mode).net
seconds = time.perf_counter() - t
model = sum(p.numel() * p.element_size() for p in net.parameters())
print(json.dumps({"before": before, "peak": status("VmHWM"), "model_bytes": model, "seconds": seconds}))
"""


def write_checkpoint(folder: Path, layers: int, shard_bytes: int) -> list[int]:
    """Random bf16 weights in the released layout, written shard by shard (the writer holds one shard).
    Returns the shard sizes in bytes."""
    d, mlp, vocab = RELEASED["d_model"], RELEASED["mlp_hidden_size"], RELEASED["vocab_size"]
    kv = d // RELEASED["n_heads"] * RELEASED["n_kv_heads"]
    shapes = {"model.transformer.wte.weight": (vocab, d)}
    for i in range(layers):
        p = f"model.transformer.blocks.{i}"
        shapes |= {
            f"{p}.attn_norm.weight": (d,),
            f"{p}.q_proj.weight": (d, d),
            f"{p}.k_proj.weight": (kv, d),
            f"{p}.v_proj.weight": (kv, d),
            f"{p}.attn_out.weight": (d, d),
            f"{p}.ff_norm.weight": (d,),
            f"{p}.ff_proj.weight": (mlp, d),
            f"{p}.up_proj.weight": (mlp, d),
            f"{p}.ff_out.weight": (d, mlp),
        }
    shapes |= {"model.transformer.ln_f.weight": (d,), "model.transformer.ff_out.weight": (vocab, d)}

    groups, size = [[]], 0  # greedy packing in key order, as Hugging Face's sharding does
    for key, shape in shapes.items():
        nbytes = 2 * torch.Size(shape).numel()
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(key)
        size += nbytes

    folder.mkdir(parents=True)
    hf = {
        "architectures": ["LLaDAForMultiModalGeneration"],
        "model_type": "llada",
        "block_type": "llama",
        "n_layers": layers,
        **RELEASED,
    }
    (folder / "config.json").write_text(json.dumps(hf, indent=2))
    (folder / "vqvae").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "vqvae/config.json", "vqvae/" + VQ_WEIGHTS):
        shutil.copyfile(FIXTURE / name, folder / name)  # copyfile: the fixture's read-only modes stay behind
    g = torch.Generator().manual_seed(0)
    weight_map, sizes = {}, []
    for i, keys in enumerate(groups):
        name = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        part = {k: (0.02 * torch.randn(shapes[k], generator=g)).to(torch.bfloat16) for k in keys}
        save_file(part, str(folder / name))
        sizes.append((folder / name).stat().st_size)
        weight_map |= {k: name for k in keys}
        del part
    index = {"metadata": {"total_size": sum(2 * torch.Size(s).numel() for s in shapes.values())}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index | {"weight_map": weight_map}, indent=2))
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--shard-mib", type=int, default=512)
    p.add_argument("--modes", default="bf16,fp32,naive")
    p.add_argument("--tmp", default=None, help="folder for the checkpoint (default: the system's temp folder)")
    p.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = p.parse_args()
    if not FIXTURE.is_dir():
        sys.exit(f"the published DiMOO fixture is needed for its tokenizer and VQ files: {FIXTURE}")

    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(tmp) / "dimoo"
        t = time.perf_counter()
        sizes = write_checkpoint(folder, args.layers, args.shard_mib * 2**20)
        print(f"wrote {len(sizes)} shards, {sum(sizes) / 2**30:.2f} GiB, in {time.perf_counter() - t:.0f} s")
        for mode in args.modes.split(","):
            r = subprocess.run(
                [sys.executable, "-c", CHILD, mode, str(folder)], capture_output=True, text=True, cwd=ROOT
            )
            if r.returncode:
                sys.exit(f"{mode}: child failed\n{r.stderr[-2000:]}")
            m = json.loads(r.stdout.strip().splitlines()[-1])
            increase = m["peak"] - m["before"]
            rows.append(
                {
                    "load": "naive (fp32 module + whole state dict)" if mode == "naive" else f"load_dimoo {mode}",
                    "model_bytes": m["model_bytes"],
                    "largest_shard_bytes": max(sizes),
                    "peak_rss_increase_bytes": increase,
                    "beyond_model_bytes": increase - m["model_bytes"],
                    "seconds": round(m["seconds"], 1),
                }
            )

    where = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "layers": args.layers,
        "dims": RELEASED,
        "shards": len(sizes),
        "checkpoint_bytes": sum(sizes),
    }
    mib = 2**20
    print(
        f"DiMOO load memory: released widths (d_model 4096, 32 heads, MLP 12288, vocab 134656), {args.layers} "
        f"layers, random bf16 weights in {len(sizes)} shards ({sum(sizes) / mib:.0f} MiB), CPU target, {where['cpu']}"
    )
    print("| load | model (MiB) | largest shard (MiB) | peak RSS increase (MiB) | beyond the model (MiB) | s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['load']} | {r['model_bytes'] / mib:.0f} | {r['largest_shard_bytes'] / mib:.0f} | "
            f"{r['peak_rss_increase_bytes'] / mib:.0f} | {r['beyond_model_bytes'] / mib:.0f} | {r['seconds']} |"
        )
    result = {"benchmark": "dimoo_memory", **where, "rows": rows}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
