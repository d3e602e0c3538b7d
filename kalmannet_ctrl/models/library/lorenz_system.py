"""The KalmanNet paper's discrete-time Lorenz attractor (Taylor-expanded), with an additive input.

The paper (Revach et al., IEEE TSP 2022) is cited in full in :mod:`.kalmannet_paper`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._geometry import rotation_matrix
from .._params import Device, Dtype, _library_function
from ..base import NonlinearModel
from .kalmannet_paper import _PAPER_NOISE

__all__ = ["lorenz"]


@_library_function(
    count=("order",),
    positive=("dt",),
    real=("sigma", "rho", "beta", "measurement_rotation_deg"),
    choices={"a_matrix": ("code", "paper")},
    noise=_PAPER_NOISE,
)
def lorenz(
    *,
    order: int = 5,
    dt: float = 0.02,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    a_matrix: str = "code",
    q2: float = 0.01,
    r2: float = 1.0,
    measurement_rotation_deg: float = 0.0,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """The KalmanNet paper's discrete-time Lorenz attractor, with an additive input.

    The Lorenz system ẋ = A(x) x is discretized by a Taylor expansion of order J of the matrix
    exponential with A frozen at the current state, plus an additive input::

        f(x, u) = Σ_{j=0}^{J} (A(x) Δt)^j / j! · x + Δt · u,    h(x) = R_h x

    with Q = q² I and R = r² I. With J → ∞ the first term tends to expm(A(x) Δt) x. The input u
    (n_u = 3, a velocity-like forcing added to ẋ over one step) lets environments steer the state;
    ``u = None`` means zero, which is the paper's autonomous model.

    Two factorizations of the same vector field A(x) x are available (they differ for J >= 2):

    - ``a_matrix="code"`` (default; what the authors' released code uses in
      ``Simulations/Lorenz_Atractor/parameters.py`` and ``model.py`` of KalmanNet/KalmanNet_TSP,
      hence what produced the published numbers)::

          A(x) = [[-σ,      σ,  0],
                  [ρ - x₃, -1,  0],
                  [x₂,      0, -β]]

    - ``a_matrix="paper"`` (as printed in the paper)::

          A(x) = [[-σ,  σ,   0],
                  [ρ,  -1, -x₁],
                  [0,  x₁,  -β]]

    (x = (x₁, x₂, x₃); σ = 10, ρ = 28, β = 8/3 in both.) The released code also fixes the
    initial state to m1x_0 = (1, 1, 1) with m2x_0 = 0, Δt = 0.02 and J = 5 (the defaults here),
    and its observation mismatch rotates h = I by 1° about each axis, H' = R_z R_y R_x
    (``measurement_rotation_deg=1.0``).

    Parameters
    ----------
    order : int
        Taylor order J (>= 1). The paper's evolution mismatch uses J = 2 in the filter.
    dt : float
        Sampling period Δt in seconds.
    sigma, rho, beta : float
        Lorenz constants.
    a_matrix : {"code", "paper"}
        Which factorization A(x) to expand (see above).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; default 1/r² = 0 dB, ν = -20 dB.
    measurement_rotation_deg : float
        Angle θ (degrees) of R_h = R_z(θ) R_y(θ) R_x(θ); 0 gives h = I.
    x0_mean : array-like, (3,), optional
        Default (1, 1, 1).
    x0_cov : array-like, (3, 3), optional
        Default zeros.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        df/dx by automatic differentiation (the exact derivative of the truncated series, not
        the matrix F(x) = Σ (A(x) Δt)^j / j!); dh/dx = R_h exactly.

    Shapes
    ------
    -> model with n_x = n_u = n_y = 3: state x (B, 3), input u (B, 3), measurement y (B, 3);
    process_cov (3, 3), measurement_cov (3, 3)
    """
    theta = measurement_rotation_deg
    R_h = (
        rotation_matrix(3, theta, (0, 1), dtype=dtype, device=device)
        @ rotation_matrix(3, theta, (2, 0), dtype=dtype, device=device)
        @ rotation_matrix(3, theta, (1, 2), dtype=dtype, device=device)
    )
    f = _lorenz_transition(
        order=order, dt=dt, sigma=sigma, rho=rho, beta=beta, paper_form=a_matrix == "paper"
    )

    def h(x: Tensor) -> Tensor:
        return x @ R_h.mT

    def h_jac(x: Tensor) -> Tensor:
        return R_h.expand(x.shape[0], 3, 3)

    return NonlinearModel(
        f,
        h,
        n_x=3,
        n_y=3,
        n_u=3,
        h_jacobian=h_jac,
        process_cov=q2 * np.eye(3),
        measurement_cov=r2 * np.eye(3),
        x0_mean=np.ones(3) if x0_mean is None else x0_mean,
        x0_cov=x0_cov,
        dt=dt,
        dtype=dtype,
        device=device,
    )


def _lorenz_transition(
    *, order: int, dt: float, sigma: float, rho: float, beta: float, paper_form: bool
) -> Callable[[Tensor, Tensor], Tensor]:
    """f(x, u) = Σ_{j=0}^{J} (A(x) Δt)^j / j! · x + Δt · u of :func:`lorenz`, J = ``order``.

    ``paper_form`` selects the paper's factorization A(x), otherwise the released code's.

    Shapes
    ------
    x : (B, 3), u : (B, 3) -> (B, 3)
    """

    def state_matrix(x: Tensor) -> Tensor:
        x1, x2, x3 = x.unbind(-1)
        zero, one = torch.zeros_like(x1), torch.ones_like(x1)
        if paper_form:
            rows = [
                [-sigma * one, sigma * one, zero],
                [rho * one, -one, -x1],
                [zero, x1, -beta * one],
            ]
        else:
            rows = [
                [-sigma * one, sigma * one, zero],
                [rho - x3, -one, zero],
                [x2, zero, -beta * one],
            ]
        return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)  # (B, 3, 3)

    def f(x: Tensor, u: Tensor) -> Tensor:
        Adt = state_matrix(x) * dt
        term, out = x, x
        for j in range(1, order + 1):  # term_j = (A dt)^j x / j!
            term = (Adt @ term.unsqueeze(-1)).squeeze(-1) / j
            out = out + term
        return out + dt * u

    return f
