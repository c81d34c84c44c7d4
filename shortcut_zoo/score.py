"""`migm score`: vanilla samples scored by the base's own scorer (digits bases) and the image metrics."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from migm.shortcut_zoo.image_metrics import ImageMetrics, image_metrics
from migm.trajectories.checks import check_int, check_seed
from migm.trajectories.errors import MigmError
from migm.trajectories.generate import cycled_conditions, cycled_prompts, sample_many
from migm.trajectories.rollout import SamplerConfig


def score(
    base,
    samples: int,
    config: SamplerConfig,
    seed: int,
    batch_size: int = 250,
    progress: Callable[[int], None] | None = None,
    prompts: list[str] | None = None,
    metrics: ImageMetrics | None = None,
) -> dict:
    """Sample `samples` images with classes (or prompts) spread evenly and score them: the base's own
    scorer (digits bases) and the image metrics asked for (FID, IS, CLIP score); `progress` counts
    samples drawn, then samples scored by the image metrics."""
    if samples < 2:
        raise MigmError(f"samples must be at least 2 (the Fréchet distance needs a covariance), got {samples}")
    check_int("--batch-size", batch_size)
    check_seed(seed)
    if base.scorer is None and metrics is None:
        raise MigmError(
            f"--model {base.name} brings no classifier scorer: give --fid-ref for FID "
            "and Inception Score, or --clip DIR for the CLIP score of a text base"
        )
    labels, cond = cycled_conditions(base, samples, prompts)
    s = sample_many(base, labels, config, seed, batch_size, progress=progress, cond=cond)
    result = {"model": base.name, "samples": samples}
    if base.scorer is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result |= base.scorer(s.tokens, s.labels)
    if metrics is not None:
        texts = cycled_prompts(base, samples, prompts)
        result |= image_metrics(metrics, base, s.tokens, texts, batch_size, progress=progress) | metrics.about
    return {**result, "latency_per_image_s": s.latency_per_image, "sampler": config.to_dict()}
