"""The extended Kalman filter for nonlinear models with additive Gaussian noise."""

from __future__ import annotations

from torch import Tensor

from ..models.base import one_pass_jacobians
from .base import GaussianFilter, joseph_update

__all__ = ["ExtendedKalmanFilter"]


class ExtendedKalmanFilter(GaussianFilter):
    """Extended Kalman filter on any :class:`~kalmannet_ctrl.models.SystemModel`.

    Predict: x̂⁻ = f(x̂, u), P⁻ = F P F' + W with F = ∂f/∂x at (x̂, u). Update (Joseph form) with
    H = ∂h/∂x at x̂⁻ and innovation y − h(x̂⁻). Jacobians come from the model (exact for linear
    models and where the model overrides them, automatic differentiation otherwise). On a linear
    model it reproduces :class:`KalmanFilter`.

    Parameters
    ----------
    model : SystemModel
        The model the filter believes. Gradients flow to its tensors.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂ (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov (B, T, n_x, n_x)
    """

    def _predict(self, mean: Tensor, cov: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        m = self.model
        joint = one_pass_jacobians(m)
        if joint is not None:  # f and F from one pass (the library's RK4 models, ResidualModel)
            prior, F, _ = joint(mean, u)
        else:
            prior, F = m.f(mean, u), m.f_jacobian(mean, u)
        cov = F @ cov @ F.mT + m.process_cov
        return prior, 0.5 * (cov + cov.mT)

    def _update(self, mean: Tensor, cov: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        H = m.h_jacobian(mean)
        return joseph_update(mean, cov, y - m.h(mean), H, m.measurement_cov)

    def __repr__(self) -> str:
        return f"ExtendedKalmanFilter(model={self.model!r})"
