"""A controller that only estimates: zero input, the estimator running on the measurements."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..estimators.base import Estimator
from ..models.base import SystemModel
from .base import FeedbackState, ModelBasedController, check_estimator, parse_input_bounds

__all__ = ["EstimationOnly", "EstimationState"]


class EstimationState(FeedbackState):
    """Recurrent state of an :class:`EstimationOnly` controller: a
    :class:`~kalmannet_ctrl.controllers.base.FeedbackState` whose ``u_prev`` is the constant
    input (zero projected onto the bounds).

    Shapes
    ------
    u_prev : (B, n_u)
    """

    __slots__ = ()


class EstimationOnly(ModelBasedController):
    """Zero input (projected onto the actuator limits) with an estimator in the loop.

    The estimation-only use of a closed-loop benchmark: the plant runs open loop while the
    estimator filters its measurements, and :meth:`estimate` reports x̂_{t|t}, so estimators
    (Kalman filters, KalmanNet, RNNs) are compared on the same episodes as controllers.

    Parameters
    ----------
    model : SystemModel
        The model the estimator believes (it fixes n_x, n_u, n_y).
    estimator : Estimator, optional
        Default :func:`~kalmannet_ctrl.estimators.default_filter` of ``model``.
    input_bounds : (low, high), optional
        Actuator limits, scalars or (n_u,) arrays; the applied input is 0 clipped into them.

    Shapes
    ------
    predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u), the constant input;
    estimate: -> (B, n_x)

    Raises
    ------
    TypeError
        If ``model`` is not a SystemModel or ``estimator`` lacks the Estimator protocol.
    DimensionError
        If the estimator or the bounds do not match the model's dimensions.

    Examples
    --------
    >>> import numpy as np
    >>> from kalmannet_ctrl.models import lorenz
    >>> ctrl = EstimationOnly(lorenz(), input_bounds=(-1.0, 1.0))
    >>> action, state = ctrl.predict(np.zeros((4, 3), dtype=np.float32))
    >>> action.shape, float(np.abs(action).max()), tuple(ctrl.estimate(state).shape)
    ((4, 3), 0.0, (4, 3))
    """

    state_type = EstimationState

    def __init__(
        self,
        model: SystemModel,
        estimator: Estimator | None = None,
        *,
        input_bounds: tuple[Any, Any] | None = None,
    ) -> None:
        if not isinstance(model, SystemModel):
            raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
        self.model = model
        self.estimator = check_estimator(estimator, model)
        self.input_bounds = parse_input_bounds(input_bounds, model)
        self._input = self.clip(torch.zeros(model.n_u, dtype=model.dtype, device=model.device))

    def act(
        self,
        state: EstimationState,
        y: Tensor,
        *,
        episode_start: Tensor | None,
        deterministic: bool,
    ) -> tuple[Tensor, EstimationState]:
        """Estimator step with (u_{t−1}, y_t); the action is the constant input.

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        _, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
        u = self._input.expand(y.shape[0], -1)
        return u, EstimationState(est_state, u)

    def __repr__(self) -> str:
        return (
            f"EstimationOnly(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, "
            f"estimator={type(self.estimator).__name__})"
        )
