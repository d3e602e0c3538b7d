"""Linearization of a model about an equilibrium."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._validation import as_tensor, check_finite, check_shape
from ..errors import NotAnEquilibriumError
from .base import SystemModel
from .linear import LinearGaussianModel

__all__ = ["linearize"]


def linearize(
    model: SystemModel,
    x_eq: Any,
    u_eq: Any = None,
    *,
    check_equilibrium: bool = True,
    tol: float = 1e-6,
) -> LinearGaussianModel:
    """The linear Gaussian model obtained by linearizing ``model`` about (x_eq, u_eq).

    With A = ∂f/∂x, B = ∂f/∂u and C = ∂h/∂x at (x_eq, u_eq) (the model's own Jacobians: exact
    where the model provides them, automatic differentiation otherwise), the result is

        δx_{t+1} = A δx_t + B δu_t + w_t,   δy_t = C δx_t + v_t

    in **deviation coordinates** δx = x − x_eq, δu = u − u_eq, δy = y − h(x_eq). The noise
    covariances, x0_cov and dt are kept; x0_mean is shifted to x0_mean − x_eq.

    Parameters
    ----------
    model : SystemModel
        Any model (a linear one is returned unchanged up to the shift of x0_mean).
    x_eq : array-like, (n_x,)
        The equilibrium state.
    u_eq : array-like, (n_u,), optional
        The equilibrium input (default zeros).
    check_equilibrium : bool
        Raise if ``max |f(x_eq, u_eq) − x_eq| > tol · max(1, max |x_eq|)``. Pass False to
        linearize about any point (then δx_{t+1} also carries the constant drift
        f(x_eq, u_eq) − x_eq, which the returned model omits).
    tol : float
        Tolerance of the equilibrium check.

    Returns
    -------
    LinearGaussianModel
        A (n_x, n_x), B (n_x, n_u) (None when n_u = 0), C (n_y, n_x), in the model's dtype.
        ``params`` are those of ``model``; when ``model`` has a factory, the result's factory
        rebuilds ``model`` with changed parameters and linearizes it about the same point, so
        :func:`~kalmannet_ctrl.models.mismatch.scale_parameters` works on the linear model too.

    Raises
    ------
    NotAnEquilibriumError
        (x_eq, u_eq) is not an equilibrium and ``check_equilibrium`` is True.

    Shapes
    ------
    x_eq : (n_x,), u_eq : (n_u,) -> A (n_x, n_x), B (n_x, n_u), C (n_y, n_x)
    """
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol: expected a finite number >= 0, found {tol!r}")
    dtype, device = model.dtype, model.device
    x = as_tensor(x_eq, "x_eq", dtype=dtype, device=device)
    check_shape(x, "x_eq", (model.n_x,))
    check_finite(x, "x_eq")
    if u_eq is None:
        u = torch.zeros(model.n_u, dtype=dtype, device=device)
    else:
        u = as_tensor(u_eq, "u_eq", dtype=dtype, device=device)
        check_shape(u, "u_eq", (model.n_u,))
        check_finite(u, "u_eq")
    xb, ub = x.unsqueeze(0), u.unsqueeze(0)

    if check_equilibrium:
        with torch.no_grad():
            residual = (model.f(xb, ub)[0] - x).abs().amax()
            scale = max(1.0, float(x.abs().amax()))
        if not bool(residual <= tol * scale):
            raise NotAnEquilibriumError(
                f"x_eq, u_eq: expected an equilibrium with max |f(x_eq, u_eq) - x_eq| <= "
                f"{tol * scale:.3g}, found {float(residual):.3g}; pass check_equilibrium=False "
                "to linearize about a non-equilibrium point"
            )

    A: Tensor = model.f_jacobian(xb, ub)[0]
    B: Tensor | None = model.input_jacobian(xb, ub)[0] if model.n_u > 0 else None
    C: Tensor = model.h_jacobian(xb)[0]

    factory = None
    if model.factory is not None:
        source = model

        def factory(**values: Any) -> LinearGaussianModel:
            return linearize(
                source.with_params(**values),
                x,
                u if model.n_u > 0 else None,
                check_equilibrium=check_equilibrium,
                tol=tol,
            )

    return LinearGaussianModel(
        A=A,
        B=B,
        C=C,
        process_cov=model.process_cov,
        measurement_cov=model.measurement_cov,
        x0_mean=model.x0_mean - x,
        x0_cov=model.x0_cov,
        dt=model.dt,
        dtype=dtype,
        device=device,
        params=dict(model.params),
        factory=factory,
        name=f"{model.name} (linearized)",
    )
