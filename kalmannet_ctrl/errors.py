"""Typed exceptions raised by kalmannet_ctrl.

Every exception subclasses a builtin (``ValueError``, ``TypeError``, ``RuntimeError`` or
``ImportError``) so that code written against the builtins keeps working, and every message names
the offending argument, what was expected and what was found.
"""

from __future__ import annotations

__all__ = [
    "BatchSizeError",
    "CheckpointError",
    "ComplexValueError",
    "DimensionError",
    "DivergenceError",
    "KalmanNetCtrlError",
    "MissingDependencyError",
    "NonFiniteError",
    "NotAnEquilibriumError",
    "NotPositiveDefiniteError",
    "NotSymmetricError",
    "ParameterError",
    "RiccatiError",
]


class KalmanNetCtrlError(Exception):
    """Base class of every exception raised on purpose by kalmannet_ctrl."""


class DimensionError(KalmanNetCtrlError, ValueError):
    """An array has the wrong number of dimensions or the wrong shape."""


class BatchSizeError(DimensionError):
    """Two arguments disagree on the batch size B."""


class ComplexValueError(KalmanNetCtrlError, TypeError):
    """A complex number or array was given where a real one is expected."""


class NonFiniteError(KalmanNetCtrlError, ValueError):
    """An array that must be finite holds NaN or inf."""


class NotSymmetricError(KalmanNetCtrlError, ValueError):
    """A covariance or weight matrix is not symmetric."""


class NotPositiveDefiniteError(KalmanNetCtrlError, ValueError):
    """A covariance or weight matrix is not positive (semi-)definite as required."""


class ParameterError(KalmanNetCtrlError, ValueError):
    """A named model parameter is unknown, or its value is out of range."""


class NotAnEquilibriumError(KalmanNetCtrlError, ValueError):
    """A point expected to be an equilibrium of the dynamics (f(x, u) = x) is not one."""


class RiccatiError(KalmanNetCtrlError, ValueError):
    """A Riccati equation has no stabilizing solution (the pair is not stabilizable/detectable)."""


class DivergenceError(KalmanNetCtrlError, RuntimeError):
    """A recursion or a training run produced non-finite numbers."""


class MissingDependencyError(KalmanNetCtrlError, ImportError):
    """An optional dependency is not installed; the message holds the pip command."""


class CheckpointError(KalmanNetCtrlError, ValueError):
    """A checkpoint file is missing, truncated, foreign or does not fit the estimator."""
