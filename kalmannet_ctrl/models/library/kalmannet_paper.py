"""The KalmanNet paper's linear and synthetic nonlinear models, and its noise convention in dB.

- :func:`noise_from_db`: the variances (q², r²) from 1/r² and ν = q²/r² in dB;
- :func:`linear_canonical` (n_x = n_y = n, n_u = 0): the linear model in canonical form;
- :func:`synthetic_nonlinear` (n_x = n_y = n, n_u = 0): the elementwise nonlinear model.

References
----------
G. Revach, N. Shlezinger, X. Ni, A. López Escoriza, R. J. G. van Sloun, Y. C. Eldar,
"KalmanNet: Neural Network Aided Kalman Filtering for Partially Known Dynamics",
IEEE Trans. Signal Processing 70, 2022 (arXiv:2107.10043); public code KalmanNet/KalmanNet_TSP.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._params import Device, Dtype, _library_function, _Noise, _real
from ..base import NonlinearModel
from ..linear import LinearGaussianModel

__all__ = ["linear_canonical", "noise_from_db", "synthetic_nonlinear"]

# the paper's noise parameters: the variances q² (Q = q² I) and r² (R = r² I)
_PAPER_NOISE = _Noise(process=("q2",), measurement=("r2",), power=1.0)


# -- noise conventions -----------------------------------------------------------------------------
def noise_from_db(inv_r2_db: float, nu_db: float) -> tuple[float, float]:
    """Noise variances (q², r²) from the KalmanNet paper's dB convention.

    The paper specifies the measurement noise by "1/r²" in dB and the process noise by the ratio
    ν = q²/r² in dB: ``r² = 10^(-inv_r2_db / 10)``, ``q² = ν · r² = r² · 10^(nu_db / 10)``.

    Parameters
    ----------
    inv_r2_db : float
        1/r² in dB (e.g. 0 dB gives r² = 1, 20 dB gives r² = 0.01).
    nu_db : float
        ν = q²/r² in dB (the paper mostly uses -20 dB and 0 dB).

    Returns
    -------
    (q2, r2) : (float, float)
        Process and measurement noise variances; the models use Q = q² I and R = r² I.

    Shapes
    ------
    inv_r2_db, nu_db : scalars -> (q2, r2) : scalars

    Examples
    --------
    >>> noise_from_db(0.0, -20.0)
    (0.01, 1.0)
    """
    inv_r2_db = _real(inv_r2_db, "inv_r2_db")
    nu_db = _real(nu_db, "nu_db")
    r2 = 10.0 ** (-inv_r2_db / 10.0)
    q2 = r2 * 10.0 ** (nu_db / 10.0)
    return q2, r2


# -- KalmanNet benchmark models --------------------------------------------------------------------
@_library_function(
    count=("n",),
    choices={"measurement": ("identity", "inverse_canonical")},
    noise=_PAPER_NOISE,
)
def linear_canonical(
    n: int = 2,
    *,
    q2: float = 0.01,
    r2: float = 1.0,
    measurement: str = "identity",
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> LinearGaussianModel:
    """The KalmanNet paper's linear model in canonical form.

    x_{t+1} = F x_t + w_t, y_t = H x_t + v_t with F the identity whose first row is all ones
    (for n = 2, F = [[1, 1], [0, 1]]), Q = q² I, R = r² I and no input.

    In the authors' released code (``Simulations/Linear_canonical/parameters.py`` and the older
    ``Extended_data.py`` of KalmanNet/KalmanNet_TSP) H = I for the 2×2 model and the "inverse
    canonical" H for larger ones: first row all ones and ones on the anti-diagonal
    (H[0, :] = 1, H[i, n-1-i] = 1), e.g. for n = 3 [[1, 1, 1], [0, 1, 0], [1, 0, 0]]. The initial
    state there is deterministic: m1x_0 = 0, m2x_0 = 0 (the defaults here).

    Parameters
    ----------
    n : int
        State and measurement dimension (>= 1).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; see :func:`noise_from_db`.
        Default: 1/r² = 0 dB, ν = -20 dB.
    measurement : {"identity", "inverse_canonical"}
        The observation matrix H.
    x0_mean : array-like, (n,), optional
        Default zeros.
    x0_cov : array-like, (n, n), optional
        Default zeros (known initial state).
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    LinearGaussianModel
        ``A = F``, ``C = H``, no ``B`` (n_u = 0).

    Shapes
    ------
    -> model with n_x = n_y = n, n_u = 0: A (n, n), C (n, n), process_cov (n, n),
    measurement_cov (n, n); state x (B, n), measurement y (B, n)
    """
    F = np.eye(n)
    F[0, :] = 1.0
    if measurement == "identity":
        H = np.eye(n)
    else:
        H = np.zeros((n, n))
        H[0, :] = 1.0
        H[np.arange(n), n - 1 - np.arange(n)] = 1.0
    return LinearGaussianModel(
        A=F,
        C=H,
        process_cov=q2 * np.eye(n),
        measurement_cov=r2 * np.eye(n),
        x0_mean=x0_mean,
        x0_cov=x0_cov,
        dtype=dtype,
        device=device,
    )


@_library_function(
    real=("alpha", "beta", "phi", "delta", "a", "b", "c"),
    count=("n",),
    noise=_PAPER_NOISE,
)
def synthetic_nonlinear(
    *,
    alpha: float = 0.9,
    beta: float = 1.1,
    phi: float = 0.1 * math.pi,
    delta: float = 0.01,
    a: float = 1.0,
    b: float = 1.0,
    c: float = 0.0,
    n: int = 2,
    q2: float = 0.01,
    r2: float = 1.0,
    x0_mean: Any = None,
    x0_cov: Any = None,
    dtype: Dtype = torch.float64,
    device: Device = None,
) -> NonlinearModel:
    """The KalmanNet paper's synthetic nonlinear model, elementwise in each coordinate.

    f(x) = α sin(β x + φ) + δ,  h(x) = a (b x + c)²,  Q = q² I, R = r² I, no input.

    The defaults are the paper's "true" parameters (α, β, φ, δ) = (0.9, 1.1, 0.1π, 0.01),
    a = b = 1, c = 0; its partial-information filter uses (1, 1, 0, 0) instead (build it with
    ``model.with_params(alpha=1, beta=1, phi=0, delta=0)``). The authors' released code
    (``Simulations/Toy_problems/parameters.py``) uses m = n = 2 and a deterministic initial
    state m1x_0 = 0.1 · 1, m2x_0 = 0, the defaults here.

    Parameters
    ----------
    alpha, beta, phi, delta : float
        Evolution parameters (phi in radians).
    a, b, c : float
        Observation parameters.
    n : int
        State and measurement dimension (default 2).
    q2, r2 : float
        Process (>= 0) and measurement (> 0) noise variances; default 1/r² = 0 dB, ν = -20 dB.
    x0_mean : array-like, (n,), optional
        Default 0.1 in every coordinate.
    x0_cov : array-like, (n, n), optional
        Default zeros.
    dtype, device :
        Of every tensor of the model.

    Returns
    -------
    NonlinearModel
        With exact (diagonal) Jacobians df/dx = diag(α β cos(β x + φ)) and
        dh/dx = diag(2 a b (b x + c)).

    Shapes
    ------
    -> model with n_x = n_y = n, n_u = 0: state x (B, n), measurement y (B, n);
    process_cov (n, n), measurement_cov (n, n)
    """

    def f(x: Tensor, u: Tensor) -> Tensor:
        return alpha * torch.sin(beta * x + phi) + delta

    def h(x: Tensor) -> Tensor:
        return a * (b * x + c) ** 2

    def f_jac(x: Tensor, u: Tensor) -> Tensor:
        return torch.diag_embed(alpha * beta * torch.cos(beta * x + phi))

    def h_jac(x: Tensor) -> Tensor:
        return torch.diag_embed(2.0 * a * b * (b * x + c))

    return NonlinearModel(
        f,
        h,
        n_x=n,
        n_y=n,
        n_u=0,
        f_jacobian=f_jac,
        h_jacobian=h_jac,
        process_cov=q2 * np.eye(n),
        measurement_cov=r2 * np.eye(n),
        x0_mean=0.1 * np.ones(n) if x0_mean is None else x0_mean,
        x0_cov=x0_cov,
        dtype=dtype,
        device=device,
    )
