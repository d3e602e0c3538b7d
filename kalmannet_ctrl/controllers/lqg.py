"""Linear quadratic Gaussian control: any estimator followed by an LQR gain."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._docstrings import fill
from ..estimators.base import Estimator, GaussianState
from ..estimators.kalman import KalmanFilter
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ._docs import BASE_SHAPES, SCALAR_PLANT
from ._inputs import no_episode_start, observation_row
from .base import FeedbackState, ModelBasedController, check_estimator, parse_input_bounds
from .lqr import LQR, check_design_inputs

__all__ = ["LQG", "LQGState"]


class LQGState(FeedbackState):
    """Recurrent state of an :class:`LQG` controller: a
    :class:`~kalmannet_ctrl.controllers.base.FeedbackState` (``estimator_state``, ``u_prev``).

    Shapes
    ------
    u_prev : (B, n_u)
    """

    __slots__ = ()


class _NumpyLaw(NamedTuple):
    """u = clip(x̂ (−K)') in NumPy, and the tensors (and their versions) it was read from."""

    gain: Tensor
    bounds: tuple[Tensor, Tensor] | None
    versions: tuple[int, ...]
    u_shape: tuple[int, int]  # (1, n_u)
    neg_gain_t: np.ndarray  # (−K)' (n_x, n_u): x̂ (−K)' is −(x̂ K') to the last bit
    low: list[float] | None  # (n_u,) as floats
    high: list[float] | None


@fill(base_shapes=BASE_SHAPES, scalar_plant=SCALAR_PLANT)
class LQG(ModelBasedController):
    """Output feedback u_t = −K x̂_{t|t}: an estimator followed by the infinite-horizon LQR gain.

    With the Kalman filter of the true model this is the optimal (LQG) controller of a linear
    Gaussian system under the average quadratic cost (separation principle). With a nominal model
    it is the model-based baseline, and with a learned estimator (e.g. KalmanNet) in place of the
    Kalman filter it is the DNN-aided controller.

    At step t the estimator predicts with u_{t−1} (the previous, clipped action) and updates with
    the measurement y_t; the action is u_t = −K x̂_{t|t}, clipped to ``input_bounds`` when given.
    With a :class:`~kalmannet_ctrl.estimators.KalmanFilter`, :meth:`predict` of one NumPy
    observation that continues its episode runs in NumPy where the filter's step is a known
    affine map (its recursion from the prior, or converged): the same action and state, at a
    fraction of the per-call cost.

    Parameters
    ----------
    model : LinearGaussianModel
        The model the LQR gain is designed on (nominal or true).
    cost : QuadraticCost
        Stage cost weights Q (n_x, n_x), R (n_u, n_u).
    estimator : Estimator, optional
        Any object with the Estimator protocol (``init``/``step``/``reset``) estimating the n_x
        states of ``model``. Default: ``KalmanFilter(model)`` (time-varying gain).
    input_bounds : (low, high), optional
        Actuator limits, each a scalar or an array (n_u,) (e.g. ``(space.low, space.high)`` of a
        Gymnasium Box); infinite entries leave that side free.

    Attributes
    ----------
    lqr : LQR
        The regulator; ``lqr.gain`` is K (n_u, n_x).
    estimator : Estimator
    model, cost
    input_bounds : tuple of Tensor (n_u,), or None

    Shapes
    ------
    %(base_shapes)s

    Raises
    ------
    TypeError
        If ``model`` is not linear, ``cost`` not a QuadraticCost, or ``estimator`` lacks the
        Estimator protocol.
    DimensionError
        If the cost, the estimator or the bounds do not match the model's dimensions.
    RiccatiError
        If the control (or the default Kalman filter's) Riccati equation has no stabilizing
        solution.

    Examples
    --------
    %(scalar_plant)s
    >>> ctrl = LQG(m, cost, input_bounds=(-2.0, 2.0))
    >>> action, state = ctrl.predict(np.array([0.3], dtype=np.float32))
    >>> action.shape, action.dtype
    ((1,), dtype('float32'))
    """

    state_type = LQGState

    def __init__(
        self,
        model: LinearGaussianModel,
        cost: QuadraticCost,
        estimator: Estimator | None = None,
        *,
        input_bounds: tuple[Any, Any] | None = None,
    ) -> None:
        check_design_inputs(model, cost, "LQG")
        self.model = model
        self.cost = cost
        self.estimator = check_estimator(estimator, model)
        self.lqr = LQR(model, cost)
        self.input_bounds = parse_input_bounds(input_bounds, model)
        self._law: _NumpyLaw | None = None  # constants of the NumPy path (see _numpy_law)

    def act(
        self, state: LQGState, y: Tensor, *, episode_start: Tensor | None, deterministic: bool
    ) -> tuple[Tensor, LQGState]:
        """Estimator step with (u_{t−1}, y_t), then u_t = clip(−K x̂_{t|t}).

        Differentiable through the estimator and the gain.

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        u = self.clip(self.lqr.action(xhat).to(dtype=self.model.dtype))
        return u, LQGState(est_state, u)

    def _fast_predict(
        self, observation: Any, state: Any, episode_start: Any, deterministic: bool
    ) -> tuple[np.ndarray, LQGState] | None:
        """:meth:`predict` in NumPy for one NumPy observation that continues its episode, where
        the Kalman filter's step is a known affine map (``KalmanFilter._affine_step``: its
        recursion from the prior, or the converged filter); None elsewhere (missing or infinite
        values, resets, batches, other estimators, a gradient needed, a changed model)."""
        est = self.estimator
        if (
            not isinstance(state, LQGState)
            or not isinstance(est, KalmanFilter)
            or type(self).act is not LQG.act
            or not no_episode_start(episode_start, 1)
        ):
            return None
        row = observation_row(observation, self.model.n_y)
        step = est._affine_step(state.estimator_state)
        law = self._numpy_law()
        if (
            row is None
            or step is None
            or law is None
            or step.matrix_np.dtype != law.neg_gain_t.dtype  # an estimator in another dtype
            or state.u_prev.shape != law.u_shape
        ):
            return None
        y, single = row
        # [x̂_{t-1}, y_t, u_{t-1}] as floats: tolist is the cheapest read of a tiny tensor
        z = state.estimator_state.mean.tolist()[0] + y.tolist()[0] + state.u_prev.tolist()[0]
        if not all(map(math.isfinite, z)):  # a missing measurement, or inf
            return None
        xhat = np.array([z], dtype=law.neg_gain_t.dtype).dot(step.matrix_np)  # dot: less overhead
        u = xhat.dot(law.neg_gain_t)
        if law.low is not None and law.high is not None:  # as torch.clamp, on floats (cheaper)
            values = u.tolist()[0]
            bounded = zip(values, law.low, law.high, strict=True)
            clipped = [min(max(v, lo), hi) for v, lo, hi in bounded]
            if clipped != values:
                u[0] = clipped
        new_state = LQGState(
            GaussianState(torch.from_numpy(xhat), step.cov, None), torch.from_numpy(u)
        )
        action = u.astype(y.dtype, copy=False)
        return (action[0] if single else action), new_state

    def _numpy_law(self) -> _NumpyLaw | None:
        """The control law's constants in NumPy, kept while the gain and the bounds are the same
        tensors with the same in-place versions; None for a gain not on the CPU."""
        gain, bounds = self.lqr.gain, self.input_bounds
        if bounds is None:
            versions: tuple[int, ...] = (gain._version,)
        else:
            versions = (gain._version, bounds[0]._version, bounds[1]._version)
        law = self._law
        if (
            law is not None
            and law.gain is gain
            and law.bounds is bounds
            and law.versions == versions
        ):
            return law
        if not gain.is_cpu or gain.shape != (self.n_u, self.n_x):
            return None
        low, high = (None, None) if bounds is None else (b.tolist() for b in bounds)
        neg_gain_t = np.ascontiguousarray(-gain.detach().numpy().T)
        self._law = _NumpyLaw(gain, bounds, versions, (1, self.n_u), neg_gain_t, low, high)
        return self._law

    def __repr__(self) -> str:
        return (
            f"LQG(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, "
            f"estimator={type(self.estimator).__name__}, bounded={self.input_bounds is not None})"
        )

