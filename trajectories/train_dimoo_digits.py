"""Train the shipped dimoo-digits base: a small Lumina-DiMOO on 8×8 digits (seeded, reproducible).

    python -m migm.trajectories.train_dimoo_digits --out trajectories/base/weights/dimoo-digits

Writes a DiMOO folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
special_tokens.json) plus meta.json (sampler defaults, training record, sweep):
- a word-level tokenizer (`tokenizers`: WordLevel, lowercase, whitespace split, [UNK]; DiMOO's markup
  as special tokens) over the system prompt and every phrasing, held-out ones included;
- ids: the tokenizer's, then boa, eoa, boi, eoi, newline, mask, then the 17 grey levels as image codes;
- the LLaDA transformer trained with the masked-token objective on the image cells (MaskGIT's cosine
  mask ratio, cross-entropy on masked cells over the image-code rows of ff_out, 1-pixel shifts), on
  the sequences the DiMOO base itself builds (prompt markup, [boa, boi], rows + newline, [eoi, eoa]),
  10% of prompts replaced by "<uncondition>" for CFG. Training prompts use the training phrasings;
- while training it logs the conditioning gap: held-out masked-token loss at 95% masking with the
  right digit's prompt vs a wrong digit's (same phrasing) vs the uncond prompt;
- then it sweeps guidance s and temperature τ at N = 16 under the DiMOO rule on the shipped digit
  classifier (accuracy, Fréchet distance to the held-out digits) and records the best as defaults.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from migm.trajectories.base.digits import LEVELS, decode_digits, load_classifier, load_digits_split, score_digits, shift
from migm.trajectories.base.dimoo import DiMOO
from migm.trajectories.base.dimoo_digits import (
    GRID,
    HELD_OUT_PHRASINGS,
    PHRASINGS,
    TRAIN_PHRASINGS,
    load_dimoo_digits,
    phrase,
    prompts_of,
)
from migm.trajectories.base.dimoo_layout import SYSTEM_PROMPT, UNCONDITION, SpecialTokens
from migm.trajectories.base.dimoo_loading import load_tokenizer
from migm.trajectories.base.llada import LLaDA, LLaDAConfig
from migm.trajectories.generate import sample_many
from migm.trajectories.rollout import SamplerConfig
from migm.trajectories.train_digits import lr_at, random_masks

print = functools.partial(print, flush=True)  # progress shows up in logs as it happens

MARKUP = ("<system>", "</system>", "<user>", "</user>", UNCONDITION)
UNK = "[UNK]"
L = GRID[0] * GRID[1]


# --- the folder: tokenizer, special ids, config --------------------------------------------------


def vocabulary() -> list[str]:
    """Words of the system prompt and of every phrasing of every digit, in order of first appearance,
    split the way the tokenizer splits (lowercase, then words and punctuation runs)."""
    from tokenizers import normalizers, pre_tokenizers

    lower, split = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for text in [SYSTEM_PROMPT, *prompts_of(PHRASINGS)]:
        words |= dict.fromkeys(w for w, _ in split.pre_tokenize_str(lower.normalize_str(text)))
    return list(words)


def write_tokenizer(folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json, loadable by `transformers.AutoTokenizer` like the
    released model's: [UNK] is id 0, then the words, then the markup as special added tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {UNK: 0} | {w: i + 1 for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])  # as the released tokenizer.json
    tok.add_special_tokens([UNK, *MARKUP])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, extra_special_tokens=list(MARKUP))
    fast.save_pretrained(str(folder))


def special_tokens(tokenizer) -> SpecialTokens:
    """The markup ids right after the tokenizer's, then the image codes."""
    K = len(tokenizer)
    return SpecialTokens(
        boa=K,
        eoa=K + 1,
        boi=K + 2,
        eoi=K + 3,
        newline=K + 4,
        mask=K + 5,
        image_offset=K + 6,
        uncondition=tokenizer.convert_tokens_to_ids(UNCONDITION),
        codes=LEVELS,
    )


def hf_config(cfg: LLaDAConfig, special: SpecialTokens) -> dict:
    """config.json in the released LLaDA layout (the fields `LLaDAConfig.from_hf` reads and checks)."""
    return {
        "architectures": ["LLaDAForMultiModalGeneration"],
        "model_type": "llada",
        "activation_type": "silu",
        "alibi": False,
        "attention_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": cfg.d_model,
        "embedding_size": cfg.vocab_size,
        "include_bias": False,
        "include_qkv_bias": False,
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "mask_token_id": special.mask,
        "mlp_hidden_size": cfg.mlp_hidden_size,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "n_layers": cfg.n_layers,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope": True,
        "rope_theta": cfg.rope_theta,
        "scale_logits": False,
        "vocab_size": cfg.vocab_size,
        "weight_tying": False,
    }


def write_folder(folder: Path, net: LLaDA, special: SpecialTokens) -> None:
    """config.json, model.safetensors (keys `model.transformer.*`, as released) and special_tokens.json."""
    (folder / "config.json").write_text(json.dumps(hf_config(net.cfg, special), indent=2) + "\n")
    state = {"model." + k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "special_tokens.json").write_text(json.dumps(asdict(special), indent=2) + "\n")


# --- training ------------------------------------------------------------------------------------


def init_weights(net: LLaDA) -> None:
    """GPT-style init: N(0, 0.02), residual outputs scaled down by depth."""
    for name, p in net.named_parameters():
        if p.ndim == 2:
            residual = "blocks" in name and name.endswith(("attn_out.weight", "ff_out.weight"))
            nn.init.normal_(p, std=0.02 / (2 * net.cfg.n_layers) ** 0.5 if residual else 0.02)


def masked_loss(base: DiMOO, tokens: torch.Tensor, cond: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the masked cells, over the image codes, of the sequence the base builds."""
    ids, valid = base.sequences(tokens.masked_fill(masked, base.mask_id), cond)
    logits = base.head(base.net.features(ids, valid), cond)
    return F.cross_entropy(logits[masked], tokens[masked])


@torch.no_grad()
def conditioning_gap(base: DiMOO, x: torch.Tensor, y: torch.Tensor, seed: int = 123) -> dict:
    """Held-out masked-token loss at 95% masking with the right digit's prompt, a wrong digit's in the
    same phrasing, and the uncond prompt (phrasings cycle over the training ones)."""
    g = torch.Generator().manual_seed(seed)
    masked = torch.rand(x.shape, generator=g) < 0.95
    wrong = (y + torch.randint(1, 10, y.shape, generator=g)) % 10
    phrasings = [TRAIN_PHRASINGS[i % len(TRAIN_PHRASINGS)] for i in range(len(y))]

    def loss(digits: torch.Tensor) -> float:
        cond = base.encode_prompts([phrase(p, int(d)) for p, d in zip(phrasings, digits)])
        return masked_loss(base, x, cond, masked).item()

    return {"right": loss(y), "wrong": loss(wrong), "null": masked_loss(base, x, base.null_cond(len(x)), masked).item()}


def train(base: DiMOO, data: dict, args, log=print) -> dict:
    """Train `base.net` in place; returns the training record (final gap, seconds)."""
    g = torch.Generator().manual_seed(args.seed)
    net = base.net.train().requires_grad_(True)  # the DiMOO wrapper froze it; here it learns
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "wte" not in n]
    rest = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "wte" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95)
    )
    # every training prompt (phrasing-major, digit-minor) and, last, the uncond prompt, as one id table
    table = base.encode_prompts(prompts_of(TRAIN_PHRASINGS) + [UNCONDITION])  # "<uncondition>": null_cond's ids
    uncond = len(table) - 1
    x, y = torch.from_numpy(data["x_train"]).view(-1, 8, 8), torch.from_numpy(data["y_train"])
    x_te, y_te = torch.from_numpy(data["x_test"]).view(-1, L), torch.from_numpy(data["y_test"])
    t0, gap = time.time(), {}
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr)
        idx = torch.randint(0, len(x), (args.batch_size,), generator=g)
        tokens = shift(x[idx], g).reshape(-1, L)
        row = torch.randint(0, len(TRAIN_PHRASINGS), (len(idx),), generator=g) * 10 + y[idx]
        row = row.masked_fill(torch.rand(len(idx), generator=g) < args.uncond_drop, uncond)
        loss = masked_loss(base, tokens, table[row], random_masks(len(idx), L, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if step % args.eval_every == 0 or step == args.steps - 1:
            net.eval()
            gap = conditioning_gap(base, x_te, y_te)
            net.train()
            log(
                f"step {step:5d} loss {loss.item():.3f} | held-out @95% mask: right {gap['right']:.3f} "
                f"wrong {gap['wrong']:.3f} null {gap['null']:.3f} | {time.time() - t0:.0f}s"
            )
    net.eval().requires_grad_(False)
    # the machine's load average beside the time: other jobs slow a 2-core machine down several times
    return {"conditioning_gap": gap, "train_seconds": round(time.time() - t0, 1), "load_average": os.getloadavg()}


# --- the sampler sweep ---------------------------------------------------------------------------


def evaluate(base: DiMOO, clf, prompts: list[str], config: SamplerConfig, seed: int) -> dict:
    """Sample one image per prompt and score it by the digit the prompt names."""
    labels = torch.tensor([base.label_of(p) for p in prompts])
    s = sample_many(base, labels, config, seed, batch_size=250, cond=base.encode_prompts(prompts).cpu())
    return score_digits(s.tokens, s.labels, clf)


def sweep_sampler(base: DiMOO, clf, samples: int, log=print) -> dict:
    """Guidance s and temperature τ at N = 16 by classifier accuracy and Fréchet distance on prompts
    cycling over every digit and phrasing (held-out ones included), seeds apart from `migm score`'s."""
    everything = prompts_of(PHRASINGS)
    prompts = [everything[i % len(everything)] for i in range(samples)]
    results = []
    for guidance in (1.0, 1.5, 2.0, 3.0, 4.0):
        for temperature in (0.75, 1.0, 1.25):
            cfg = SamplerConfig(steps=16, rule="dimoo", guidance=guidance, temperature=temperature)
            s = evaluate(base, clf, prompts, cfg, seed=999)
            results.append({"guidance": guidance, "temperature": temperature, **s})
            log(f"  s={guidance:<4} tau={temperature:<4} acc {s['accuracy']:.3f} frechet {s['frechet']:.3f}")
    # the closest to the real digits among the accurate: 95%, or within 2 points of the best if none reach it
    floor = min(0.95, max(r["accuracy"] for r in results) - 0.02)
    best = min((r for r in results if r["accuracy"] >= floor), key=lambda r: r["frechet"])
    chosen = {"rule": "dimoo", "steps": 16, "guidance": best["guidance"], "temperature": best["temperature"]}
    return {"chosen": chosen, "sweep": results}


def sweep_and_record(folder: Path, samples: int, log=print) -> dict:
    """Sweep the folder's model (loaded as the shipped base loads) and write the defaults into meta.json."""
    base, clf = load_dimoo_digits(weights_dir=folder), load_classifier()
    t0 = time.time()
    sweep = sweep_sampler(base, clf, samples, log)
    log(f"chosen sampler defaults: {sweep['chosen']}")
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(sampler=sweep["chosen"], sampler_sweep=sweep["sweep"])
    meta["training"] |= {"sweep_samples": samples, "sweep_seconds": round(time.time() - t0, 1)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).parent / "base" / "weights" / "dimoo-digits"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=192)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--uncond-drop", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--sweep-samples", type=int, default=300)
    p.add_argument("--sweep-only", action="store_true", help="re-sweep the sampler of the model in --out; no training")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.sweep_only:
        sweep_and_record(out, args.sweep_samples)
        return
    torch.manual_seed(args.seed)

    write_tokenizer(out)
    tokenizer = load_tokenizer(out)
    special = special_tokens(tokenizer)
    cfg = LLaDAConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.heads,
        mlp_hidden_size=args.mlp,
        vocab_size=special.image_offset + LEVELS,
        rope_theta=args.rope_theta,
    )
    net = LLaDA(cfg)
    init_weights(net)
    base = DiMOO(net, tokenizer, special, GRID, LEVELS, None, None, "training", "fp32", decode_digits, "dimoo-digits")
    size = sum(p.numel() for p in net.parameters())
    print(f"vocabulary: {len(tokenizer)} tokenizer ids + 6 markup + {LEVELS} image codes; {size:,} parameters")
    record = train(base, load_digits_split(), args)

    write_folder(out, net, special)
    meta = {
        "sampler": {"rule": "dimoo", "steps": 16, "guidance": 4.0, "temperature": 1.0},  # until the sweep says
        "phrasings": {"train": list(TRAIN_PHRASINGS), "held_out": list(HELD_OUT_PHRASINGS)},
        "training": vars(args) | {"out": None, "torch": torch.__version__, "threads": torch.get_num_threads()},
        **record,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    sweep_and_record(out, args.sweep_samples)


if __name__ == "__main__":
    main()
