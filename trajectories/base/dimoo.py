"""Lumina-DiMOO (the LLaDA text-to-image family) as a base. Its token layout is in `dimoo_layout`,
ML-Cache's partial forward in `dimoo_cache`, and the loading of the model's Hugging Face folder (as a
user downloads it, shard by shard straight onto the target device and dtype) in `dimoo_loading`:

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

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from migm.trajectories.base.dimoo_cache import PartialForward
from migm.trajectories.base.dimoo_layout import (
    DEFAULT_MAX_PROMPT,
    UNCONDITION,
    SpecialTokens,
    cell_positions,
    markup_tail,
    pad_rows,
    prompt_lengths,
    prompt_text,
    sequence_ids,
    sequence_length,
)
from migm.trajectories.base.llada import LLaDA
from migm.trajectories.base.rules import DIMOO_RULE
from migm.trajectories.checks import check_prompts
from migm.trajectories.errors import MigmError, first_line


class DiMOO(PartialForward):
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
        check_prompts(texts)
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
        1) only the committed cells. new_ids [batch, k] are loop-level codes (-1: none), new_pos [batch, k]
        cell indices 0..L-1; rows r and r + batch of cond [R, P] share them. Returns emb [R, K, D],
        absolute sequence positions pos [R, K] and valid [R, K], right-padded."""
        device = self.device
        cond, branch = cond.to(device).long(), branch.to(device)
        R, P = cond.shape
        batch, k = new_ids.shape
        if R % batch:
            raise ValueError(f"{R} rows do not split into groups of the {batch} rows of new_ids")
        row = torch.arange(R, device=device) % batch
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

    # images

    def vq(self):
        """The diffusers VQModel of `vqvae/` (fp32, loaded on first use)."""
        if self._vq is None:
            self._vq = load_vq(self.vq_folder, self.device)
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
        n = tokens.shape[0]
        with torch.autocast(vq.device.type, enabled=False):
            out = vq.decode(
                tokens.to(vq.device).long().reshape(n, -1), force_not_quantize=True, shape=(n, h, w, self.vq_channels)
            )
        return out.sample.float().clip(0, 1)


def needs_package(module: str, name: str):
    """`name` from the optional package `module`, or a one-line error naming the package to install."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        raise MigmError(f"--model dimoo needs the {module} package (pip install {module})") from None


def load_vq(folder: Path, device: torch.device):
    """The diffusers VQModel of `vqvae/` (fp32) on `device`."""
    VQModel = needs_package("diffusers", "VQModel")
    try:
        vq = VQModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except Exception as e:  # diffusers raises many kinds for a broken folder
        raise MigmError(f"{folder}: not a diffusers VQModel ({first_line(e)})") from None
    return vq.eval().requires_grad_(False).to(device)
