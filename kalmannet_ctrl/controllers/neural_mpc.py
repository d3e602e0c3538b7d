"""Neural MPC: model predictive control on the nominal model plus a learned residual."""

from __future__ import annotations

from typing import Any

import torch

from ..models.cost import QuadraticCost
from ..models.linearize import linearize
from ..models.residual import ResidualModel
from .lqr import LQR
from .mpc import MPC

__all__ = ["NeuralMPC"]


class NeuralMPC(MPC):
    """:class:`MPC` whose prediction model is f̂(x, u) = f_nominal(x, u) + g_θ(x, u).

    The DNN-aided controller of the model-based deep learning spectrum: the designer's nominal
    model is kept and a network learns only what it misses, from transitions of the real system
    (:func:`kalmannet_ctrl.training.train_neural_mpc` runs the rounds: collect with the current
    controller plus exploration, fit g_θ, rebuild). Everything else is :class:`MPC`'s: the
    planner ("ltv" sequential linearization by default, since f̂ is nonlinear, or "mppi"), box
    input bounds, warm starts, and output feedback, by default through the extended Kalman
    filter of f̂ (the learned model also sharpens the estimate).

    Parameters
    ----------
    model : ResidualModel
        The nominal model with its residual network (untrained: the nominal MPC exactly).
    cost : QuadraticCost
    horizon : int
    terminal_cost : None, "lqr" or array-like (n_x, n_x)
        ``"lqr"`` (default): the LQR value matrix of f̂ linearized at the origin (x = 0,
        u = 0). A learned f̂ is only approximately at rest there, so unlike :class:`MPC` the
        small offset f̂(0, 0) is ignored rather than refused.
    **kwargs
        Every other keyword of :class:`MPC` (``input_bounds``, ``estimator``, ``solver``,
        ``cost_state``, ``samples``, ``seed``, ``rollout_dtype``, ...). For MPPI,
        ``rollout_dtype=torch.float32`` runs the sampled rollouts through the (folded) network
        in float32, about 1.3× faster per step on the pendulum (the nominal model must compute
        in float32 too: the library's pendulum and cart-pole do).

    Notes
    -----
    The condensed matrices and the terminal weight are computed at construction: after training
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
    ('ltv', (1,))
    """

    def __init__(
        self,
        model: ResidualModel,
        cost: QuadraticCost,
        horizon: int,
        *,
        terminal_cost: Any = "lqr",
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, ResidualModel):
            raise TypeError(
                f"model: expected a ResidualModel (nominal model + residual network), found "
                f"{type(model).__name__}; use MPC for a plain model"
            )
        if isinstance(terminal_cost, str) and terminal_cost == "lqr":
            terminal_cost = _learned_lqr_weight(model, cost)
        super().__init__(model, cost, horizon, terminal_cost=terminal_cost, **kwargs)

    @property
    def residual(self) -> ResidualModel:
        """The prediction model f̂ (nominal model + residual network)."""
        return self.model


def _learned_lqr_weight(model: ResidualModel, cost: QuadraticCost) -> torch.Tensor:
    """LQR value matrix of the learned model linearized at the origin (offset ignored)."""
    to = dict(dtype=model.dtype, device=model.device)
    with torch.no_grad():
        linear = linearize(
            model,
            torch.zeros(model.n_x, **to),
            torch.zeros(model.n_u, **to),
            check_equilibrium=False,
        )
    return LQR(linear, cost).value_matrix.detach()
