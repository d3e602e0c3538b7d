"""A Kalman filter whose noise covariances are learned from data (learned optimization)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import as_tensor
from ..errors import DimensionError
from ..models.base import SystemModel
from ..models.linear import LinearGaussianModel
from .base import FilterResult, GaussianState
from .extended import ExtendedKalmanFilter
from .kalman import KalmanFilter

__all__ = ["LearnedNoiseKalmanFilter"]

_JITTER = 1e-9


def _inv_softplus(x: Tensor) -> Tensor:
    return x + torch.log(-torch.expm1(-x))


class _CholeskyCov(nn.Module):
    """A covariance P = L Lᵀ + εI with L lower triangular and a softplus-positive diagonal."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        n = init.shape[-1]
        sym = 0.5 * (init + init.mT) + _JITTER * torch.eye(n, dtype=init.dtype)
        L = torch.linalg.cholesky(sym)
        raw = torch.tril(L, -1) + torch.diag(_inv_softplus(torch.diagonal(L).clamp_min(1e-6)))
        self.raw = nn.Parameter(raw.detach().clone())

    def factor(self) -> Tensor:
        return torch.tril(self.raw, -1) + torch.diag(
            nn.functional.softplus(torch.diagonal(self.raw))
        )

    def forward(self) -> Tensor:
        L = self.factor()
        n = L.shape[-1]
        return L @ L.mT + _JITTER * torch.eye(n, dtype=L.dtype, device=L.device)


class LearnedNoiseKalmanFilter(nn.Module):
    """A KF (or EKF) on the nominal model whose process and measurement covariances are trained.

    The model-based filter keeps its structure and the nominal f, h; only W = process_cov and
    V = measurement_cov are parameters, Cholesky-parametrized (lower-triangular factors with a
    softplus diagonal, so they stay symmetric positive definite), initialised at the nominal
    model's values. It is the "learned optimization" method of the model-based deep learning
    spectrum and the fair baseline a learned filter must beat (Greenberg et al. 2023). Train it
    with :func:`kalmannet_ctrl.training.fit`, on state labels (``loss="state"``), on predicted
    measurements (``"measurement"``) or by maximum likelihood of the innovations (``"nll"``,
    :meth:`nll`), which alone identifies the covariances' scale as well as the gain.

    Parameters
    ----------
    model : SystemModel
        The nominal model; a :class:`LinearGaussianModel` gets a Kalman filter, any other model
        an extended Kalman filter (or force ``filter="ekf"``).
    filter : {"auto", "kf", "ekf"}
    init_process_cov, init_measurement_cov : array-like, optional
        Starting values (default the model's; a singular matrix gets a 1e-9 jitter).

    Shapes
    ------
    As :class:`KalmanFilter`: filter y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x),
    cov (B, T, n_x, n_x).
    """

    def __init__(
        self,
        model: SystemModel,
        *,
        filter: str = "auto",
        init_process_cov: Any = None,
        init_measurement_cov: Any = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, SystemModel):
            raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
        if filter not in ("auto", "kf", "ekf"):
            raise ValueError(f"filter: expected 'auto', 'kf' or 'ekf', found {filter!r}")
        if filter == "kf" and not isinstance(model, LinearGaussianModel):
            raise TypeError(
                f"model: filter='kf' needs a LinearGaussianModel, found {type(model).__name__}"
            )
        self.kind = (
            filter
            if filter != "auto"
            else ("kf" if isinstance(model, LinearGaussianModel) else "ekf")
        )
        self.model = model
        W = (
            model.process_cov
            if init_process_cov is None
            else as_tensor(
                init_process_cov, "init_process_cov", dtype=model.dtype, device=model.device
            )
        )
        V = (
            model.measurement_cov
            if init_measurement_cov is None
            else as_tensor(
                init_measurement_cov, "init_measurement_cov", dtype=model.dtype, device=model.device
            )
        )
        if W.shape != (model.n_x, model.n_x):
            raise DimensionError(
                f"init_process_cov: expected shape ({model.n_x}, {model.n_x}), "
                f"found {tuple(W.shape)}"
            )
        if V.shape != (model.n_y, model.n_y):
            raise DimensionError(
                f"init_measurement_cov: expected shape ({model.n_y}, {model.n_y}), "
                f"found {tuple(V.shape)}"
            )
        self.process = _CholeskyCov(W.detach())
        self.measurement = _CholeskyCov(V.detach())

    @property
    def n_x(self) -> int:
        """The state dimension of the model."""
        return self.model.n_x

    def process_cov(self) -> Tensor:
        """The current W, differentiable in the parameters.

        Shapes
        ------
        -> (n_x, n_x)
        """
        return self.process()

    def measurement_cov(self) -> Tensor:
        """The current V, differentiable in the parameters.

        Shapes
        ------
        -> (n_y, n_y)
        """
        return self.measurement()

    def current_filter(self) -> KalmanFilter | ExtendedKalmanFilter:
        """The model-based filter with the current covariances (differentiable in them).

        Shapes
        ------
        -> filter on the model with process_cov (n_x, n_x), measurement_cov (n_y, n_y)
        """
        model = self.model.replace(process_cov=self.process(), measurement_cov=self.measurement())
        return KalmanFilter(model) if self.kind == "kf" else ExtendedKalmanFilter(model)

    # -- the Estimator protocol ---------------------------------------------------------------
    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> GaussianState:
        """The prior of x_0, as :meth:`GaussianFilter.init` of the current filter.

        Shapes
        ------
        x0_mean : (n_x,) or (B, n_x), x0_cov : (n_x, n_x) or (B, n_x, n_x)
        -> GaussianState(mean (B, n_x), cov (n_x, n_x) or (B, n_x, n_x), fresh (B,))
        """
        return self.current_filter().init(batch_size, x0_mean=x0_mean, x0_cov=x0_cov)

    def step(
        self, state: GaussianState, y: Any, u_prev: Any = None
    ) -> tuple[Tensor, GaussianState]:
        """One predict (with u_{t-1}) and update (with y_t) of the current filter.

        Shapes
        ------
        y : (B, n_y), a NaN row means no measurement; u_prev : (B, n_u) or None
        -> x̂_{t|t} (B, n_x) and the new state
        """
        return self.current_filter().step(state, y, u_prev)

    def filter(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Filter a batch of sequences with the current covariances (differentiable in them).

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov (B, T, n_x, n_x)
        """
        return self.current_filter().filter(y, u, x0_mean=x0_mean, x0_cov=x0_cov)

    def forward(self, y: Any, u: Any = None) -> FilterResult:
        """Same as :meth:`filter`.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov (B, T, n_x, n_x)
        """
        return self.filter(y, u)

    def reset(self, state: GaussianState, mask: Any) -> GaussianState:
        """Restart the rows where ``mask`` is True from the model's prior of x_0.

        Shapes
        ------
        mask : (B,) bool
        """
        return self.current_filter().reset(state, mask)

    def nll(self, y: Tensor, u: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood per measurement of the innovations, up to a constant.

        ½ (log det S_t + e_t' S_t⁻¹ e_t) averaged over trajectories and steps, with e_t the
        innovation and S_t its covariance under the current W and V; rows with a NaN are
        skipped. Minimizing it is maximum likelihood for the noise covariances.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) -> scalar
        """
        flt = self.current_filter()
        model = flt.model
        y, u = flt._check_sequences(y, u)
        B, T = y.shape[0], y.shape[1]
        res = flt.filter(y, u)
        m0 = model.x0_mean.expand(B, 1, model.n_x)
        P0 = model.x0_cov.expand(B, 1, model.n_x, model.n_x)
        if T > 1:
            prev = res.mean[:, :-1].reshape(-1, model.n_x)
            u_prev = None if u is None or model.n_u == 0 else u[:, :-1].reshape(-1, model.n_u)
            F = model.f_jacobian(prev, u_prev)
            prior_mean = model.f(prev, u_prev).reshape(B, T - 1, model.n_x)
            Pp = res.cov[:, :-1].reshape(-1, model.n_x, model.n_x)
            prior_cov = (F @ Pp @ F.mT + model.process_cov).reshape(B, T - 1, model.n_x, model.n_x)
            prior_mean = torch.cat([m0, prior_mean], 1)
            prior_cov = torch.cat([P0, prior_cov], 1)
        else:
            prior_mean, prior_cov = m0, P0
        flat_mean = prior_mean.reshape(-1, model.n_x)
        H = model.h_jacobian(flat_mean)
        S = H @ prior_cov.reshape(-1, model.n_x, model.n_x) @ H.mT + model.measurement_cov
        e = y.reshape(-1, model.n_y) - model.h(flat_mean)
        observed = ~torch.isnan(e).any(-1)
        e = torch.where(observed[:, None], e, torch.zeros_like(e))
        L = torch.linalg.cholesky(0.5 * (S + S.mT))
        z = torch.linalg.solve_triangular(L, e.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        per_step = 0.5 * (logdet + (z**2).sum(-1))
        return (per_step * observed).sum() / observed.sum().clamp_min(
            1
        ) / model.n_y + 0.5 * math.log(2 * math.pi)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (the model is passed again when loading)."""
        return {"filter": self.kind}

    def extra_repr(self) -> str:
        return f"filter={self.kind!r}, n_x={self.model.n_x}, n_y={self.model.n_y}"
