"""Neural MPC: model predictive control on the nominal model plus a learned residual."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .._docstrings import fill
from ..models.cost import QuadraticCost
from ..models.linearize import linearize
from ..models.residual import ResidualModel
from ._docs import BASE_SHAPES
from .lqr import LQR
from .mpc import MPC

__all__ = ["NeuralMPC"]


@fill(base_shapes=BASE_SHAPES)
class NeuralMPC(MPC):
    """:class:`MPC` whose prediction model is f̂(x, u) = f_nominal(x, u) + g_θ(x, u).

    The DNN-aided controller of the model-based deep learning spectrum: the designer's nominal
    model is kept and a network learns only what it misses, from transitions of the real system
    (:func:`kalmannet_ctrl.training.train_neural_mpc` runs the rounds: collect with the current
    controller plus exploration, fit g_θ, rebuild). Everything else is :class:`MPC`'s: the
    solver (:class:`~kalmannet_ctrl.controllers.mpc.LTV`, sequential linearization, by default,
    since f̂ is nonlinear, or :class:`~kalmannet_ctrl.controllers.mpc.MPPI`), box input
    bounds, warm starts, and output feedback, by default through the extended Kalman filter of
    f̂ (the learned model also sharpens the estimate).

    Parameters
    ----------
    model : ResidualModel
        The nominal model with its residual network (untrained: the nominal MPC exactly).
    cost : QuadraticCost
    horizon : int
    input_bounds, estimator, cost_state :
        As in :class:`MPC`.
    terminal_cost : None, "lqr" or array-like (n_x, n_x)
        ``"lqr"`` (default): the LQR value matrix of f̂ linearized at the origin (x = 0,
        u = 0). A learned f̂ is only approximately at rest there, so unlike :class:`MPC` the
        small offset f̂(0, 0) is ignored rather than refused.
    solver : Solver, {"ltv", "mppi"} or None
        As in :class:`MPC` (None: ``LTV()``). For MPPI,
        ``MPPI(rollout_dtype=torch.float32)`` runs the sampled rollouts through the (folded)
        network in float32, about 1.3× faster per step on the pendulum (the nominal model must
        compute in float32 too: the library's pendulum and cart-pole do).

    Raises
    ------
    TypeError
        If ``model`` is not a ResidualModel; otherwise as :class:`MPC`.

    Shapes
    ------
    solve: x (B, n_x) -> plan (B, H, n_u);
    %(base_shapes)s

    Notes
    -----
    The solver's set-up and the terminal weight are computed at construction: after training
    the residual, build a new controller (``NeuralMPC(model, ...)``) rather than reusing one.

    Examples
    --------
    >>> import numpy as np
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost, ResidualModel
    >>> nominal = LinearGaussianModel(A=[[1.0, 0.1], [0.0, 1.0]], B=[[0.0], [0.1]],
    ...                               C=[[1.0, 0.0]], process_cov=0.01 * np.eye(2),
    ...                               measurement_cov=[[0.1]])
    >>> mpc = NeuralMPC(ResidualModel(nominal, hidden=(16,)), QuadraticCost(np.eye(2), [[0.1]]),
    ...                 horizon=10, input_bounds=(-1.0, 1.0))
    >>> action, state = mpc.predict(np.array([0.5], dtype=np.float32))
    >>> mpc.solver, action.shape
    (LTV(iterations=1, line_search=False, max_qp_iterations=None), (1,))
    """

    def _check_model(self, model: Any, cost: Any) -> None:
        """A ResidualModel, then MPC's checks."""
        if not isinstance(model, ResidualModel):
            raise TypeError(
                f"model: expected a ResidualModel (nominal model + residual network), found "
                f"{type(model).__name__}; use MPC for a plain model"
            )
        super()._check_model(model, cost)

    def _terminal_weight(self, terminal_cost: Any) -> Tensor:
        """MPC's, except that "lqr" is the LQR value matrix of f̂ linearized at the origin with
        its offset f̂(0, 0) ignored."""
        if isinstance(terminal_cost, str) and terminal_cost == "lqr":
            terminal_cost = _learned_lqr_weight(self.model, self.cost)
        return super()._terminal_weight(terminal_cost)

    @property
    def residual(self) -> ResidualModel:
        """The prediction model f̂ (nominal model + residual network).

        Shapes
        ------
        f̂: x (B, n_x), u (B, n_u) -> (B, n_x)
        """
        return self.model


def _learned_lqr_weight(model: ResidualModel, cost: QuadraticCost) -> torch.Tensor:
    """LQR value matrix of the learned model linearized at the origin (offset ignored).

    Shapes
    ------
    -> (n_x, n_x)
    """
    to = dict(dtype=model.dtype, device=model.device)
    with torch.no_grad():
        linear = linearize(
            model,
            torch.zeros(model.n_x, **to),
            torch.zeros(model.n_u, **to),
            check_equilibrium=False,
        )
    return LQR(linear, cost).value_matrix.detach()
