"""The model-based filter a model calls for: the Kalman filter if it is linear, else the EKF."""

from __future__ import annotations

from ..models.base import SystemModel
from ..models.linear import LinearGaussianModel
from .base import GaussianFilter
from .extended import ExtendedKalmanFilter
from .kalman import KalmanFilter

__all__ = ["default_filter"]


def default_filter(model: SystemModel) -> GaussianFilter:
    """``KalmanFilter(model)`` for a :class:`~kalmannet_ctrl.models.LinearGaussianModel`,
    ``ExtendedKalmanFilter(model)`` for any other :class:`~kalmannet_ctrl.models.SystemModel`.

    The default estimator of every output-feedback controller (LQG, MPC, the RL adapter) and of
    the estimation-only baselines.

    Shapes
    ------
    The filter's: ``step`` y (B, n_y) -> x̂ (B, n_x); ``filter`` y (B, T, n_y) -> mean
    (B, T, n_x).

    Raises
    ------
    TypeError
        If ``model`` is not a SystemModel.

    Examples
    --------
    >>> from kalmannet_ctrl.models import LinearGaussianModel, pendulum
    >>> linear = LinearGaussianModel(
    ...     A=[[1.0]], C=[[1.0]], process_cov=[[1.0]], measurement_cov=[[1.0]]
    ... )
    >>> type(default_filter(linear)).__name__
    'KalmanFilter'
    >>> type(default_filter(pendulum())).__name__
    'ExtendedKalmanFilter'
    """
    if isinstance(model, LinearGaussianModel):
        return KalmanFilter(model)
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    return ExtendedKalmanFilter(model)
