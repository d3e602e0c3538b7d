"""Error measures shared by tests, benchmarks, training and the compare runner."""

from __future__ import annotations

import math
from typing import Any

from ._validation import as_tensor
from .errors import DimensionError

__all__ = ["ci95", "mse", "mse_db"]


def mse(estimate: Any, truth: Any) -> float:
    """Mean squared error over every element (trajectories, steps and state components).

    This is the KalmanNet paper's convention (a per-component mean, as ``nn.MSELoss``).

    Shapes
    ------
    estimate, truth : the same shape, e.g. (B, T, n_x)
    """
    est = as_tensor(estimate, "estimate")
    tru = as_tensor(truth, "truth", dtype=est.dtype, device=est.device)
    if est.shape != tru.shape:
        raise DimensionError(
            f"estimate: expected the shape of truth {tuple(tru.shape)}, found {tuple(est.shape)}"
        )
    return float(((est.detach() - tru.detach()) ** 2).mean())


def mse_db(estimate: Any, truth: Any) -> float:
    """:func:`mse` in decibels, 10·log10(MSE); -inf for a perfect estimate."""
    value = mse(estimate, truth)
    return 10.0 * math.log10(value) if value > 0 else -math.inf


def ci95(values: Any) -> float:
    """Half-width of the normal 95 % confidence interval of the mean of ``values`` (1.96
    standard errors); NaN for fewer than two values."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(1.96 * v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
