"""ci95 against SciPy's normal interval of the mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from kalmannet_ctrl.metrics import ci95


def test_ci95_is_the_normal_interval_half_width_of_the_mean() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, 50)
    low, high = stats.norm.interval(0.95, loc=x.mean(), scale=stats.sem(x))
    assert ci95(x) == pytest.approx((high - low) / 2, rel=2e-3)  # 1.96 vs 1.95996
    assert math.isnan(ci95([1.0]))
