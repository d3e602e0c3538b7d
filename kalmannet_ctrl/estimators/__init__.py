"""Estimators on one protocol: Kalman, extended and unscented Kalman filters (and learned ones)."""

from .base import Estimator, FilterResult, GaussianFilter, GaussianState
from .default import default_filter
from .extended import ExtendedKalmanFilter
from .kalman import KalmanFilter, SteadyStateGain, steady_state_gain
from .kalmannet import KalmanNet, KalmanNetState
from .learned_noise import LearnedNoiseKalmanFilter
from .rnn import RNNEstimator, RNNState
from .unscented import UnscentedKalmanFilter

__all__ = [
    "Estimator",
    "ExtendedKalmanFilter",
    "FilterResult",
    "GaussianFilter",
    "GaussianState",
    "KalmanFilter",
    "KalmanNet",
    "KalmanNetState",
    "LearnedNoiseKalmanFilter",
    "RNNEstimator",
    "RNNState",
    "SteadyStateGain",
    "UnscentedKalmanFilter",
    "default_filter",
    "steady_state_gain",
]
