"""Lumina-DiMOO's token layout (pure functions; the base, the dataset and the pairs code share them).

Sequence of one row (image cell code k is token id k + image_offset, a masked cell is the mask id):

    prompt ids + [boa, boi] + h rows of (w image cells + newline) + [eoi, eoa]

Prompt ids are the published chat markup around the prompt, without BOS. Rows of a batch are
right-padded to the longest (prompt ids with -1). The loop sees image codes 0..V-1 and mask = V.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from migm.trajectories.errors import MigmError

SYSTEM_PROMPT = "Generate an image according to the text prompt."
UNCONDITION = "<uncondition>"
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


def prompt_text(prompt: str) -> str:
    """The published text-to-image chat markup around a prompt."""
    return f"<system>{SYSTEM_PROMPT}</system><user>{prompt}</user>"


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


def pad_rows(rows: list[list[int]], device: str | torch.device = "cpu") -> torch.Tensor:
    """Lists of ids -> LongTensor [n, longest] right-padded with -1."""
    out = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out.to(device)
