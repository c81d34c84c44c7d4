"""Lumina-DiMOO (the LLaDA text-to-image family) as a base: the model's Hugging Face folder as a user
downloads it, loaded shard by shard straight onto the target device and dtype.

    DIR/config.json                          LLaDA fields (d_model, n_layers, n_heads, ...)
    DIR/model.safetensors.index.json         + the shards it lists (or one model.safetensors)
    DIR/tokenizer.json, tokenizer_config.json
    DIR/special_tokens.json                  optional: overrides the released model's special ids
    DIR/vqvae/config.json + diffusion_pytorch_model.safetensors   (a diffusers VQModel)

A model whose images need no VQ model (`dimoo-digits`: grey levels as codes) is loaded with a
`decoder` function in place of vqvae/; its special_tokens.json then says how many image codes there are.

Sequence of one row (image cell code k is token id k + image_offset, a masked cell is the mask id):

    prompt ids + [boa, boi] + h rows of (w image cells + newline) + [eoi, eoa]

Prompt ids are the published chat markup around the prompt, without BOS. Rows of a batch are
right-padded to the longest, padded keys are masked and padded feature positions are zero, so a
padded row computes what it computes alone. The loop sees image codes 0..V-1 and mask = V.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

from migm.trajectories.base.llada import LLaDA, LLaDAConfig
from migm.trajectories.base.rules import DIMOO_RULE
from migm.trajectories.errors import MigmError

SYSTEM_PROMPT = "Generate an image according to the text prompt."
UNCONDITION = "<uncondition>"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VQ_WEIGHTS = "diffusion_pytorch_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# LLaDA-8B's published max_sequence_length: the prompt bound when a folder states none (dimoo-digits:
# RoPE positions and an unset tokenizer maximum)
DEFAULT_MAX_PROMPT = 4096


@dataclass(frozen=True)
class SpecialTokens:
    """Sequence-level ids of the markup tokens; defaults are the released Lumina-DiMOO's."""

    mask: int = 126336
    newline: int = 126084
    boa: int = 126354
    eoa: int = 126355
    boi: int = 126349
    eoi: int = 126350
    image_offset: int = 126356  # image code k is token id image_offset + k
    uncondition: int | None = None  # id of "<uncondition>" (informational: the tokenizer maps the text)
    codes: int | None = None  # number of image codes V; needed only without vqvae/ (whose config says it)

    @classmethod
    def from_file(cls, path: Path) -> SpecialTokens:
        """The released defaults, overridden by the keys of `special_tokens.json`."""
        data = read_json(path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MigmError(f"{path}: unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        bad = [k for k, v in data.items() if not isinstance(v, int) or isinstance(v, bool) or v < 0]
        if bad:
            raise MigmError(f"{path}: {', '.join(bad)} must be non-negative integer token ids")
        if data.get("codes") == 0:
            raise MigmError(f"{path}: codes (the number of image codes) must be at least 1")
        return cls(**data)


def prompt_text(prompt: str) -> str:
    """The published text-to-image chat markup around a prompt."""
    return f"<system>{SYSTEM_PROMPT}</system><user>{prompt}</user>"


# --- sequence helpers (pure; the dataset and pairs code reuse them) ---------------------------------


def max_prompt_tokens(hf: dict, tokenizer) -> int:
    """The most prompt ids (markup included) a DiMOO folder takes: the tokenizer's `model_max_length`
    when it is set (transformers writes 1e30 for unset), else the language model's
    `max_sequence_length` in config.json, else DEFAULT_MAX_PROMPT. The image part is not counted:
    its length is set by --height / --width, and RoPE runs past the text maximum at 1024 px."""
    for given in (getattr(tokenizer, "model_max_length", None), hf.get("max_sequence_length")):
        if isinstance(given, int) and not isinstance(given, bool) and 1 <= given < 10**9:
            return given
    return DEFAULT_MAX_PROMPT


def markup_tail(h: int, w: int) -> int:
    """Positions after the prompt: [boa, boi] + h rows of (w cells + newline) + [eoi, eoa]."""
    return 2 + h * (w + 1) + 2


def sequence_length(prompt_len: int | torch.Tensor, h: int, w: int) -> int | torch.Tensor:
    """Length of a row whose prompt (markup included) has `prompt_len` ids."""
    return prompt_len + markup_tail(h, w)


def cell_positions(prompt_len: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """prompt_len [R] -> LongTensor [R, h*w]: absolute sequence position of each image cell, row-major
    (prompt_len + 2 + r*(w+1) + c)."""
    r = torch.arange(h, device=prompt_len.device)[:, None]
    c = torch.arange(w, device=prompt_len.device)[None, :]
    offsets = (2 + r * (w + 1) + c).reshape(-1)
    return prompt_len.long()[:, None] + offsets[None, :]


def prompt_lengths(cond: torch.Tensor) -> torch.Tensor:
    """cond [R, P] prompt ids right-padded with -1 -> lengths [R]."""
    return (cond >= 0).sum(dim=1)


def sequence_ids(
    tokens: torch.Tensor, cond: torch.Tensor, special: SpecialTokens, h: int, w: int, V: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop-level tokens [R, h*w] (codes 0..V-1, mask V) and prompt ids [R, P] -> sequence ids [R, T]
    right-padded to the longest row, and valid [R, T] (False at padding). Padded ids are eoa (masked)."""
    R, device = cond.shape[0], cond.device
    p = prompt_lengths(cond)
    tail = markup_tail(h, w)
    T = int(p.max()) + tail
    ids = torch.full((R, T), special.eoa, dtype=torch.long, device=device)
    ids[:, : cond.shape[1]] = cond.long().clamp(min=0)
    template = torch.tensor(
        [special.boa, special.boi] + ([special.mask] * w + [special.newline]) * h + [special.eoi, special.eoa],
        device=device,
    )
    rel = torch.arange(T, device=device)[None, :] - p[:, None]  # position relative to the end of the prompt
    in_tail = (rel >= 0) & (rel < tail)
    ids = torch.where(in_tail, template[rel.clamp(0, tail - 1)], ids)
    tokens = tokens.to(device).long()
    cells = torch.where(tokens == V, special.mask, tokens + special.image_offset)
    ids = ids.scatter(1, cell_positions(p, h, w), cells)
    valid = rel < tail
    return ids, valid


def grid_size(height: int, width: int) -> tuple[int, int]:
    """Pixels -> token grid (h, w); sizes must be positive multiples of 16."""
    for name, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size % 16:
            raise MigmError(f"--{name} must be a positive multiple of 16 pixels (grid = size / 16), got {size}")
    return height // 16, width // 16


@dataclass
class StepCache:
    """What ML-Cache keeps between steps for R rows (both CFG branches, right-padded): per layer the
    keys and values of every position before RoPE [R, T, n_kv_heads * head_dim], the feature
    [R, T, D] (padding zero) and the largest image-code logit of every position [R, T] (float32, NaN
    at padding), each position's entries from the last step that computed it."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    feature: torch.Tensor
    top: torch.Tensor


# --- the base ---------------------------------------------------------------------------------------


class DiMOO:
    """Lumina-DiMOO as a text-conditioned `BaseModel` (see DESIGN.md, Contracts).

    `cond` is prompt ids [R, P] (markup included, right-padded with -1): `encode_prompts` for the cond
    branch, `null_cond` for the uncond branch. `C` counts the non-image positions of the cond row of
    an empty prompt (markup, boa/boi, newlines, eoi/eoa); real rows are longer by their prompt words,
    and their length is `sequence_length(prompt_len, h, w)`. The fingerprint covers the name, the
    config, the special ids and the stored weights, not the image size (L says that) nor the loaded
    precision. Images are decoded by the VQ model in `vq_folder`, or by `decoder` (codes [B, L] ->
    images) when one is given. A base may carry `default_prompts` (what scoring cycles over when no
    prompt is given) and `label_of(prompt) -> int` (the class a prompt names, for scorers); both are
    None for --model dimoo.
    """

    name = "dimoo"
    num_classes = 0
    text = True
    rule = DIMOO_RULE
    shortcut_arch = "dimoo-transformer"
    scorer = score_statistics = None  # the shipped digits base sets its classifier's
    max_prompt = DEFAULT_MAX_PROMPT  # the most prompt tokens it takes (`max_prompt_tokens`), set by the loader

    def __init__(
        self,
        net: LLaDA,
        tokenizer,
        special: SpecialTokens,
        grid: tuple[int, int],
        V: int,
        vq_folder: Path | None,
        vq_channels: int | None,
        fingerprint: str,
        precision: str,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        name: str = "dimoo",
    ):
        self.name = name
        self.decoder = decoder
        self.default_prompts: list[str] | None = None
        self.label_of: Callable[[str], int] | None = None
        self.net = net.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.special = special
        self.grid = grid
        self.V = V
        self.vq_folder = vq_folder
        self.vq_channels = vq_channels
        self.fingerprint = fingerprint
        self.precision = precision
        self.sampler_defaults = {"rule": "dimoo", "steps": 64, "guidance": 4.0, "temperature": 1.0}
        self._vq = None
        self._uncond = self._encode_one(UNCONDITION)
        self.C = len(self._encode_one("")) + markup_tail(*grid) - grid[0] * grid[1]

    L = property(lambda self: self.grid[0] * self.grid[1])
    D = property(lambda self: self.net.cfg.d_model)
    mask_id = property(lambda self: self.V)
    device = property(lambda self: self.net.transformer.wte.weight.device)
    image_offset = property(lambda self: self.special.image_offset)  # new tokens include the prompt

    def to(self, device: str | torch.device) -> DiMOO:
        self.net.to(device)
        if self._vq is not None:
            self._vq.to(device)
        return self

    # prompts

    def _encode_one(self, user_text: str) -> list[int]:
        return list(self.tokenizer(prompt_text(user_text), add_special_tokens=False)["input_ids"])

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> cond-branch prompt ids [n, P] (markup included, no BOS), right-padded with -1."""
        if not texts:
            raise MigmError("no prompts given")
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise MigmError(f"prompt {i + 1} is empty")
        rows = [self._encode_one(t) for t in texts]
        for i, ids in enumerate(rows):  # attention grows with the square of the sequence: refused, not run
            if len(ids) > self.max_prompt:
                raise MigmError(
                    f"prompt {i + 1} is {len(ids):,} tokens with its markup, more than the "
                    f"{self.max_prompt:,} {self.name} takes; shorten it"
                )
        return pad_rows(rows, self.device)

    def null_cond(self, batch: int) -> torch.Tensor:
        """Uncond-branch prompt ids [batch, P_u] ("<uncondition>" as the user text)."""
        return torch.tensor([self._uncond] * batch, dtype=torch.long, device=self.device)

    # the forward contract

    def sequences(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequence ids [R, T] and valid [R, T] of loop-level tokens [R, L] under prompt ids cond [R, P]."""
        return sequence_ids(tokens, cond.to(self.device), self.special, *self.grid, self.V)

    def feature_valid(self, cond: torch.Tensor) -> torch.Tensor:
        """Real (non-padded) feature positions [R, T] of the rows `cond` gives."""
        ends = sequence_length(prompt_lengths(cond), *self.grid)
        return torch.arange(int(ends.max()), device=cond.device)[None, :] < ends[:, None]

    def cells(self, cond: torch.Tensor) -> torch.Tensor:
        """Feature position of each image cell [R, L] of the rows `cond` gives."""
        return cell_positions(prompt_lengths(cond), *self.grid)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [R, L], cond [R, P] -> (image-code logits [R, L, V], feature [R, T, D], padding zero)."""
        ids, valid = self.sequences(tokens, cond)
        feature = self.net.features(ids, valid).masked_fill(~valid[..., None], 0)
        return self.head(feature, cond), feature

    def head(self, feature: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Feature [R, T, D] -> logits [R, L, V] at the image cells over the image-code rows of ff_out.
        No `no_grad`: a shortcut's loss may train through the (frozen) head."""
        if cond is None:
            raise MigmError("the DiMOO head needs the prompt ids (cond) to find the image cells")
        pos = cell_positions(prompt_lengths(cond).to(feature.device), *self.grid)
        cells = feature.gather(1, pos[..., None].expand(-1, -1, feature.shape[-1]))
        off = self.special.image_offset
        return F.linear(cells, self.net.transformer.ff_out.weight[off : off + self.V])

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """wte rows of sequence-level ids [R, K] -> [R, K, D]; positions unused (RoPE lives in attention)."""
        return self.net.transformer.wte(ids.long().to(self.device))

    def new_tokens(
        self, new_ids: torch.Tensor, new_pos: torch.Tensor, cond: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The shortcut's new tokens per row, as published: cond-branch rows (branch 0) get every prompt
        id (markup included) at positions 0..p-1, then the step's committed cells; uncond rows (branch
        1) only the committed cells. new_ids [B, k] are loop-level codes (-1: none), new_pos [B, k]
        cell indices 0..L-1; rows r and r+B of cond [R, P] share them. Returns emb [R, K, D],
        absolute sequence positions pos [R, K] and valid [R, K], right-padded."""
        device = self.device
        cond, branch = cond.to(device).long(), branch.to(device)
        R, P = cond.shape
        B, k = new_ids.shape
        if R % B:
            raise ValueError(f"{R} rows do not split into groups of the {B} rows of new_ids")
        row = torch.arange(R, device=device) % B
        ids_new, pos_new = new_ids.to(device).long()[row], new_pos.to(device).long()[row]
        p = prompt_lengths(cond)
        cell_pos = cell_positions(p, *self.grid).gather(1, pos_new.clamp(0, self.L - 1))
        arange_p = torch.arange(P, device=device)
        ids = torch.cat([cond.clamp(min=0), ids_new.clamp(min=0) + self.special.image_offset], dim=1)
        pos = torch.cat([arange_p.expand(R, P), cell_pos], dim=1)
        valid = torch.cat([(arange_p[None] < p[:, None]) & (branch[:, None] == 0), ids_new >= 0], dim=1)
        # move each row's real entries to the front, keeping their order
        order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
        K = int(valid.sum(1).max()) if R else 0
        ids, pos, valid = (t.gather(1, order)[:, :K] for t in (ids, pos, valid))
        ids, pos = ids.masked_fill(~valid, 0), pos.masked_fill(~valid, 0)
        emb = self.embed(ids).masked_fill(~valid[..., None], 0)
        return emb, pos, valid

    # ML-Cache: a forward that records its caches, and a partial forward that recomputes a few positions

    @torch.no_grad()
    def forward_cached(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, StepCache]:
        """`forward` (the same computation, so the same logits and feature), also returning the
        StepCache of every position."""
        ids, valid = self.sequences(tokens, cond)
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        feature = self.net.features(ids, valid, kv).masked_fill(~valid[..., None], 0)
        # the cache owns its feature (updated in place later); the caller's stays as returned
        cache = StepCache(kv, feature.clone(), self.top_logit(feature).masked_fill(~valid, torch.nan))
        return self.head(feature, cond), feature, cache

    @torch.no_grad()
    def forward_partial(
        self, tokens: torch.Tensor, cond: torch.Tensor, cache: StepCache, recompute: torch.Tensor
    ) -> torch.Tensor:
        """Recompute only the positions where `recompute` [R, T] is True (padding never is) through
        every layer, against the cached K/V of all other positions; their K/V, features and top
        logits are written into `cache` (in place). Rows recompute different counts: each row's
        positions are gathered to the front and padded to the longest. Returns a copy of the updated
        feature [R, T, D]."""
        ids, valid = self.sequences(tokens, cond)
        recompute = recompute.to(valid.device) & valid
        counts = recompute.sum(1)
        K = max(1, int(counts.max()))
        rows = torch.argsort((~recompute).to(torch.int8), dim=1, stable=True)[:, :K]  # recomputed first
        keep = torch.arange(K, device=valid.device)[None, :] < counts[:, None]
        new = self.net.features_rows(ids.gather(1, rows), rows, keep, cache.kv, valid)
        b, j = keep.nonzero(as_tuple=True)
        cache.feature[b, rows[b, j]] = new[b, j].to(cache.feature.dtype)
        cache.top[b, rows[b, j]] = self.top_logit(new)[b, j]
        return cache.feature.clone()

    def top_logit(self, feature: torch.Tensor) -> torch.Tensor:
        """Largest image-code logit at every position of feature [R, T, D] -> float32 [R, T]."""
        off = self.special.image_offset
        return F.linear(feature, self.net.transformer.ff_out.weight[off : off + self.V]).amax(-1).float()

    # images

    def vq(self):
        """The diffusers VQModel of `vqvae/` (fp32, loaded on first use)."""
        if self._vq is None:
            VQModel = _import("diffusers", "VQModel")
            try:
                vq = VQModel.from_pretrained(str(self.vq_folder), local_files_only=True, use_safetensors=True)
            except Exception as e:  # diffusers raises many kinds for a broken folder
                raise MigmError(f"{self.vq_folder}: not a diffusers VQModel ({first_line(e)})") from None
            self._vq = vq.eval().requires_grad_(False).to(self.device)
        return self._vq

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Image codes [B, L] -> images [B, 3, H, W] in [0, 1], decoded in fp32 (published: codes looked up
        in the codebook, `force_not_quantize=True`, output clipped, no rescaling)."""
        if bool((tokens < 0).any() or (tokens >= self.V).any()):
            raise MigmError(f"decode needs image codes 0..{self.V - 1} (no masked cells)")
        if self.decoder is not None:
            return self.decoder(tokens).float().clip(0, 1)
        vq = self.vq()
        h, w = self.grid
        B = tokens.shape[0]
        with torch.autocast(vq.device.type, enabled=False):
            out = vq.decode(
                tokens.to(vq.device).long().reshape(B, -1), force_not_quantize=True, shape=(B, h, w, self.vq_channels)
            )
        return out.sample.float().clip(0, 1)


def pad_rows(rows: list[list[int]], device: str | torch.device = "cpu") -> torch.Tensor:
    """Lists of ids -> LongTensor [n, longest] right-padded with -1."""
    out = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)


# --- loading ----------------------------------------------------------------------------------------


def read_json(path: Path) -> dict:
    from migm.trajectories.safe_load import load_json

    data = load_json(path)  # size, UTF-8, depth and integer limits: one line naming the file
    if not isinstance(data, dict):
        raise MigmError(f"{path}: expected a JSON object")
    return data


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else type(e).__name__) or type(e).__name__


def _import(module: str, name: str):
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        raise MigmError(f"--model dimoo needs the {module} package (pip install {module})") from None


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
    AutoTokenizer = _import("transformers", "AutoTokenizer")
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
    problems, shapes = [], []
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt", device="cpu") as f:
                for key in f.keys():
                    name = key.removeprefix("model.")
                    if name in where:
                        problems.append(f"key {key} is in both {where[name].name} and {shard.name}")
                    where[name] = shard
                    shape = tuple(f.get_slice(key).get_shape())
                    if name in own and shape != own[name]:
                        shapes.append(f"{name} {shape} != {own[name]}")
        except MigmError:
            raise
        except Exception as e:  # safetensors raises its own error kinds for a damaged file
            raise MigmError(f"{shard}: not a safetensors file ({first_line(e)})") from None
    missing = sorted(set(own) - set(where))
    extra = sorted(set(where) - set(own))
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:8]) + (" …" if len(missing) > 8 else ""))
    if extra:
        problems.append("unexpected keys: " + ", ".join(extra[:8]) + (" …" if len(extra) > 8 else ""))
    if shapes:
        problems.append("wrong shapes: " + ", ".join(shapes[:8]))
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
    """A Lumina-DiMOO folder (see the module docstring) at `height` x `width` pixels, loaded straight
    onto `device` in `precision` (None: bf16 on CUDA, fp32 on the CPU).

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
    special = SpecialTokens.from_file(special_file) if special_file.is_file() else SpecialTokens()
    if decoder is None:
        vq_cfg = read_json(folder / "vqvae" / "config.json")
        V = vq_cfg.get("num_vq_embeddings")
        vq_channels = vq_cfg.get("vq_embed_dim") or vq_cfg.get("latent_channels")
        if not isinstance(V, int) or V < 1 or not isinstance(vq_channels, int) or vq_channels < 1:
            raise MigmError(f"{folder / 'vqvae' / 'config.json'}: needs num_vq_embeddings and vq_embed_dim")
        if special.codes is not None and special.codes != V:
            raise MigmError(f"{special_file}: codes {special.codes} but vqvae/ has {V} image codes")
    else:
        V, vq_channels = special.codes, None
        if V is None:
            raise MigmError(f"{folder}: without vqvae/, special_tokens.json must give codes (how many image codes)")
    ids = {k: v for k, v in asdict(special).items() if k not in ("image_offset", "codes") and v is not None}
    too_big = [f"{k}={v}" for k, v in ids.items() if v >= cfg.vocab_size]
    if special.image_offset + V > cfg.vocab_size:
        too_big.append(f"image codes {special.image_offset}..{special.image_offset + V - 1}")
    if too_big:
        raise MigmError(f"{folder}: token ids beyond the vocabulary of {cfg.vocab_size}: {', '.join(too_big)}")
    tokenizer = load_tokenizer(folder)

    with torch.device("meta"):
        net = LLaDA(cfg)
    digests = load_shards(net, shards, DTYPES[precision], device, str(folder))
    # `codes` is left out: V says it, and fingerprints of folders without it stay as they were
    ids = {k: v for k, v in asdict(special).items() if k != "codes"}
    config = {"name": name, "llada": asdict(cfg), "special": ids, "V": V}
    base = DiMOO(
        net,
        tokenizer,
        special,
        grid,
        V,
        folder / "vqvae" if decoder is None else None,
        vq_channels,
        combine_fingerprint(config, digests),
        precision,
        decoder=decoder,
        name=name,
    )
    base.max_prompt = max_prompt_tokens(hf, tokenizer)
    return base
