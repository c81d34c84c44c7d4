"""Counted FLOPs of aMUSEd at the released sizes (random weights) against its shortcut, and the ideal speed-ups.

    python benchmarks/amused_flops.py [--json benchmarks/results/amused-flops.json]

The models are built on the meta device (no weights are allocated, nothing is downloaded) and counted by
torch's FlopCounterMode through `shortcut_zoo.evaluate.count_flops`, per sample and CFG branch. Released
dims: diffusers' conversion script (scripts/convert_amused.py: the MUSE research config, hidden 1024, 22
layers, block_out_channels 768, codebook 8192; amused-512 converted with force_down_up_sample, so it
downsamples to 16×16 around the transformer) and its VQ model (block_out_channels [128, 256, 256, 512,
768]: 16 pixels per cell); the CLIP text encoder (ViT-L/14's, 768 wide, 12 layers) runs once per prompt
and is counted apart. The shortcut is the default `tiny-transformer` (bottleneck 2, 1 block) at D = 768,
fed L/N new tokens. Ideal speed-up at N steps, B full: N·F / (B·F + (N−B)·(S + H)), F the base forward,
S the shortcut, H the head; sampling itself (softmax, top-k) is not counted.
"""

from __future__ import annotations

import argparse
import json

import torch

from migm.shortcut_zoo.archs import build
from migm.shortcut_zoo.cost import count_flops

RELEASED = {
    "amused-256": {"sample_size": 16, "downsample": False},
    "amused-512": {"sample_size": 32, "downsample": True},
}
MUSE = dict(
    hidden_size=1024,
    use_bias=False,
    cond_embed_dim=768,
    micro_cond_encode_dim=256,
    micro_cond_embed_dim=1280,
    encoder_hidden_size=768,
    vocab_size=8256,
    codebook_size=8192,
    in_channels=768,
    block_out_channels=768,
    num_res_blocks=3,
    block_num_heads=12,
    num_hidden_layers=22,
    num_attention_heads=16,
    intermediate_size=2816,
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)


def measure(name: str, steps: list[int], budgets: list[int]) -> dict:
    from diffusers import UVit2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    dims = RELEASED[name]
    g = dims["sample_size"]
    L = g * g
    with torch.device("meta"):
        net = UVit2DModel(**MUSE, **dims, upsample=dims["downsample"]).eval()
        clip = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).eval()
        ids = torch.zeros(1, g, g, dtype=torch.long)
        hidden, pooled = torch.zeros(1, 77, 768), torch.zeros(1, 768)
        micro = torch.zeros(1, 5)
        feature_in = torch.zeros(1, 768, g, g)  # the up block's output (the feature), one vector per cell
        base = count_flops(net, ids, hidden, pooled, micro)
        head = count_flops(net.mlm_layer, feature_in)
        # the alternative feature, the up block's input (at 16x16 for amused-512): head = up block + MLM layer
        h = g // 2 if dims["downsample"] else g
        up_in, emb, cond = torch.zeros(1, 768, h, h), torch.zeros(1, 77, 1024), torch.zeros(1, 1024)
        up_head = count_flops(lambda x: net.mlm_layer(net.up_block(x, cond, emb, None)), up_in)
        text = count_flops(clip, torch.zeros(1, 77, dtype=torch.long))
        rows = []
        for N in steps:
            K = max(1, L // N)
            shortcut_model = build("tiny-transformer", dim=768).eval()
            shortcut = count_flops(
                shortcut_model,
                torch.zeros(1, L, 768),
                torch.zeros(1, K, 768),
                torch.zeros(1, K, dtype=torch.long),
                torch.ones(1, K, dtype=torch.bool),
                torch.full((1,), 0.5),
            )
            for B in budgets:
                if B <= N:
                    ideal = N * base / (B * base + (N - B) * (shortcut + head))
                    rows.append({"N": N, "B": B, "shortcut_flops": shortcut, "ideal_speedup": ideal})
    return {
        "model": name,
        "L": L,
        "D": 768,
        "base_gflops": base / 1e9,
        "head_gflops": head / 1e9,
        "head_over_base": head / base,
        "up_block_head_gflops": up_head / 1e9,
        "up_block_head_over_base": up_head / base,
        "text_encoder_gflops_per_prompt": text / 1e9,
        "shortcut_parameters": sum(p.numel() for p in shortcut_model.parameters()),
        "rows": [{**r, "shortcut_gflops": r.pop("shortcut_flops") / 1e9} for r in rows],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="12,16")
    p.add_argument("--budgets", default="3,4,6")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    results = [measure(name, steps, budgets) for name in RELEASED]
    print(
        "| model | L | base GFLOPs | head GFLOPs (share) | text GFLOPs / prompt | N | B | shortcut GFLOPs (share) | ideal speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for row in r["rows"]:
            print(
                f"| {r['model']} | {r['L']} | {r['base_gflops']:.1f} | {r['head_gflops']:.3f} ({r['head_over_base']:.4f}) "
                f"| {r['text_encoder_gflops_per_prompt']:.2f} | {row['N']} | {row['B']} "
                f"| {row['shortcut_gflops']:.2f} ({row['shortcut_gflops'] / r['base_gflops']:.4f}) "
                f"| {row['ideal_speedup']:.2f}x |"
            )
    for r in results:
        print(
            f"{r['model']}: a head of up block + MLM layer (feature = the up block's input) would cost "
            f"{r['up_block_head_gflops']:.1f} GFLOPs, {r['up_block_head_over_base']:.3f} of the base forward"
        )
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
