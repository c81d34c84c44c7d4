"""The Fréchet distance between Gaussians fitted to two feature sets: the one definition behind the digits
scorer's `frechet`, its bootstrap intervals and the image metrics' FID.

    d² = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr sqrtm(Σ₁ Σ₂),   tr sqrtm(Σ₁ Σ₂) = tr sqrtm(A Σ₁ A), A = sqrtm(Σ₂)

A·Σ₁·A is symmetric, so its root's trace is a sum over `eigvalsh`; with A computed once for a fixed
reference, each distance to it costs one eigendecomposition (the bench resamples hundreds of times)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof 1) of features [n, d], float64."""
    features = np.asarray(features, dtype=np.float64)
    return features.mean(0), np.cov(features, rowvar=False)


def frechet_to(mu: np.ndarray, sigma: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    """distance(mu1, sigma1) to the fixed Gaussian (mu, sigma)."""
    w, v = np.linalg.eigh(sigma)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace = np.trace(sigma)

    def distance(mu1: np.ndarray, sigma1: np.ndarray) -> float:
        cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sigma1 @ root), 0, None)).sum()
        return float(((mu1 - mu) ** 2).sum() + np.trace(sigma1) + trace - 2 * cross)

    return distance


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    return frechet_to(mu2, sigma2)(mu1, sigma1)
