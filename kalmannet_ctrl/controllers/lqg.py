"""Linear quadratic Gaussian control: any estimator followed by an LQR gain."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, shape_str
from ..errors import DimensionError
from ..estimators.base import Estimator
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from .base import (
    as_action,
    as_observation_batch,
    check_estimator,
    episode_start_mask,
    estimator_mean,
    parse_input_bounds,
    resume_state,
)
from .lqr import LQR, check_design_inputs

__all__ = ["LQG", "LQGState"]


class LQGState(NamedTuple):
    """Recurrent state of an :class:`LQG` controller.

    Attributes
    ----------
    estimator_state :
        The estimator's state (e.g. a ``GaussianState``) after the last measurement.
    u_prev : Tensor, (B, n_u)
        The action returned at the last call (after clipping): the input the plant received,
        used by the estimator's next prediction. Zero for rows that start an episode.
    """

    estimator_state: Any
    u_prev: Tensor


class LQG:
    """Output feedback u_t = −K x̂_{t|t}: an estimator followed by the infinite-horizon LQR gain.

    With the Kalman filter of the true model this is the optimal (LQG) controller of a linear
    Gaussian system under the average quadratic cost (separation principle). With a nominal model
    it is the model-based baseline, and with a learned estimator (e.g. KalmanNet) in place of the
    Kalman filter it is the DNN-aided controller.

    At step t the estimator predicts with u_{t−1} (the previous, clipped action) and updates with
    the measurement y_t; the action is u_t = −K x̂_{t|t}, clipped to ``input_bounds`` when given.

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
    predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u);
    step: y (B, n_y) -> u (B, n_u)

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
    >>> import numpy as np
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
    >>> m = LinearGaussianModel(A=[[1.1]], B=[[1.0]], C=[[1.0]], process_cov=[[0.1]],
    ...                         measurement_cov=[[0.5]])
    >>> ctrl = LQG(m, QuadraticCost(Q=[[1.0]], R=[[0.1]]), input_bounds=(-2.0, 2.0))
    >>> action, state = ctrl.predict(np.array([0.3], dtype=np.float32))
    >>> action.shape, action.dtype
    ((1,), dtype('float32'))
    """

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

    @property
    def n_x(self) -> int:
        return self.model.n_x

    @property
    def n_u(self) -> int:
        return self.model.n_u

    @property
    def n_y(self) -> int:
        return self.model.n_y

    def init(self, batch_size: int) -> LQGState:
        """The state before the first measurement: the estimator's prior and u_prev = 0."""
        est_state = self.estimator.init(batch_size)
        u_prev = torch.zeros(batch_size, self.n_u, dtype=self.model.dtype, device=self.model.device)
        return LQGState(est_state, u_prev)

    def estimate(self, state: LQGState) -> Tensor:
        """The state estimate x̂_{t|t} behind the last action: the estimator state's ``mean``.

        Shapes
        ------
        -> (B, n_x)
        """
        return estimator_mean(state, LQGState)

    def step(
        self, state: LQGState | None, y: Any, episode_start: Any = None
    ) -> tuple[Tensor, LQGState]:
        """One control step on tensors (differentiable through the estimator and the gain).

        Parameters
        ----------
        state : LQGState or None
            From :meth:`init` or the previous step; ``None`` starts a new batch.
        y : array-like or Tensor, (B, n_y)
            Measurements y_t; a NaN in a row means no measurement (the estimator only predicts).
        episode_start : array-like of bool, (B,), optional
            Rows reset to the estimator's prior (and u_prev = 0) before this step.

        Returns
        -------
        u : Tensor, (B, n_u)
            The (clipped) action u_t, in the model's dtype.
        state : LQGState

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        y = as_tensor(y, "y", dtype=self.model.dtype, device=self.model.device)
        if y.dim() != 2 or y.shape[1] != self.n_y:
            raise DimensionError(
                f"y: expected shape (B, {self.n_y}), found {shape_str(tuple(y.shape))}"
            )
        mask = episode_start_mask(episode_start, y.shape[0], device=self.model.device)
        return self._step(state, y, mask)

    def _reset_rows(self, state: LQGState, mask: Tensor) -> LQGState:
        est_state = self.estimator.reset(state.estimator_state, mask)
        u_prev = torch.where(mask[:, None], torch.zeros_like(state.u_prev), state.u_prev)
        return LQGState(est_state, u_prev)

    def _step(
        self, state: LQGState | None, y: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, LQGState]:
        state = resume_state(state, LQGState, y.shape[0], mask, self.init, self._reset_rows)
        xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        u = self.lqr.action(xhat).to(dtype=self.model.dtype)
        if self.input_bounds is not None:
            low, high = self.input_bounds
            u = torch.clamp(u, min=low, max=high)
        return u, LQGState(est_state, u)

    def predict(
        self,
        observation: Any,
        state: LQGState | None = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, LQGState]:
        """The action for the measurement y_t, on the Controller protocol.

        Parameters
        ----------
        observation : array-like or Tensor, (n_y,) or (B, n_y)
            The measurements (NumPy float32 from a Gymnasium env, SB3 VecEnv or tensors). A NaN in
            a row means that measurement is missing: the estimator predicts only.
        state : LQGState, optional
            Returned by the previous call; ``None`` starts a new batch from the estimator's prior.
        episode_start : array-like of bool, (B,), optional
            Rows that begin a new episode: estimator reset and u_prev = 0 for those rows.
        deterministic : bool
            Ignored (the controller is deterministic).

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
            −K x̂_{t|t}, clipped to ``input_bounds``; the observation's dtype when it is a NumPy
            floating array, float64 otherwise.
        state : LQGState

        Raises
        ------
        DimensionError
            If the observation is not (n_y,) or (B, n_y).
        BatchSizeError
            If B differs from the previous call's without a reset of every row, or
            ``episode_start`` has the wrong length.
        NonFiniteError
            If the observation holds infinite values.
        """
        obs = as_observation_batch(
            observation,
            self.n_y,
            dtype=self.model.dtype,
            device=self.model.device,
            allow_nan_rows=True,
        )
        mask = episode_start_mask(episode_start, obs.value.shape[0], device=self.model.device)
        with torch.no_grad():
            u, new_state = self._step(state, obs.value, mask)
        return as_action(u, obs.single, obs.np_dtype), new_state

    def __repr__(self) -> str:
        return (
            f"LQG(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, "
            f"estimator={type(self.estimator).__name__}, bounded={self.input_bounds is not None})"
        )
