"""Exact steady-state cost of linear controllers on a linear Gaussian system."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg

from ..errors import DimensionError
from ..estimators.kalman import KalmanFilter
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ._inputs import check_cost_type, check_linear_model
from .lqg import LQG
from .lqr import LQR

__all__ = ["analytic_average_cost"]


def analytic_average_cost(
    true_model: LinearGaussianModel, controller: Any, cost: QuadraticCost
) -> float:
    """Exact average stage cost lim_{T→∞} (1/T) E Σ_t (x_t'Qx_t + u_t'Ru_t) of a linear loop.

    The controller may be designed on any model (nominal or true); it runs on ``true_model``
    (x_{t+1} = A x_t + B u_t + w_t, y_t = C x_t + v_t). The stationary covariance of the closed
    loop comes from its discrete Lyapunov equation (``scipy.linalg.solve_discrete_lyapunov``).
    With the true model, an :class:`LQG` with a Kalman filter gives the LQG optimum: the oracle
    every learned controller is measured against.

    Supported controllers:

    - :class:`LQR` with ``horizon=None`` (full-state feedback u = −Kx):
      A_cl = A − BK, Σ = A_cl Σ A_cl' + W, cost tr((Q + K'RK) Σ).
    - :class:`LQG` whose estimator is a :class:`~kalmannet_ctrl.estimators.KalmanFilter`
      (time-varying or ``steady_state=True``: both converge to the stationary filter of the
      estimator's model, so the average cost is the same). With the estimator's model
      (Â, B̂, Ĉ), its stationary filter gain K_f and the LQR gain L, the state
      z_t = [x_t; x̂_{t|t−1}] obeys z_{t+1} = A_cl z_t + G [w_t; v_t] with x̂_{t|t} = M z_t + K_f v_t,
      M = [K_f C, I − K_f Ĉ] and

      A_cl = [[A − B L K_f C, −B L (I − K_f Ĉ)], [(Â − B̂L) K_f C, (Â − B̂L)(I − K_f Ĉ)]],
      G = [[I, −B L K_f], [0, (Â − B̂L) K_f]];

      the cost is tr(Q Σ_xx) + tr(R (L M Σ M' L' + L K_f V K_f' L')).

    Parameters
    ----------
    true_model : LinearGaussianModel
        The system the controller runs on (A, B, C, W = process_cov, V = measurement_cov).
    controller : LQR or LQG
        The controller, designed on any model with the same dimensions.
    cost : QuadraticCost
        The stage cost to average (Q (n_x, n_x), R (n_u, n_u)); need not be the design cost.

    Returns
    -------
    float
        The average cost per step; ``math.inf`` when the closed loop is not stable (spectral
        radius of A_cl >= 1), where the cost grows without bound.

    Raises
    ------
    TypeError
        If ``true_model`` is not a LinearGaussianModel, ``cost`` not a QuadraticCost, or the
        controller is not an LQR or an LQG with a KalmanFilter.
    ValueError
        For a finite-horizon LQR (its gain is time-varying).
    DimensionError
        If the controller's or the cost's dimensions differ from the true model's.

    Notes
    -----
    The formula is for the unconstrained linear loop: ``input_bounds`` of an LQG (saturation) are
    ignored, so a saturating controller's true cost is higher. The mean of x_0 and its covariance
    do not matter (they only affect the transient).

    Shapes
    ------
    true_model: A (n_x, n_x), B (n_x, n_u), C (n_y, n_x) -> float
    """
    check_linear_model(
        true_model, "true_model", "the analytic cost exists only for a linear system"
    )
    check_cost_type(cost)
    tm = true_model.numpy()
    A, B, C, W, V = tm["A"], tm["B"], tm["C"], tm["process_cov"], tm["measurement_cov"]
    n_x, n_u = true_model.n_x, true_model.n_u
    if (cost.n_x, cost.n_u) != (n_x, n_u):
        raise DimensionError(
            f"cost: expected Q ({n_x}, {n_x}) and R ({n_u}, {n_u}) to match true_model, "
            f"found Q ({cost.n_x}, {cost.n_x}) and R ({cost.n_u}, {cost.n_u})"
        )
    Q, R = cost.numpy()

    if isinstance(controller, LQR):
        if controller.horizon is not None:
            raise ValueError(
                "controller: expected an infinite-horizon LQR (horizon=None), found "
                f"horizon={controller.horizon}; a time-varying gain has no stationary cost"
            )
        _check_dims("controller", controller.model, true_model, ("n_x", "n_u"))
        K = _np(controller.gain)
        A_cl = A - B @ K
        if _spectral_radius(A_cl) >= 1.0:
            return math.inf
        Sigma = _lyapunov(A_cl, W)
        return float(np.trace((Q + K.T @ R @ K) @ Sigma))

    if isinstance(controller, LQG):
        est = controller.estimator
        if not isinstance(est, KalmanFilter):
            raise TypeError(
                "controller: analytic_average_cost supports LQR and LQG with a KalmanFilter "
                f"estimator, found an LQG with {type(est).__name__}"
            )
        _check_dims("controller", controller.model, true_model, ("n_x", "n_u", "n_y"))
        _check_dims("controller.estimator", est.model, true_model, ("n_x", "n_u", "n_y"))
        em = est.model.numpy()
        A_h, B_h, C_h = em["A"], em["B"], em["C"]
        Kf = _np(est.steady.gain)  # (n_x, n_y), stationary filter gain of the estimator
        L = _np(controller.lqr.gain)  # (n_u, n_x)
        I = np.eye(n_x)
        I_KC = I - Kf @ C_h
        F = A_h - B_h @ L  # nominal closed-loop prediction x̂_{t+1|t} = F x̂_{t|t}
        M = np.hstack([Kf @ C, I_KC])  # x̂_{t|t} = M z_t + Kf v_t
        A_cl = np.block([[A - B @ L @ Kf @ C, -B @ L @ I_KC], [F @ Kf @ C, F @ I_KC]])
        G = np.block([[I, -B @ L @ Kf], [np.zeros((n_x, n_x)), F @ Kf]])
        if _spectral_radius(A_cl) >= 1.0:
            return math.inf
        noise = scipy.linalg.block_diag(W, V)
        Sigma = _lyapunov(A_cl, G @ noise @ G.T)
        LM = L @ M
        LK = L @ Kf
        u_cov = LM @ Sigma @ LM.T + LK @ V @ LK.T
        return float(np.trace(Q @ Sigma[:n_x, :n_x]) + np.trace(R @ u_cov))

    raise TypeError(
        "controller: analytic_average_cost supports LQR (horizon=None) and LQG with a "
        f"KalmanFilter estimator, found {type(controller).__name__}"
    )


def _np(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _spectral_radius(M: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def _lyapunov(A_cl: np.ndarray, noise: np.ndarray) -> np.ndarray:
    Sigma = scipy.linalg.solve_discrete_lyapunov(A_cl, noise)
    return 0.5 * (Sigma + Sigma.T)


def _check_dims(
    name: str, model: Any, true_model: LinearGaussianModel, dims: tuple[str, ...]
) -> None:
    for dim in dims:
        want, found = getattr(true_model, dim), getattr(model, dim)
        if want != found:
            raise DimensionError(
                f"{name}: expected a model with {dim} = {want} like true_model, "
                f"found {dim} = {found}"
            )
