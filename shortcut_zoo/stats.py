"""The bench's statistics: bootstrap intervals of a score over the samples, and Pareto fronts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int = 0, method: str = "percentile"
) -> list[float]:
    """95% interval [low, high] of `statistic(sample indices)` over `resamples` resamples of the n samples
    with replacement (scipy's bootstrap, one seeded draw, so every row is resampled alike): `percentile`,
    or `normal`: the estimate ± 1.96 bootstrap standard errors, for a statistic that resampling biases,
    such as a Fréchet distance (a resample's repeated samples shrink its covariance, so nearly every
    resample lies above the estimate and a percentile interval would miss it; the bias itself is common
    to rows of the same sample count)."""
    import warnings

    from scipy.stats import bootstrap

    with warnings.catch_warnings():  # identical values (vanilla's agreement of 1) are a valid, zero-width interval
        warnings.simplefilter("ignore")
        result = bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=False,
            n_resamples=resamples,
            method="percentile",
            random_state=np.random.default_rng(seed),
        )
    if method == "normal":
        estimate, half = statistic(np.arange(n)), 1.959964 * float(result.standard_error)
        return [estimate - half, estimate + half]
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[bool]:
    """Which (cost, quality) points no other point beats: as cheap or cheaper and as good or better,
    strictly one of the two."""
    sign = 1 if higher_is_better else -1
    pts = [(c, sign * q) for c, q in points]
    return [not any(c2 <= c and q2 >= q and (c2 < c or q2 > q) for c2, q2 in pts) for c, q in pts]
