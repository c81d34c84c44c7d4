"""aMUSEd (amused-256 / amused-512) as a text base, written only against the public interface
(`protocol.TextBase`) and run on diffusers' and transformers' own classes. `--checkpoint DIR` is the
model's diffusers folder, as downloaded or as a Hugging Face cache snapshot:

    DIR/transformer/   config.json + diffusion_pytorch_model.safetensors   (diffusers UVit2DModel)
    DIR/vqvae/         config.json + diffusion_pytorch_model.safetensors   (diffusers VQModel)
    DIR/text_encoder/  config.json + model.safetensors        (transformers CLIPTextModelWithProjection)
    DIR/tokenizer/     vocab.json + merges.txt (+ tokenizer_config.json)    (transformers CLIPTokenizer)
    DIR/scheduler/     scheduler_config.json (AmusedScheduler: mask_token_id, masking_schedule); optional,
                       default: the transformer's last vocabulary id, cosine

Weights are read as safetensors only, no remote code runs, nothing is downloaded.

Conditioning is the pipeline's (`AmusedPipeline.__call__`): a prompt is tokenized to the tokenizer's
model_max_length and encoded once (CLIP's penultimate hidden states + the projected pooled
`text_embeds`; kept per prompt, not recomputed per step), the unconditional branch is the empty prompt,
and the micro-conditioning is (width, height, crop 0, 0, aesthetic score 6). The sampling rule is
`AmusedScheduler.step` + the pipeline's guidance (`AmusedRule`).

The feature is the up block's output, one vector per image cell (D = block_out_channels, C = 0); the
head is the MLM layer (a 1×1 conv, RMSNorm, a 1×1 conv to the codebook). docs/amused.md has the
measurements behind that choice (the alternative, `feature="transformer"`, is the up block's input,
with the up block in the head). New tokens are embedded by the model's own input embedding (codebook
embedding, RMSNorm, 1×1 conv) and carry their grid positions.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from migm.trajectories.base.protocol import same_new_tokens_per_branch
from migm.trajectories.base.rules import gumbel
from migm.trajectories.checks import check_prompts
from migm.trajectories.errors import MigmError

FEATURES = ("up", "transformer")
WEIGHTS = {
    "transformer": "diffusion_pytorch_model.safetensors",
    "vqvae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
AESTHETIC_SCORE, CROP = 6, (0, 0)  # the pipeline's micro-conditioning defaults
TEXT_CACHE = 256  # prompts whose encodings are kept


# --- the sampling rule (AmusedScheduler.step + the pipeline's guidance) ------------------------------


def sample_probs(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A code per row of probabilities [..., V] by inverse CDF with uniforms u [...] (what
    `torch.multinomial(probs, 1)` draws, from migm's per-sample uniforms), summed in float64."""
    cdf = probs.double().cumsum(-1)
    return (cdf < u.unsqueeze(-1) * cdf[..., -1:]).sum(-1).clamp_(max=probs.shape[-1] - 1)


@dataclass(frozen=True)
class AmusedRule:
    """AmusedScheduler (diffusers): after step s < N−1, mask_len = max(1, min(masked − 1, floor(L·cos(π/2·
    (s+1)/N)))) cells stay masked (float32, as there; `linear`: 1 − (s+1)/N), none after the last; every
    masked cell is re-sampled each step from softmax(logits); the cells kept masked are those with the lowest
    log(p) + t_s·Gumbel (`mask_by_random_topk`), t_s = linspace(temperature, 0, N)[s] (pipeline default
    temperature (2, 0)); CFG u + s·(c − u) (default scale 10)."""

    masking_schedule: str = "cosine"

    @property
    def name(self) -> str:
        return "amused" if self.masking_schedule == "cosine" else f"amused-{self.masking_schedule}"

    def unmask_counts(self, L: int, N: int) -> list[int]:
        if not 1 <= N <= L:
            raise MigmError(f"steps must be between 1 and {L} (the number of image tokens), got {N}")
        masked, out = L, []
        for i in range(N - 1):
            ratio = (torch.tensor([[i]]) + 1) / N  # the scheduler's float32 arithmetic
            mask_ratio = torch.cos(ratio * math.pi / 2) if self.masking_schedule == "cosine" else 1 - ratio
            mask_len = (L * (1.0 * mask_ratio)).floor()
            mask_len = torch.min(torch.tensor([[masked]]) - 1, mask_len)
            keep = int(torch.max(torch.tensor([1]), mask_len))
            out.append(masked - keep)
            masked = keep
        return out + [masked]  # the last step (timestep 0) commits every cell left

    def guide(self, cond: torch.Tensor, uncond: torch.Tensor, guidance: float, s: int, N: int) -> torch.Tensor:
        return uncond + guidance * (cond - uncond)

    def choose_tokens(self, config, logits, u_sample, u_gumbel, s):
        probs = logits.softmax(dim=-1)
        sampled = sample_probs(probs, u_sample)
        selected = probs.gather(-1, sampled[..., None])[..., 0]
        t = torch.linspace(config.temperature, 0, config.steps, device=logits.device)[s]
        return sampled, torch.log(selected.clamp(1e-20)) + t * gumbel(u_gumbel)


# --- the base ------------------------------------------------------------------------------------------


class Amused:
    """aMUSEd as a `TextBase`: cond is prompt ids [R, P] (P = the tokenizer's model_max_length)."""

    text = True
    num_classes = 0
    C = 0
    image_offset = None  # the feature is the image grid: new tokens are the committed cells
    shortcut_arch = "tiny-transformer"
    scorer = score_statistics = None
    default_prompts: list[str] | None = None
    label_of = None

    def __init__(
        self,
        transformer,
        vqvae,
        text_encoder,
        tokenizer,
        rule: AmusedRule,
        mask_token_id: int,
        grid: tuple[int, int],
        fingerprint: str,
        feature: str = "up",
        name: str = "amused",
    ):
        self.name = name
        self.net = transformer.eval().requires_grad_(False)
        # used under no_grad only; their parameters keep requires_grad as diffusers loads them, because
        # CPU convolutions take another kernel without it (the decoded images moved by ~1e-7)
        self.vqvae = vqvae.eval()
        self.text_encoder = text_encoder.eval()
        self.tokenizer = tokenizer
        self.rule = rule
        self.mask_token_id = mask_token_id
        self.grid = grid
        self.fingerprint = fingerprint
        self.feature = feature
        self.precision = "fp32"
        scale = 2 ** (len(vqvae.config.block_out_channels) - 1)  # the pipeline's vae_scale_factor
        self.micro_conds = [grid[1] * scale, grid[0] * scale, *CROP, AESTHETIC_SCORE]  # width, height, crop, score
        self.sampler_defaults = {"steps": 12, "guidance": 10.0, "temperature": 2.0}
        self._text: OrderedDict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._captured: dict = {}
        hook = self.net.mlm_layer if self.feature == "up" else self.net.up_block
        hook.register_forward_pre_hook(self._capture, with_kwargs=True)

    L = property(lambda self: self.grid[0] * self.grid[1])
    D = property(lambda self: self.net.config.block_out_channels)
    V = property(lambda self: self.net.config.codebook_size)
    mask_id = property(lambda self: self.V)  # the loop's mask; the model's own mask id is mask_token_id
    device = property(lambda self: self.net.device)

    def to(self, device: str | torch.device) -> Amused:
        for m in (self.net, self.vqvae, self.text_encoder):
            m.to(device)
        self._text.clear()
        return self

    # prompts

    def _ids(self, texts: list[str]) -> torch.Tensor:
        max_length = self.tokenizer.model_max_length
        out = self.tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=max_length)
        return out.input_ids.to(self.device)

    def encode_prompts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> prompt ids [n, P] as the pipeline tokenizes them (padded to model_max_length)."""
        check_prompts(texts)
        return self._ids(list(texts))

    def null_cond(self, batch: int) -> torch.Tensor:
        """The empty prompt (the pipeline's default negative prompt) for each row."""
        return self._ids([""]).expand(batch, -1)

    @torch.no_grad()
    def text_conditioning(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt ids [R, P] -> (penultimate hidden states [R, P, E], pooled text_embeds [R, E']), each
        prompt encoded once, alone (so a row's encoding never depends on its batch)."""
        rows = []
        for row in cond.tolist():
            key = tuple(row)
            if key not in self._text:
                ids = torch.tensor([row], device=self.device)
                with torch.autocast(self.device.type, enabled=False):
                    out = self.text_encoder(ids, return_dict=True, output_hidden_states=True)
                self._text[key] = (out.hidden_states[-2][0], out.text_embeds[0])
                if len(self._text) > TEXT_CACHE:
                    self._text.popitem(last=False)
            rows.append(self._text[key])
        return torch.stack([h for h, _ in rows]), torch.stack([p for _, p in rows])

    # the forward contract

    def _capture(self, module, args, kwargs) -> None:
        self._captured = {"x": args[0], **kwargs}

    def _logits(self, out: torch.Tensor) -> torch.Tensor:
        """[R, V, h, w] -> [R, L, V] as the scheduler reshapes them."""
        return out.reshape(out.shape[0], self.V, self.L).permute(0, 2, 1)

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [R, L] (codes, mask = V), cond [R, P] -> (logits [R, L, V], feature [R, L, D]): the
        UVit2DModel called as the pipeline calls it; the feature is caught on its way into the head."""
        hidden, pooled = self.text_conditioning(cond.to(self.device))
        R = tokens.shape[0]
        ids = torch.where(tokens == self.mask_id, self.mask_token_id, tokens).to(self.device).long()
        micro = torch.tensor([self.micro_conds], device=self.device, dtype=hidden.dtype).expand(R, -1)
        out = self.net(
            ids.reshape(R, *self.grid), micro_conds=micro, pooled_text_emb=pooled, encoder_hidden_states=hidden
        )
        x = self._captured.pop("x")
        self._captured = {}
        return self._logits(out), x.permute(0, 2, 3, 1).reshape(R, self.L, -1)

    def head(self, feature: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Feature [R, L, D] -> logits [R, L, V]: the MLM layer (`feature="transformer"`: the up block, then it)."""
        R = feature.shape[0]
        x = feature.reshape(R, *self.grid, -1).permute(0, 3, 1, 2)
        if self.feature == "transformer":
            if cond is None:
                raise MigmError("this aMUSEd head needs the prompt ids (cond): its up block is conditioned")
            emb, pooled = self.model_conditioning(cond.to(feature.device))
            x = self.net.up_block(x, pooled_text_emb=pooled, encoder_hidden_states=emb, cross_attention_kwargs=None)
        return self._logits(self.net.mlm_layer(x))

    @torch.no_grad()
    def model_conditioning(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What UVit2DModel.forward makes of the text and micro-conditioning before its blocks (the same
        calls, in its order): projected hidden states and the pooled condition embedding."""
        from diffusers.models.embeddings import get_timestep_embedding

        hidden, pooled = self.text_conditioning(cond)
        net, R = self.net, cond.shape[0]
        emb = net.encoder_proj_layer_norm(net.encoder_proj(hidden))
        micro = torch.tensor([self.micro_conds], device=cond.device, dtype=hidden.dtype).expand(R, -1)
        micro = get_timestep_embedding(
            micro.flatten(), net.config.micro_cond_encode_dim, flip_sin_to_cos=True, downscale_freq_shift=0
        ).reshape(R, -1)
        pooled = net.cond_embed(torch.cat([pooled, micro], dim=1).to(net.dtype)).to(emb.dtype)
        return emb, pooled

    def feature_valid(self, cond: torch.Tensor) -> torch.Tensor:
        """Every position is real (no padding: each row is the L image cells)."""
        return torch.ones(cond.shape[0], self.L, dtype=torch.bool, device=cond.device)

    def cells(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.arange(self.L, device=cond.device).expand(cond.shape[0], self.L)

    @torch.no_grad()
    def embed(self, ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """The model's input embedding of codes [R, K] -> [R, K, D] (the 1×1 conv as a linear map);
        the positions travel beside it as grid indices (the model has no position table)."""
        e = self.net.embed
        x = e.layer_norm(e.embeddings(ids.long().to(self.device)))
        return F.linear(x, e.conv.weight[:, :, 0, 0], e.conv.bias)

    def new_tokens(
        self, new_ids: torch.Tensor, new_pos: torch.Tensor, cond: torch.Tensor, branch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return same_new_tokens_per_branch(self, new_ids, new_pos, cond)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes [B, L] -> images [B, 3, H, W] in [0, 1], as the pipeline decodes (fp32)."""
        if bool((tokens < 0).any() or (tokens >= self.V).any()):
            raise MigmError(f"decode needs image codes 0..{self.V - 1} (no masked cells)")
        B, vq = tokens.shape[0], self.vqvae
        with torch.autocast(self.device.type, enabled=False):
            out = vq.decode(
                tokens.to(self.device).long(),
                force_not_quantize=True,
                shape=(B, *self.grid, vq.config.latent_channels),
            )
        return out.sample.clip(0, 1)


# --- loading -------------------------------------------------------------------------------------------


def check_folder(folder: Path) -> None:
    """Every part of the diffusers layout is there; the error names each missing one."""
    if not folder.is_dir():
        raise MigmError(f"--checkpoint {str(folder)!r} is not a folder (expected aMUSEd's diffusers folder)")
    missing = []
    for part, weights in WEIGHTS.items():
        if not (folder / part).is_dir():
            missing.append(f"{part}/")
            continue
        missing += [f"{part}/{f}" for f in ("config.json", weights) if not (folder / part / f).is_file()]
    tok = folder / "tokenizer"
    if not (tok / "tokenizer.json").is_file() and not all((tok / f).is_file() for f in ("vocab.json", "merges.txt")):
        missing.append("tokenizer/ (vocab.json + merges.txt)")
    if missing:
        raise MigmError(f"{folder} is not an aMUSEd diffusers folder: missing {', '.join(missing)}")
    config = read_json(folder / "transformer" / "config.json")
    if config.get("_class_name", "UVit2DModel") != "UVit2DModel":
        raise MigmError(f"{folder}/transformer is a {config['_class_name']}, not aMUSEd's UVit2DModel")


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MigmError(f"{path}: not readable JSON ({first_line(e)})") from None
    if not isinstance(data, dict):
        raise MigmError(f"{path}: expected a JSON object")
    return data


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__


def folder_fingerprint(name: str, folder: Path) -> str:
    """sha256 over the name and every file the base reads (configs, tokenizer, weights), by relative path."""
    h = hashlib.sha256(name.encode())
    files = [folder / p / "config.json" for p in WEIGHTS] + [folder / p / w for p, w in WEIGHTS.items()]
    files += sorted(p for p in (folder / "tokenizer").iterdir() if p.is_file())
    files += [folder / "scheduler" / "scheduler_config.json"]
    for path in files:
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def scheduler_config(folder: Path, vocab_size: int) -> tuple[int, str]:
    """(mask_token_id, masking_schedule) from scheduler/scheduler_config.json, else the defaults."""
    path = folder / "scheduler" / "scheduler_config.json"
    config = read_json(path) if path.is_file() else {}
    mask, schedule = config.get("mask_token_id", vocab_size - 1), config.get("masking_schedule", "cosine")
    if not isinstance(mask, int) or not 0 <= mask < vocab_size or schedule not in ("cosine", "linear"):
        raise MigmError(f"{path}: needs mask_token_id below {vocab_size} and masking_schedule cosine or linear")
    return mask, schedule


def _load(cls, path: Path, **kw):
    """`cls.from_pretrained(path)`: local files, safetensors only, no remote code, no progress bars
    or warnings; errors in one line."""
    from diffusers.utils import logging as dl
    from transformers.utils import logging as tl

    levels = dl.get_verbosity(), tl.get_verbosity()
    for lib in (dl, tl):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        return cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, **kw)
    except Exception as e:  # both libraries raise many kinds for a broken folder
        raise MigmError(f"{path}: not loadable as {cls.__name__} ({first_line(e)})") from None
    finally:
        for lib, level in zip((dl, tl), levels):
            lib.set_verbosity(level)
            lib.enable_progress_bar()


def load_amused(
    checkpoint: str | None = None, height: int | None = None, width: int | None = None, feature: str = "up"
) -> Amused:
    """An aMUSEd diffusers folder (see the module docstring); `height` / `width` in pixels (default: the
    transformer's sample_size times the VQ model's downscale, as the pipeline)."""
    if checkpoint is None:
        raise MigmError("--model amused needs --checkpoint DIR (aMUSEd's diffusers folder)")
    if feature not in FEATURES:
        raise MigmError(f"feature must be one of {', '.join(FEATURES)}, got {feature!r}")
    try:
        from diffusers import UVit2DModel, VQModel
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer
    except ImportError as e:
        raise MigmError(f"--model amused needs diffusers and transformers ({first_line(e)})") from None
    folder = Path(checkpoint)
    check_folder(folder)
    transformer = _load(UVit2DModel, folder / "transformer")
    vqvae = _load(VQModel, folder / "vqvae")
    text_encoder = _load(CLIPTextModelWithProjection, folder / "text_encoder")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    except Exception as e:  # transformers raises many kinds for a broken folder
        raise MigmError(f"{folder / 'tokenizer'}: not loadable as CLIPTokenizer ({first_line(e)})") from None
    mask, schedule = scheduler_config(folder, transformer.config.vocab_size)
    scale = 2 ** (len(vqvae.config.block_out_channels) - 1)
    grid = tuple(
        transformer.config.sample_size if size is None else pixels_to_cells(name, size, scale)
        for name, size in (("height", height), ("width", width))
    )
    if feature == "transformer" and transformer.config.downsample:
        raise MigmError("feature='transformer' needs a UVit2DModel without downsampling (one vector per cell)")
    return Amused(
        transformer,
        vqvae,
        text_encoder,
        tokenizer,
        AmusedRule(schedule),
        mask,
        grid,
        folder_fingerprint("amused" if feature == "up" else f"amused:{feature}", folder),
        feature=feature,
    )


def pixels_to_cells(name: str, size: int, scale: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < scale or size % scale:
        raise MigmError(
            f"--{name} must be a positive multiple of {scale} pixels (the VQ model's downscale), got {size}"
        )
    return size // scale
