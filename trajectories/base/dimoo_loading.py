"""Loading a Lumina-DiMOO folder (see `dimoo`): folder checks, tokenizer, shards streamed onto the target
device and dtype with their digests, the fingerprint, the VQ model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import torch

from migm.trajectories.base.checkpoints import key_problems
from migm.trajectories.base.dimoo import DiMOO, needs_package
from migm.trajectories.base.dimoo_layout import DEFAULT_MAX_PROMPT, SpecialTokens, grid_size
from migm.trajectories.base.llada import LLaDA, LLaDAConfig
from migm.trajectories.errors import MigmError, first_line

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VQ_WEIGHTS = "diffusion_pytorch_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def read_json(path: Path) -> dict:
    from migm.trajectories.safe_load import load_json

    data = load_json(path)  # size, UTF-8, depth and integer limits: one line naming the file
    if not isinstance(data, dict):
        raise MigmError(f"{path}: expected a JSON object")
    return data


def read_special_tokens(path: Path) -> SpecialTokens:
    """The released defaults, overridden by the keys of `special_tokens.json`."""
    data = read_json(path)
    known = {f.name for f in fields(SpecialTokens)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MigmError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    bad = [k for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
    if bad:
        raise MigmError(f"{path}: {', '.join(bad)} must be non-negative integer token ids")
    if data.get("codes") == 0:
        raise MigmError(f"{path}: codes (the number of image codes) must be at least 1")
    return SpecialTokens(**data)


def shard_files(folder: Path) -> list[Path]:
    """The weight files: the shards `model.safetensors.index.json` lists (plain names inside DIR, all
    present), or the single `model.safetensors`."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return [folder / "model.safetensors"]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise MigmError(f"{index}: no weight_map")
    names = sorted(set(weight_map.values()))
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise MigmError(f"{index}: shard {name!r} is not a plain file name inside the folder")
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise MigmError(f"{folder}: shard {', '.join(missing)} listed in {index.name} is missing")
    return [folder / n for n in names]


def check_folder(folder: Path, vq: bool = True) -> None:
    """Every piece of the released layout is there (the error names each missing one); vqvae/ only
    when `vq` (no decoder function was given)."""
    if not folder.is_dir():
        raise MigmError(f"--checkpoint {str(folder)!r} is not a folder (expected the model's Hugging Face folder)")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not (folder / "model.safetensors.index.json").is_file() and not (folder / "model.safetensors").is_file():
        missing.append("model.safetensors.index.json (or model.safetensors)")
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json, tokenizer_config.json)")
    if vq and not (folder / "vqvae").is_dir():
        missing.append("vqvae/ (the diffusers VQModel)")
    elif vq:
        missing += [f"vqvae/{f}" for f in ("config.json", VQ_WEIGHTS) if not (folder / "vqvae" / f).is_file()]
    if missing:
        raise MigmError(f"{folder} is not a Lumina-DiMOO folder: missing {', '.join(missing)}")


def load_tokenizer(folder: Path):
    """`AutoTokenizer` from DIR, no remote code, its logging warnings silenced."""
    AutoTokenizer = needs_package("transformers", "AutoTokenizer")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
    except Exception as e:  # transformers raises many kinds for a broken folder
        raise MigmError(f"{folder}: tokenizer not loadable ({first_line(e)})") from None
    finally:
        hf_logging.set_verbosity(level)


def tensor_digest(name: str, t: torch.Tensor) -> bytes:
    """sha256 of one stored tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.digest()


def load_shards(net: LLaDA, shards: list[Path], dtype: torch.dtype, device: str, what: str) -> dict[str, bytes]:
    """Assign the shards' tensors (`model.` prefix stripped) into a meta-device `net`, one shard at a
    time, each tensor cast to `dtype` on `device` as it is read: host memory holds about one shard,
    never an fp32 copy of the model. Keys are checked strictly from the headers before any tensor is
    read. Returns each tensor's digest over its stored bytes (for the fingerprint)."""
    from safetensors import safe_open

    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    where: dict[str, Path] = {}
    found: dict[str, tuple] = {}
    problems = []
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for key in f.keys():
                    name = key.removeprefix("model.")
                    if name in where:
                        problems.append(f"key {key} is in both {where[name].name} and {shard.name}")
                    where[name] = shard
                    found[name] = tuple(f.get_slice(key).get_shape())
        except MigmError:
            raise
        except Exception as e:  # safetensors raises its own error kinds for a damaged file
            raise MigmError(f"{shard}: not a safetensors file ({first_line(e)})") from None
    problems += key_problems(own, found)
    if problems:
        raise MigmError(f"{what}: " + "; ".join(problems))

    digests: dict[str, bytes] = {}
    for shard in shards:
        part = {}
        with safe_open(str(shard), framework="pt", device="cpu") as f:
            for key in sorted(f.keys()):
                t = f.get_tensor(key)
                name = key.removeprefix("model.")
                digests[name] = tensor_digest(name, t)
                part[name] = t.to(device=device, dtype=dtype)
                del t
        net.load_state_dict(part, strict=False, assign=True)
        del part
    return digests


def combine_fingerprint(config: dict, digests: dict[str, bytes]) -> str:
    """sha256 over the config (sorted JSON) and every tensor's digest in name order: the same for the
    same stored weights whatever the shard split, device or precision they are loaded at."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for name in sorted(digests):
        h.update(name.encode() + digests[name])
    return h.hexdigest()


def default_precision(device: str) -> str:
    """bf16 on CUDA (the 8B model is 16 GB in bf16), fp32 on the CPU."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


def max_prompt_tokens(hf: dict, tokenizer) -> int:
    """The most prompt ids (markup included) a DiMOO folder takes: the tokenizer's `model_max_length`
    when it is set (transformers writes 1e30 for unset), else the language model's
    `max_sequence_length` in config.json, else DEFAULT_MAX_PROMPT. The image part is not counted:
    its length is set by --height / --width, and RoPE runs past the text maximum at 1024 px."""
    for given in (getattr(tokenizer, "model_max_length", None), hf.get("max_sequence_length")):
        if isinstance(given, int) and not isinstance(given, bool) and 1 <= given < 10**9:
            return given
    return DEFAULT_MAX_PROMPT


def image_codes(folder: Path, special: SpecialTokens, vq: bool) -> tuple[int, int | None]:
    """V and the VQ model's channels from vqvae/config.json (`vq`), else V from special_tokens.json."""
    if not vq:
        if special.codes is None:
            raise MigmError(f"{folder}: without vqvae/, special_tokens.json must give codes (how many image codes)")
        return special.codes, None
    vq_cfg = read_json(folder / "vqvae" / "config.json")
    V = vq_cfg.get("num_vq_embeddings")
    vq_channels = vq_cfg.get("vq_embed_dim") or vq_cfg.get("latent_channels")
    if not isinstance(V, int) or V < 1 or not isinstance(vq_channels, int) or vq_channels < 1:
        raise MigmError(f"{folder / 'vqvae' / 'config.json'}: needs num_vq_embeddings and vq_embed_dim")
    if special.codes is not None and special.codes != V:
        raise MigmError(f"{folder / 'special_tokens.json'}: codes {special.codes} but vqvae/ has {V} image codes")
    return V, vq_channels


def check_vocabulary(folder: Path, special: SpecialTokens, V: int, vocab_size: int) -> None:
    """Every special id and image code is a row of the model's vocabulary."""
    ids = {k: v for k, v in asdict(special).items() if k not in ("image_offset", "codes") and v is not None}
    too_big = [f"{k}={v}" for k, v in ids.items() if v >= vocab_size]
    if special.image_offset + V > vocab_size:
        too_big.append(f"image codes {special.image_offset}..{special.image_offset + V - 1}")
    if too_big:
        raise MigmError(f"{folder}: token ids beyond the vocabulary of {vocab_size}: {', '.join(too_big)}")


def load_dimoo(
    checkpoint: str | None = None,
    height: int | None = 1024,
    width: int | None = 1024,
    device: str = "cpu",
    precision: str | None = None,
    decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    grid: tuple[int, int] | None = None,
    name: str = "dimoo",
) -> DiMOO:
    """A Lumina-DiMOO folder (see `dimoo`) at `height` x `width` pixels, loaded straight onto `device` in
    `precision` (None: bf16 on CUDA, fp32 on the CPU).

    `decoder` (image codes [B, L] -> images [B, 3, H, W]) replaces vqvae/, which may then be absent;
    V is then special_tokens.json's `codes`. `grid` (h, w) in cells, when given, replaces height and
    width (whose 16 pixels per cell are the VQ model's, not a decoder function's). `name` names the
    base and enters its fingerprint."""
    if checkpoint is None:
        raise MigmError(f"--model {name} needs --checkpoint DIR (the model's Hugging Face folder)")
    if grid is None:
        grid = grid_size(1024 if height is None else height, 1024 if width is None else width)
    precision = precision or default_precision(device)
    if precision not in DTYPES:
        raise MigmError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    folder = Path(checkpoint)
    check_folder(folder, vq=decoder is None)
    shards = shard_files(folder)
    hf = read_json(folder / "config.json")
    cfg = LLaDAConfig.from_hf(hf)
    special_file = folder / "special_tokens.json"
    special = read_special_tokens(special_file) if special_file.is_file() else SpecialTokens()
    V, vq_channels = image_codes(folder, special, vq=decoder is None)
    check_vocabulary(folder, special, V, cfg.vocab_size)
    tokenizer = load_tokenizer(folder)

    with torch.device("meta"):
        net = LLaDA(cfg)
    digests = load_shards(net, shards, DTYPES[precision], device, str(folder))
    # `codes` is left out: V says it, and fingerprints of folders without it stay as they were
    ids = {k: v for k, v in asdict(special).items() if k != "codes"}
    config = {"name": name, "llada": asdict(cfg), "special": ids, "V": V}
    vq_folder = folder / "vqvae" if decoder is None else None
    fingerprint = combine_fingerprint(config, digests)
    base = DiMOO(
        net, tokenizer, special, grid, V, vq_folder, vq_channels, fingerprint, precision, decoder=decoder, name=name
    )
    base.max_prompt = max_prompt_tokens(hf, tokenizer)
    return base
