"""The classical Runge-Kutta (RK4) step shared by the mechanical systems, and its exact Jacobians.

:func:`_rk4_step` integrates ẋ = φ(x, u) over one sampling period with u held constant
(zero-order hold); :func:`_rk4_step_and_jacobians` gives the same step with df/dx and df/du by
forward-mode differentiation of the integrator's stages, from hand-written partials of φ;
:func:`_rk4_discretization` bundles the step and its Jacobians as a model's functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

Dynamics = Callable[[Tensor, Tensor], Tensor]
Partials = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def _rk4_step(
    dynamics: Callable[[Tensor, Tensor], Tensor], x: Tensor, u: Tensor, dt: float
) -> Tensor:
    """One classical Runge-Kutta step of ẋ = dynamics(x, u) with u held constant.

    Written with scaled additions (``torch.add(a, b, alpha=c)`` = a + c b), so that a step is
    few tensor operations: at the batch sizes of MPPI rollouts their count, not arithmetic,
    sets the time.
    """
    k1 = dynamics(x, u)
    k2 = dynamics(torch.add(x, k1, alpha=0.5 * dt), u)
    k3 = dynamics(torch.add(x, k2, alpha=0.5 * dt), u)
    k4 = dynamics(torch.add(x, k3, alpha=dt), u)
    return _rk4_combine(x, k1, k2, k3, k4, dt)


def _rk4_combine(x: Tensor, k1: Tensor, k2: Tensor, k3: Tensor, k4: Tensor, dt: float) -> Tensor:
    """x + Δt/6 (k1 + 2 k2 + 2 k3 + k4)."""
    slope = torch.add(k1, k2, alpha=2.0).add_(k3, alpha=2.0).add_(k4)
    return torch.add(x, slope, alpha=dt / 6.0)


def _rk4_step_and_jacobians(
    partials: Partials, x: Tensor, u: Tensor, dt: float
) -> tuple[Tensor, Tensor, Tensor]:
    """One RK4 step (as :func:`_rk4_step`) and its exact Jacobians in x and u.

    ``partials(x, u)`` returns φ(x, u) (computed exactly as ``dynamics``, so the step is
    bit-for-bit that of :func:`_rk4_step`), ∂φ/∂x and ∂φ/∂u, written by hand. With the stage
    points x_1 = x, x_2 = x + Δt/2 k_1, x_3 = x + Δt/2 k_2, x_4 = x + Δt k_3 and k_i = φ(x_i, u),
    the sensitivities follow the stages (forward-mode differentiation of the integrator)::

        dk_i/dx = ∂φ/∂x(x_i, u) · dx_i/dx
        dk_i/du = ∂φ/∂x(x_i, u) · dx_i/du + ∂φ/∂u(x_i, u)
        df/dx   = I + Δt/6 (dk_1/dx + 2 dk_2/dx + 2 dk_3/dx + dk_4/dx), likewise df/du

    so the result equals automatic differentiation of the step up to rounding, and stays
    differentiable (in x and u) when gradients are on.

    Shapes
    ------
    x : (B, n_x), u : (B, n_u) -> (f (B, n_x), df/dx (B, n_x, n_x), df/du (B, n_x, n_u))
    """
    x_next, stages = _rk4_stages(partials, x, u, dt)
    return x_next, _rk4_state_jacobian(stages, x, dt), _rk4_input_jacobian(stages, dt)


def _rk4_stages(
    partials: Partials, x: Tensor, u: Tensor, dt: float
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """The RK4 step and (∂φ/∂x, ∂φ/∂u) at its four stage points (see above)."""
    half = 0.5 * dt
    k1, A1, G1 = partials(x, u)
    k2, A2, G2 = partials(torch.add(x, k1, alpha=half), u)
    k3, A3, G3 = partials(torch.add(x, k2, alpha=half), u)
    k4, A4, G4 = partials(torch.add(x, k3, alpha=dt), u)
    x_next = _rk4_combine(x, k1, k2, k3, k4, dt)
    return x_next, [(A1, G1), (A2, G2), (A3, G3), (A4, G4)]


def _rk4_state_jacobian(stages: list[tuple[Tensor, Tensor]], x: Tensor, dt: float) -> Tensor:
    """df/dx of the RK4 step: dx_1/dx = I, dx_{i+1}/dx = I + c_i dk_i/dx (c = Δt/2, Δt/2, Δt)."""
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    return eye + _rk4_tangent(stages, [A for A, _ in stages], dt)


def _rk4_input_jacobian(stages: list[tuple[Tensor, Tensor]], dt: float) -> Tensor:
    """df/du of the RK4 step: dx_1/du = 0, dx_{i+1}/du = c_i dk_i/du (c = Δt/2, Δt/2, Δt)."""
    return _rk4_tangent(stages, [G for _, G in stages], dt)


def _rk4_tangent(stages: list[tuple[Tensor, Tensor]], direct: list[Tensor], dt: float) -> Tensor:
    """Δt/6 (dk_1 + 2 dk_2 + 2 dk_3 + dk_4), the stage sensitivities in one direction.

    dk_1 = D_1 and dk_{i+1} = D_{i+1} + c_i A_{i+1} dk_i (c = Δt/2, Δt/2, Δt), with A_i = ∂φ/∂x
    at stage i and ``direct`` D_i the stage's own term: A_i for df/dx, ∂φ/∂u for df/du.
    """
    half = 0.5 * dt
    dk = direct[0]
    total = dk
    later = zip(stages[1:], direct[1:], (half, half, dt), (2.0, 2.0, 1.0), strict=True)
    for (A, _), D, c, weight in later:
        dk = D + c * (A @ dk)
        total = torch.add(total, dk, alpha=weight)
    return (dt / 6.0) * total


class _StepFunctions(NamedTuple):
    """A discrete-time model's transition and its Jacobians, as :class:`NonlinearModel` takes them.

    Shapes
    ------
    f : x (B, n_x), u (B, n_u) -> (B, n_x); f_jacobian : -> (B, n_x, n_x);
    input_jacobian : -> (B, n_x, n_u); f_and_jacobians : -> the three together
    """

    f: Callable[[Tensor, Tensor], Tensor]
    f_jacobian: Callable[[Tensor, Tensor], Tensor]
    input_jacobian: Callable[[Tensor, Tensor], Tensor]
    f_and_jacobians: Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def _rk4_discretization(dynamics: Dynamics, partials: Partials, dt: float) -> _StepFunctions:
    """The RK4 step of ẋ = ``dynamics(x, u)`` and its exact Jacobians from ``partials``.

    ``partials(x, u)`` returns (φ, ∂φ/∂x, ∂φ/∂u) with φ computed by the same operations as
    ``dynamics`` (see :func:`_rk4_step_and_jacobians`).

    Shapes
    ------
    See :class:`_StepFunctions`.
    """

    def f(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_step(dynamics, x, u, dt)

    def f_and_jacobians(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return _rk4_step_and_jacobians(partials, x, u, dt)

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_state_jacobian(_rk4_stages(partials, x, u, dt)[1], x, dt)

    def u_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_input_jacobian(_rk4_stages(partials, x, u, dt)[1], dt)

    return _StepFunctions(f, f_jac, u_jac, f_and_jacobians)
