"""The unscented Kalman filter with scaled sigma points."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_not_complex
from ..models.base import SystemModel, psd_sqrt
from .base import GaussianFilter

__all__ = ["UnscentedKalmanFilter"]


class UnscentedKalmanFilter(GaussianFilter):
    """Unscented Kalman filter with van der Merwe's scaled sigma points.

    2 n_x + 1 sigma points x̂ ± columns of sqrt((n_x + λ) P), λ = α²(n_x + κ) − n_x, with mean
    weights W₀ = λ/(n_x + λ), covariance weight W₀ + 1 − α² + β and 1/(2(n_x + λ)) for the rest.
    Sigma points are redrawn from the predicted distribution before the measurement update;
    noise is additive. The update is P = P⁻ − K S K', symmetrized. On a linear model it
    reproduces :class:`KalmanFilter`.

    Parameters
    ----------
    model : SystemModel
    alpha : float, default 1.0
        Spread of the sigma points (0 < α ≤ 1). Small α with κ = 0 gives large negative central
        weights; the default keeps every weight non-negative.
    beta : float, default 2.0
        Prior knowledge of the distribution (2 is optimal for Gaussians).
    kappa : float, default 0.0
        Secondary scaling; n_x + λ must be positive.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂ (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov (B, T, n_x, n_x)
    """

    def __init__(
        self, model: SystemModel, *, alpha: float = 1.0, beta: float = 2.0, kappa: float = 0.0
    ) -> None:
        super().__init__(model)
        n = model.n_x
        for name, value in (("alpha", alpha), ("beta", beta), ("kappa", kappa)):
            check_not_complex(value, name)
        if not (0.0 < alpha <= 1.0):
            raise ValueError(f"alpha: expected 0 < alpha <= 1, found {alpha}")
        if not math.isfinite(beta):
            raise ValueError(f"beta: expected a finite number, found {beta}")
        lam = alpha**2 * (n + kappa) - n
        if not (n + lam > 0):
            raise ValueError(
                f"kappa: expected n_x + lambda > 0, found n_x + lambda = {n + lam} (kappa={kappa})"
            )
        self.alpha, self.beta, self.kappa = float(alpha), float(beta), float(kappa)
        self._scale = math.sqrt(n + lam)
        wm = torch.full((2 * n + 1,), 0.5 / (n + lam), dtype=model.dtype, device=model.device)
        wc = wm.clone()
        wm[0] = lam / (n + lam)
        wc[0] = lam / (n + lam) + 1.0 - alpha**2 + beta
        self.weights_mean, self.weights_cov = wm, wc

    def sigma_points(self, mean: Tensor, cov: Tensor) -> Tensor:
        """Scaled sigma points.

        Shapes
        ------
        mean : (B, n), cov : (n, n) or (B, n, n) -> (B, 2n + 1, n)
        """
        B, n = mean.shape
        L = self._scale * psd_sqrt(cov).expand(B, n, n)
        cols = L.mT  # rows are the columns of L
        return torch.cat([mean.unsqueeze(1), mean.unsqueeze(1) + cols, mean.unsqueeze(1) - cols], 1)

    def _moments(self, points: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.einsum("k,bki->bi", self.weights_mean, points)
        dev = points - mean.unsqueeze(1)
        return mean, dev

    def _predict(self, mean: Tensor, cov: Tensor, u: Tensor | None) -> tuple[Tensor, Tensor]:
        m = self.model
        X = self.sigma_points(mean, cov)
        B, K, n = X.shape
        u_rep = None if u is None else u.repeat_interleave(K, 0)
        Xf = m.f(X.reshape(B * K, n), u_rep).reshape(B, K, n)
        mean, dev = self._moments(Xf)
        cov = torch.einsum("k,bki,bkj->bij", self.weights_cov, dev, dev) + m.process_cov
        return mean, 0.5 * (cov + cov.mT)

    def _update(self, mean: Tensor, cov: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        m = self.model
        X = self.sigma_points(mean, cov)
        B, K, n = X.shape
        Y = m.h(X.reshape(B * K, n)).reshape(B, K, m.n_y)
        y_mean, dy = self._moments(Y)
        dx = X - mean.unsqueeze(1)
        S = torch.einsum("k,bki,bkj->bij", self.weights_cov, dy, dy) + m.measurement_cov
        S = 0.5 * (S + S.mT)
        Pxy = torch.einsum("k,bki,bkj->bij", self.weights_cov, dx, dy)
        gain = torch.linalg.solve(S, Pxy.mT).mT  # (B, n, n_y)
        mean = mean + (gain @ (y - y_mean).unsqueeze(-1)).squeeze(-1)
        cov = cov - gain @ S @ gain.mT
        return mean, 0.5 * (cov + cov.mT)

    def __repr__(self) -> str:
        return (
            f"UnscentedKalmanFilter(model={self.model!r}, alpha={self.alpha}, beta={self.beta}, "
            f"kappa={self.kappa})"
        )
