"""Argument checks of :class:`~kalmannet_ctrl.controllers.mpc.MPC` (internal module)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..._validation import as_tensor, check_covariance, shape_str
from ...errors import DimensionError, NotAnEquilibriumError, ParameterError
from ...models.base import SystemModel
from ...models.cost import QuadraticCost
from ...models.linear import LinearGaussianModel
from ...models.linearize import linearize
from .._inputs import check_cost, check_cost_type
from ..lqr import LQR
from .ltv import LTV
from .mppi import MPPI
from .qp import QP
from .solver import Solver
from .unfolded import Unfolded

#: The solvers that a name stands for (default-configured).
SOLVER_NAMES: dict[str, type[Solver]] = {"qp": QP, "ltv": LTV, "mppi": MPPI, "unfolded": Unfolded}


def check_model_and_cost(model: Any, cost: Any) -> None:
    """A SystemModel with inputs and a QuadraticCost of its dimensions.

    Shapes
    ------
    cost: Q (n_x, n_x), R (n_u, n_u) of the model's n_x, n_u >= 1
    """
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    check_cost_type(cost)
    if model.n_u == 0:
        raise DimensionError("model: MPC needs a model with inputs (n_u >= 1), found n_u = 0")
    check_cost(cost, model)


def resolve_solver(solver: Any, model: SystemModel) -> Solver:
    """The solver object: ``solver`` itself, the default-configured one a name stands for, or
    (None) QP for a LinearGaussianModel and LTV otherwise.

    Shapes
    ------
    no tensors
    """
    if solver is None:
        return QP() if isinstance(model, LinearGaussianModel) else LTV()
    if isinstance(solver, Solver):
        return solver
    if isinstance(solver, str):
        if solver not in SOLVER_NAMES:
            raise ParameterError(
                "solver: expected None, a Solver (QP(), LTV(), MPPI(...), Unfolded(K=...)) or one "
                f"of {list(SOLVER_NAMES)}, found {solver!r}"
            )
        return SOLVER_NAMES[solver]()
    raise TypeError(
        "solver: expected None, a Solver (QP(), LTV(), MPPI(...), Unfolded(K=...)) or one of "
        f"{list(SOLVER_NAMES)}, found {type(solver).__name__}"
    )


class NumpyHook:
    """A ``cost_state`` written for NumPy arrays (like an env's), called on arrays.

    Shapes
    ------
    x (M, n_x) -> (M, n_x), in x's dtype and device
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        out = np.asarray(self.fn(x.detach().cpu().numpy()))
        return torch.as_tensor(out, device=x.device).to(dtype=x.dtype)


def check_cost_state_callable(fn: Any) -> None:
    """TypeError unless ``fn`` is callable.

    Shapes
    ------
    no tensors
    """
    if not callable(fn):
        raise TypeError(f"cost_state: expected a callable x -> c(x), found {type(fn).__name__}")


def cost_state_hook(fn: Callable[[Any], Any], model: SystemModel) -> Callable[[Tensor], Tensor]:
    """The hook as a function of tensors (NumPy-based hooks get arrays), after a probe call.

    Shapes
    ------
    hook: x (M, n_x) -> (M, n_x) (probed with M = 2)
    """
    probe = model.x0_mean.detach().expand(2, model.n_x).clone()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy code may warn about converting a tensor
        out = fn(probe)
    hook: Callable[[Tensor], Tensor] = fn
    if not isinstance(out, Tensor):
        hook = NumpyHook(fn)
        out = hook(probe)
    if tuple(out.shape) != (2, model.n_x):
        raise DimensionError(
            f"cost_state: expected an output of shape (M, {model.n_x}) for an input "
            f"(M, {model.n_x}), found {shape_str(tuple(out.shape))} for M = 2"
        )
    return hook


def terminal_weight(terminal_cost: Any, model: SystemModel, cost: QuadraticCost) -> Tensor:
    """P: zero (None), the LQR value matrix ("lqr") or the given PSD matrix, symmetrized.

    Shapes
    ------
    terminal_cost (n_x, n_x) or None or "lqr" -> (n_x, n_x)
    """
    to = dict(dtype=model.dtype, device=model.device)
    n = model.n_x
    if terminal_cost is None:
        return torch.zeros(n, n, **to)
    if isinstance(terminal_cost, str):
        if terminal_cost != "lqr":
            raise ParameterError(
                "terminal_cost: expected None, 'lqr' or an (n_x, n_x) matrix, "
                f"found {terminal_cost!r}"
            )
        if isinstance(model, LinearGaussianModel):
            linear = model
        else:
            try:
                linear = linearize(model, torch.zeros(n, **to), torch.zeros(model.n_u, **to))
            except NotAnEquilibriumError as exc:
                raise NotAnEquilibriumError(
                    "terminal_cost: 'lqr' linearizes the model at the origin (x = 0, u = 0), "
                    f"which is not an equilibrium ({exc}); pass terminal_cost=None or a matrix"
                ) from exc
        return LQR(linear, cost).value_matrix.detach().to(**to)
    P = as_tensor(terminal_cost, "terminal_cost", **to)
    check_covariance(P, "terminal_cost", n, semidefinite=True)
    return 0.5 * (P + P.mT)
