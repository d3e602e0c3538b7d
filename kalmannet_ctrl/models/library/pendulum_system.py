"""A torque-driven pendulum (point mass on a massless rod), integrated with RK4."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._params import _RESET_VAR, Device, Dtype, _library_function, _Noise, _selector
from ..base import NonlinearModel
from ._rk4 import _rk4_input_jacobian, _rk4_state_jacobian, _StepFunctions

__all__ = ["pendulum"]


@_library_function(
    positive=("mass", "length", "dt"),
    nonnegative=("damping", "gravity"),
    noise=_Noise(process=("process_std",), measurement=("measurement_std",), power=0.5),
)
def pendulum(
    *,
    mass: float = 1.0,
    length: float = 1.0,
    damping: float = 0.1,
    gravity: float = 9.81,
    dt: float = 0.05,
    process_std: float = 0.01,
    measurement_std: float = 0.02,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """A torque-driven pendulum (point mass on a massless rod), integrated with RK4.

    Continuous dynamics, with θ the angle from the **upright** position (θ = 0 up, θ = ±π down;
    θ grows in the direction of positive torque)::

        m l² θ̈ = m g l sin θ − b θ̇ + τ

    discretized by one classical Runge-Kutta (RK4) step of length Δt with the torque held
    constant over the step (zero-order hold). The measurement is the angle, unwrapped (no
    reduction modulo 2π): h(x) = θ. Process noise is added to the discrete state on the velocity
    only, process_cov = diag(0, process_std²) (rad²/s²; a random angular-velocity kick per step,
    i.e. a torque disturbance of std ``process_std · m l² / Δt``); measurement_cov =
    measurement_std² (rad²).

    Parameters
    ----------
    mass : float
        m (kg), > 0.
    length : float
        l (m), > 0.
    damping : float
        Viscous damping b (N·m·s/rad), >= 0.
    gravity : float
        g (m/s²), >= 0.
    dt : float
        Sampling period Δt (s), > 0.
    process_std : float
        Std of the per-step angular-velocity noise (rad/s), >= 0.
    measurement_std : float
        Std of the angle measurement noise (rad), > 0.
    x0_mean : array-like, (2,), optional
        Default zeros (upright, at rest).
    x0_cov : array-like, (2, 2), optional
        Default (0.05² / 3) I, the variance of Gymnasium's U(-0.05, 0.05) resets.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        n_x = 2, n_u = 1, n_y = 1. Exact Jacobians of the RK4 step: the stage sensitivities are
        propagated through the integrator with the hand-written partials
        ∂θ̈/∂θ = g cos θ / l, ∂θ̈/∂θ̇ = −b / (m l²), ∂θ̈/∂τ = 1 / (m l²) (see
        :func:`_rk4_step_and_jacobians`); dh/dx = [1, 0].

    Shapes
    ------
    -> model with n_x = 2, n_u = 1, n_y = 1: state x (B, 2) = (θ [rad], θ̇ [rad/s]);
    input u (B, 1) = τ [N·m]; measurement y (B, 1) = θ [rad]
    """
    inertia = mass * length * length
    steps = _pendulum_step_functions(g=gravity, l=length, b=damping, inertia=inertia, dt=dt)
    return NonlinearModel(
        **steps._asdict(),
        h=_pendulum_h,
        h_jacobian=_pendulum_h_jac,
        n_x=2,
        n_y=1,
        n_u=1,
        process_cov=np.diag([0.0, process_std**2]),
        measurement_cov=[[measurement_std**2]],
        x0_mean=x0_mean,
        x0_cov=_RESET_VAR * np.eye(2) if x0_cov is None else x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
    )


def _pendulum_step_functions(
    *, g: float, l: float, b: float, inertia: float, dt: float
) -> _StepFunctions:
    """The pendulum's RK4 step and its exact Jacobians (see :func:`pendulum`).

    The step is written on the columns θ, θ̇ (about half the tensor operations of the generic
    :func:`_rk4_step` on stacked states); the Jacobians propagate the stage sensitivities with the
    hand-written partials of φ = (θ̇, θ̈) through :func:`_rk4_state_jacobian` and
    :func:`_rk4_input_jacobian`.

    Shapes
    ------
    See :class:`_StepFunctions`, with n_x = 2 and n_u = 1.
    """

    def acceleration(theta: Tensor, omega: Tensor, torque: Tensor) -> Tensor:
        # (m g l sin θ − b θ̇ + τ) / (m l²) in four operations
        acc = torch.sin(theta).mul_(g / l)
        return acc.add_(omega, alpha=-b / inertia).add_(torque, alpha=1.0 / inertia)

    def stages(x: Tensor, u: Tensor) -> tuple[Tensor, list[Tensor]]:
        # the RK4 step on the columns θ, θ̇ (about half the tensor operations of the generic
        # _rk4_step on stacked states: this is MPPI's inner loop) and the stage angles
        theta, omega = x.unbind(-1)
        torque = u[..., 0]
        half = 0.5 * dt
        a1 = acceleration(theta, omega, torque)
        th2, om2 = torch.add(theta, omega, alpha=half), torch.add(omega, a1, alpha=half)
        a2 = acceleration(th2, om2, torque)
        th3, om3 = torch.add(theta, om2, alpha=half), torch.add(omega, a2, alpha=half)
        a3 = acceleration(th3, om3, torque)
        th4, om4 = torch.add(theta, om3, alpha=dt), torch.add(omega, a3, alpha=dt)
        a4 = acceleration(th4, om4, torque)
        d_theta = torch.add(omega, om2, alpha=2.0).add_(om3, alpha=2.0).add_(om4)
        d_omega = torch.add(a1, a2, alpha=2.0).add_(a3, alpha=2.0).add_(a4)
        x_next = torch.stack(
            [theta.add(d_theta, alpha=dt / 6.0), omega.add(d_omega, alpha=dt / 6.0)], -1
        )
        return x_next, [theta, th2, th3, th4]

    def partials(thetas: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        # (∂φ/∂x (.., 2, 2), ∂φ/∂u (.., 2, 1)) at the stage angles, φ = (θ̇, θ̈):
        # ∂θ̈/∂θ = g cos θ / l, ∂θ̈/∂θ̇ = −b / (m l²), ∂θ̈/∂τ = 1 / (m l²)
        one = torch.ones_like(thetas[0])
        zero = torch.zeros_like(one)
        dphi_du = torch.stack([zero, one * (1.0 / inertia)], -1).unsqueeze(-1)
        out = []
        for theta in thetas:
            d_acc_d_theta = (g / l) * torch.cos(theta)
            dphi_dx = torch.stack([zero, one, d_acc_d_theta, one * (-b / inertia)], -1)
            out.append((dphi_dx.unflatten(-1, (2, 2)), dphi_du))
        return out

    def f(x: Tensor, u: Tensor) -> Tensor:
        return stages(x, u)[0]

    def f_and_jacobians(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x_next, thetas = stages(x, u)
        sens = partials(thetas)
        return x_next, _rk4_state_jacobian(sens, x, dt), _rk4_input_jacobian(sens, dt)

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_state_jacobian(partials(stages(x, u)[1]), x, dt)

    def u_jac(x: Tensor, u: Tensor) -> Tensor:
        return _rk4_input_jacobian(partials(stages(x, u)[1]), dt)

    return _StepFunctions(f, f_jac, u_jac, f_and_jacobians)


def _pendulum_h(x: Tensor) -> Tensor:
    """h(x) = θ, unwrapped: (B, 2) -> (B, 1)."""
    return x[..., :1]


def _pendulum_h_jac(x: Tensor) -> Tensor:
    """dh/dx = [1, 0]: (B, 2) -> (B, 1, 2)."""
    return _selector((0,), 2, x)
