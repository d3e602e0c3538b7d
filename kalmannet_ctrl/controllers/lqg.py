"""Linear quadratic Gaussian control: any estimator followed by an LQR gain."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .._docstrings import fill
from ..estimators.base import Estimator
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ._docs import BASE_SHAPES, SCALAR_PLANT
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


@fill(base_shapes=BASE_SHAPES, scalar_plant=SCALAR_PLANT)
class LQG(ModelBasedController):
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

    def __repr__(self) -> str:
        return (
            f"LQG(n_x={self.n_x}, n_u={self.n_u}, n_y={self.n_y}, "
            f"estimator={type(self.estimator).__name__}, bounded={self.input_bounds is not None})"
        )
