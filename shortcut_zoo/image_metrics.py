"""Image quality of generated samples: FID and Inception Score (torchmetrics' metrics on torch-fidelity's
Inception-v3, as the published MaskGIT evaluation) and CLIP score (torchmetrics on a transformers CLIP
loaded from a local folder). `migm score`, `migm bench` and `migm fid-stats` call these.

- Images are scored exactly as the sampler writes them: decoded to [0, 1], then `round(255·x)` as uint8
  (`to_uint8`, the mapping of the PNG writer); the Inception resizes them to 299 px with torch-fidelity's
  TensorFlow-compatible bilinear resize (the published evaluation's; torchmetrics' `antialias=False`).
- One Inception pass per image gives both the 2048-d pool features (FID; `--fid-dims` picks an earlier
  layer for small sets) and the unbiased logits (IS).
- The Inception weights are torch-fidelity's file: `--inception-weights FILE`, else the copy torch.hub keeps
  in `$TORCH_HOME/hub/checkpoints/`, downloaded there on first use. Every load is weights-only.
- torch-fidelity's package `__init__` imports its CLIP / DINOv2 / VGG extractors, which need torchvision;
  its Inception needs only torch. torchvision is not installed beside a CPU torch (the PyPI wheels pull a
  CUDA torch), so when torch-fidelity is not imported yet its folder is registered as a bare package and
  only the Inception module is loaded from it. torchmetrics imports torch-fidelity when it is installed,
  so import torchmetrics only after `_bare_fidelity()` (every function here does).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from migm.trajectories.base.checkpoints import load_state_dict
from migm.trajectories.checks import IMAGE_EXTENSIONS, check_int, output_file
from migm.trajectories.errors import MigmError
from migm.trajectories.frechet import frechet_distance
from migm.trajectories.safe_load import load_npz, read_rgb

FEATURES = 2048  # Inception-v3 pool features: the FID space, as published
DIMS = (64, 192, 768, 2048)  # torch-fidelity's feature layers (pytorch-fid's --dims): fewer for few samples
# the release this module was tested with (pyproject's `metrics` extra, the Makefile's --no-deps install)
FIDELITY = "torch-fidelity==0.4.0"
IS_SPLITS = 10  # Inception Score: mean over 10 splits, as published


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Decoded images [B, 3, H, W] in [0, 1] -> uint8, as `save_grid` writes them to PNG."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


# --- torch-fidelity's Inception-v3 ---------------------------------------------------------------------


def _bare_fidelity() -> bool:
    """Register torch-fidelity's folder as a bare package when it is installed and not imported yet, so
    that its Inception module, and torchmetrics (which imports it), load without torchvision."""
    if "torch_fidelity" in sys.modules:
        return True
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is not None:
        sys.modules["torch_fidelity"] = importlib.util.module_from_spec(spec)  # its folder, __init__ not run
    return spec is not None


def fidelity():
    """torch-fidelity's Inception module (FeatureExtractorInceptionV3, URL_INCEPTION_V3), importable beside
    torchmetrics without torchvision (module docstring)."""
    if not _bare_fidelity():
        raise MigmError(
            f"FID / IS need torch-fidelity: `pip install --no-deps {FIDELITY}` (no torchvision; what `make` "
            f"installs), or `pip install 'migm[metrics]'` where a torchvision matching your torch can come with it"
        )
    from torch_fidelity import feature_extractor_inceptionv3

    return feature_extractor_inceptionv3


@contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every `torch.load` inside is weights-only, even one that asks for a full unpickle (torch-fidelity
    loads its weights file with `weights_only=False`): torch's documented TORCH_FORCE_WEIGHTS_ONLY_LOAD."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def cached_inception_file() -> Path:
    """Where torch.hub keeps torch-fidelity's Inception weights: `$TORCH_HOME/hub/checkpoints/NAME`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(fidelity().URL_INCEPTION_V3).name


def inception_weights_file(weights: str | None, verbose: bool = False) -> Path:
    """`--inception-weights FILE`, else torch.hub's cached copy, downloaded (hash-checked) when missing."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MigmError(f"--inception-weights {weights!r} does not exist")
        return path
    path = cached_inception_file()
    if path.is_file():
        return path
    url = fidelity().URL_INCEPTION_V3
    hash_prefix = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix and hash_prefix.group(1), progress=verbose)
    except (OSError, RuntimeError) as e:  # offline (URLError is an OSError), disk, or a hash mismatch
        why = str(getattr(e, "reason", None) or e).strip().splitlines()[0][:160]
        raise MigmError(
            f"cannot download torch-fidelity's Inception-v3 weights from {url} ({why}); fetch the file where "
            f"there is network and give --inception-weights FILE, or put it at {path}"
        ) from None
    return path


def load_inception(
    weights: str | None, device: str | torch.device = "cpu", verbose: bool = False, dims: int = FEATURES
) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 with its weights, giving (features [B, dims], unbiased logits
    [B, 1008]) of uint8 images [B, 3, H, W]; the weights file is read weights-only, by us and by it."""
    if dims not in DIMS:
        raise MigmError(f"--fid-dims must be one of {', '.join(map(str, DIMS))}, got {dims}")
    path = inception_weights_file(weights, verbose)
    load_state_dict(path, "state_dict", "torch-fidelity Inception-v3 weights file")  # refuses pickled code, names why
    with weights_only_loads():
        try:
            net = fidelity().FeatureExtractorInceptionV3(
                "inception-v3-compat", [str(dims), "logits_unbiased"], feature_extractor_weights_path=str(path)
            )
        except (RuntimeError, pickle.UnpicklingError) as e:  # missing, unexpected or mis-shaped keys
            why = str(e).strip().splitlines()
            raise MigmError(f"{path}: not torch-fidelity's Inception-v3 weights ({' '.join(why[:2])[:200]})") from None
    return net.to(device)


@torch.no_grad()
def inception_outputs(inception: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, unbiased logits) of uint8 images, on the CPU in float32."""
    device = next(inception.parameters()).device
    features, logits = inception(images.to(device))
    return features.float().cpu(), logits.float().cpu()


# --- feature statistics and FID --------------------------------------------------------------------------


@dataclass
class FeatureStats:
    """Mean and covariance (ddof 1) of a set's Inception features, float64; `n` images (0: unknown)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int = 0

    def save(self, path: str | Path) -> Path:
        """The common `.npz` (`mu`, `sigma`, as pytorch-fid and the ImageNet reference batches), plus `n`;
        written to a temporary name and renamed, so a failed write leaves nothing."""
        path = output_file(path, (".npz",), "--out")
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise MigmError(f"cannot write {path}: {e.strerror or e}") from None
        return path

    @classmethod
    def load(cls, path: str | Path, dims: int = FEATURES) -> FeatureStats:
        """A `.npz` holding `mu` [dims] and `sigma` [dims, dims] (no pickles)."""
        arrays = load_npz(path, "the FID statistics")  # numbers only, never unpickled
        mu, sigma = arrays.get("mu"), arrays.get("sigma")
        if mu is None or sigma is None:
            raise MigmError(f"{path}: FID statistics need arrays 'mu' and 'sigma', found {sorted(arrays)}")
        if mu.shape != (dims,) or sigma.shape != (dims, dims):
            raise MigmError(
                f"{path}: 'mu' {mu.shape} / 'sigma' {sigma.shape} are not statistics of {dims}-d Inception features"
                + ("" if dims == FEATURES else f" (--fid-dims {dims})")
            )
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise MigmError(f"{path}: 'mu' or 'sigma' holds a non-finite value")
        n = int(arrays["n"]) if "n" in arrays and arrays["n"].shape == () else 0
        return cls(mu.astype(np.float64), sigma.astype(np.float64), n)


def _fid_metric(dims: int):
    """torchmetrics' FID over features we extracted already (one Inception pass serves FID and IS)."""
    fidelity()
    from torchmetrics.image.fid import FrechetInceptionDistance

    features = torch.nn.Identity()
    features.num_features = dims
    metric = FrechetInceptionDistance(feature=features)
    metric.orig_dtype = torch.float64  # set by its update; read by its compute
    return metric


def _read_stats(metric, side: str) -> FeatureStats:
    """Mean and covariance of one side of torchmetrics' FID state, as its compute reads them."""
    n = int(getattr(metric, f"{side}_features_num_samples"))
    if n < 2:
        raise MigmError(f"FID needs at least 2 images per set (a covariance), got {n}")
    mean = getattr(metric, f"{side}_features_sum") / n
    sigma = (getattr(metric, f"{side}_features_cov_sum") - n * torch.outer(mean, mean)) / (n - 1)
    return FeatureStats(mean.cpu().numpy(), sigma.cpu().numpy(), n)


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """The statistics of features [n, dims], accumulated and read as torchmetrics' FID does."""
    metric = _fid_metric(features.shape[1])
    metric.update(features, real=True)
    return _read_stats(metric, "real")


def fid(ref: FeatureStats, gen: FeatureStats) -> float:
    """FID between two sets given as statistics (`trajectories.frechet`; equal to torchmetrics' own, tested)."""
    if ref.mu.shape != gen.mu.shape:
        raise MigmError(f"FID between {len(ref.mu)}-d and {len(gen.mu)}-d statistics")
    return frechet_distance(gen.mu, gen.sigma, ref.mu, ref.sigma)


def inception_score(logits: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """torchmetrics' Inception Score (mean, std over 10 splits) of unbiased logits; its split shuffle seeded."""
    fidelity()
    from torchmetrics.image.inception import InceptionScore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "saves all features in a buffer": we hand it logits only
        metric = InceptionScore(feature=torch.nn.Identity(), splits=IS_SPLITS)
    metric.update(logits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


# --- reference images --------------------------------------------------------------------------------


def reference_images(folder: str | Path) -> list[Path]:
    """The image files under `folder` (subfolders included), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MigmError(f"--fid-ref {str(folder)!r} is neither a folder of images nor a .npz of statistics")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if len(files) < 2:
        raise MigmError(f"--fid-ref {str(folder)!r} holds {len(files)} image(s); FID needs at least 2")
    return files


def read_image(path: Path) -> torch.Tensor:
    """An image file as uint8 RGB [3, H, W], used as it is (the Inception resizes it)."""
    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)  # a decompression bomb is refused


def check_reference(ref: str | Path) -> None:
    """A `--fid-ref` that exists: a .npz file, or a folder of at least 2 images."""
    if str(ref).lower().endswith(".npz"):
        if not Path(ref).is_file():
            raise MigmError(f"--fid-ref {str(ref)!r} does not exist")
    else:
        reference_images(ref)


def reference_stats(
    ref: str | Path,
    inception: torch.nn.Module,
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
    dims: int = FEATURES,
) -> FeatureStats:
    """`--fid-ref`: a `.npz` of statistics, or a folder of images whose statistics are computed here,
    `batch_size` images at a time (images of one size share a forward)."""
    check_reference(ref)
    if str(ref).lower().endswith(".npz"):
        return FeatureStats.load(ref, dims)
    check_int("--batch-size", batch_size)
    files = reference_images(ref)
    metric = _fid_metric(dims)
    for i in range(0, len(files), batch_size):
        images = [read_image(p) for p in files[i : i + batch_size]]
        by_size: dict[tuple, list[torch.Tensor]] = {}
        for im in images:
            by_size.setdefault(tuple(im.shape), []).append(im)
        for same in by_size.values():
            metric.update(inception_outputs(inception, torch.stack(same))[0], real=True)
        if progress is not None:
            progress(len(images))
    return _read_stats(metric, "real")


def fid_stats(
    folder: str | Path,
    out: str | Path,
    inception_weights: str | None = None,
    device: str = "cpu",
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
    verbose: bool = False,
    dims: int = FEATURES,
) -> dict:
    """`migm fid-stats`: the FID statistics of a folder of images, written as a `.npz` for `--fid-ref`."""
    out = output_file(out, (".npz",), "--out")
    files = reference_images(folder)
    inception = load_inception(inception_weights, device, verbose, dims)
    stats = reference_stats(folder, inception, batch_size, progress, dims)
    stats.save(out)
    return {"out": str(out), "images": len(files), "features": dims}


# --- CLIP score --------------------------------------------------------------------------------------


class ClipFeatures(torch.nn.Module):
    """A transformers CLIPModel whose `get_image_features` / `get_text_features` return the projected
    embeddings, as torchmetrics' CLIPScore expects (transformers 5 returns an output object instead)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    @staticmethod
    def _embedding(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._embedding(self.model.get_image_features(pixel_values=pixel_values))

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._embedding(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))


def load_clip(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ClipFeatures, object]:
    """A CLIP model (safetensors) and its processor from a local folder saved by `save_pretrained`; the
    image processor is the PIL one, CLIP's own preprocessing, whether or not torchvision is installed."""
    import transformers
    from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

    try:
        from transformers import CLIPImageProcessorPil as ImageProcessor  # transformers 5
    except ImportError:
        from transformers import CLIPImageProcessor as ImageProcessor  # transformers 4: PIL-based already

    if not Path(folder).is_dir():
        raise MigmError(f"--clip {str(folder)!r} is not a folder (a CLIP model saved with save_pretrained)")
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
        processor = CLIPProcessor(
            image_processor=ImageProcessor.from_pretrained(folder, local_files_only=True),
            tokenizer=AutoTokenizer.from_pretrained(folder, local_files_only=True),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise MigmError(f"--clip {str(folder)!r}: cannot load a CLIP model and processor ({why})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    return ClipFeatures(model).to(device).eval(), processor


def _clip_metric(clip: tuple[ClipFeatures, object]):
    """torchmetrics' CLIP score, max(100·cos(image, prompt), 0) averaged, on the loaded CLIP's device."""
    _bare_fidelity()  # torchmetrics' package import reaches torch-fidelity's
    from torchmetrics.multimodal.clip_score import CLIPScore

    return CLIPScore(model_name_or_path=lambda: clip).to(next(clip[0].parameters()).device)


# --- what score and bench call ---------------------------------------------------------------------------


@dataclass
class ImageMetrics:
    """The nets and reference the image metrics need, loaded once before any sampling."""

    inception: torch.nn.Module | None = None
    reference: FeatureStats | None = None
    clip: tuple | None = None
    seed: int = 0
    dims: int = FEATURES
    about: dict = field(default_factory=dict)  # what was loaded, for results JSON


def default_samples(base, metrics: ImageMetrics | None, prompts: list[str] | None) -> int:
    """Samples when --samples is not given: for image metrics on a real base, 50 per class (the published
    ImageNet evaluation: 50,000) or each prompt once (the prompt file is the sample list); else 1000."""
    if metrics is None or base.scorer is not None:
        return 1000
    if base.text:
        return max(2, len(prompts or getattr(base, "default_prompts", None) or []))
    return 50 * base.num_classes


def load_image_metrics(
    base,
    fid_ref: str | None,
    inception_weights: str | None = None,
    clip: str | None = None,
    seed: int = 0,
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
    verbose: bool = False,
    dims: int = FEATURES,
) -> ImageMetrics | None:
    """What `--fid-ref`, `--inception-weights` and `--clip` ask for, loaded and checked (None: nothing asked).
    A folder reference is read here, before any sampling, so that a bad image stops the run early."""
    if inception_weights is not None and fid_ref is None:
        raise MigmError("--inception-weights is used with --fid-ref (FID and Inception Score need a reference)")
    if clip is not None and not base.text:
        raise MigmError(f"--clip scores images against their prompts; --model {base.name} is class-conditional")
    if dims != FEATURES and fid_ref is None:
        raise MigmError("--fid-dims is used with --fid-ref")
    if fid_ref is None and clip is None:
        return None
    m = ImageMetrics(seed=seed, dims=dims)
    if fid_ref is not None:
        check_reference(fid_ref)  # before any download or load
        m.inception = load_inception(inception_weights, base.device, verbose, dims)
        m.reference = reference_stats(fid_ref, m.inception, batch_size, progress, dims)
        m.about |= {"fid_ref": str(fid_ref), "fid_ref_images": m.reference.n or None, "fid_dims": dims}
    if clip is not None:
        m.clip = load_clip(clip, base.device)
        m.about["clip"] = str(clip)
    return m


def reference_count(fid_ref: str | None) -> int:
    """Images a `--fid-ref` folder holds (0 for a .npz or none), for a progress bar."""
    if fid_ref is None or str(fid_ref).lower().endswith(".npz") or not Path(fid_ref).is_dir():
        return 0
    return len(reference_images(fid_ref))


def image_metrics(
    m: ImageMetrics,
    base,
    tokens: torch.Tensor,
    prompts: list[str] | None = None,
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """FID and Inception Score (with a reference) and CLIP score (with a CLIP model and the samples'
    prompts) of sampled tokens [n, L], decoded and scored `batch_size` at a time on the base's device."""
    check_int("--batch-size", batch_size)
    if m.clip is not None and (prompts is None or len(prompts) != len(tokens)):
        raise MigmError("CLIP score needs one prompt per sample")
    fid_metric = _fid_metric(m.dims) if m.inception is not None else None
    clip = _clip_metric(m.clip) if m.clip is not None else None
    logits = []
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i : i + batch_size].to(base.device)
        # decode a few at a time: a 512-px VQGAN decode holds GiBs of activations per dozen images
        with torch.no_grad():
            images = torch.cat([to_uint8(base.decode(t)) for t in chunk.split(8)])
            if fid_metric is not None:
                features, lg = inception_outputs(m.inception, images)
                fid_metric.update(features, real=False)
                logits.append(lg)
            if clip is not None:
                clip.update(images, prompts[i : i + batch_size])
        if progress is not None:
            progress(len(chunk))
    out = {}
    if fid_metric is not None:
        out["fid"] = fid(m.reference, _read_stats(fid_metric, "fake"))
        out["inception_score"], out["inception_score_std"] = inception_score(torch.cat(logits), m.seed)
    if clip is not None:
        out["clip_score"] = float(clip.compute())
    return out
