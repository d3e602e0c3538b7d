"""Linear quadratic regulator: infinite horizon (from the DARE) and finite horizon."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._riccati import solve_dare
from .._validation import as_tensor, check_covariance, check_positive_int, check_shape, shape_str
from ..errors import BatchSizeError, DimensionError
from ..models.base import SystemModel
from ..models.cost import QuadraticCost
from ..models.linear import LinearGaussianModel
from ..models.linearize import linearize
from ._inputs import (
    as_action,
    as_observation_batch,
    check_cost,
    check_cost_type,
    check_linear_model,
    episode_start_mask,
)
from .base import ModelDims

__all__ = ["LQR", "design_model"]


def design_model(model: SystemModel) -> LinearGaussianModel:
    """The linear model a regulator is designed on: ``model`` itself if linear, else its
    linearization about the origin (x = 0, u = 0), the operating point of a regulator.

    Examples
    --------
    >>> from kalmannet_ctrl.models import cartpole
    >>> design_model(cartpole()).A.shape
    torch.Size([4, 4])

    Shapes
    ------
    -> LinearGaussianModel with A (n_x, n_x), B (n_x, n_u), C (n_y, n_x)
    """
    if isinstance(model, LinearGaussianModel):
        return model
    zero_x = torch.zeros(model.n_x, dtype=model.dtype, device=model.device)
    return linearize(model, zero_x, torch.zeros(model.n_u, dtype=model.dtype, device=model.device))


#: Closed loops whose spectral radius is within this of 1 are not considered stable.


def check_design_inputs(model: Any, cost: Any, who: str) -> None:
    """Check that ``model`` is linear with inputs and that ``cost`` matches its dimensions.

    Shapes
    ------
    cost: Q (n_x, n_x), R (n_u, n_u) of the model
    """
    check_linear_model(
        model,
        "model",
        "linearize a nonlinear model first with kalmannet_ctrl.models.linearize",
        who=who,
    )
    check_cost_type(cost)
    if model.n_u == 0:
        raise DimensionError(
            f"model: {who} needs a model with inputs (n_u >= 1), found n_u = 0 (B is None); "
            "pass the input matrix B to LinearGaussianModel"
        )
    check_cost(cost, model)


class LQR(ModelDims):
    """Linear quadratic regulator u = −K x for a :class:`LinearGaussianModel`.

    Minimizes E Σ_t (x_t' Q x_t + u_t' R u_t) for x_{t+1} = A x_t + B u_t + w_t with the state
    known exactly. By certainty equivalence the same gain is optimal on the estimate x̂_{t|t}
    (see :class:`~kalmannet_ctrl.controllers.LQG`).

    - Infinite horizon (``horizon=None``): P solves the DARE
      P = Q + A'PA − A'PB (R + B'PB)^{-1} B'PA (``scipy.linalg.solve_discrete_are``) and
      K = (R + B'PB)^{-1} B'PA minimizes the average cost per step.
    - Finite horizon H: minimizes Σ_{t<H} (x_t'Qx_t + u_t'Ru_t) + x_H' Q_f x_H by the backward
      Riccati recursion P_H = Q_f, K_t = (R + B'P_{t+1}B)^{-1} B'P_{t+1}A,
      P_t = Q + K_t'RK_t + (A − BK_t)' P_{t+1} (A − BK_t); the gains are time-varying.

    Parameters
    ----------
    model : LinearGaussianModel
        The model the controller is designed on (A, B; C and the noise do not matter).
    cost : QuadraticCost
        Stage cost weights Q (n_x, n_x) and R (n_u, n_u).
    horizon : int, optional
        Number of control steps H; ``None`` (default) for the infinite-horizon regulator.
    terminal_weight : array-like, (n_x, n_x), optional
        Q_f of the finite-horizon problem (default Q). Symmetric positive semi-definite.

    Attributes
    ----------
    gain : Tensor, (n_u, n_x), or (H, n_u, n_x) for a finite horizon
        K, or K_0 … K_{H−1}.
    value_matrix : Tensor, (n_x, n_x), or (H + 1, n_x, n_x) for a finite horizon
        P, or P_0 … P_H: the optimal cost-to-go from x_t is x_t' P_t x_t (noise-free).
    model, cost, horizon
    n_x, n_u, n_y, dtype, device
        The model's (:class:`~kalmannet_ctrl.controllers.base.ModelDims`).

    Shapes
    ------
    action: x (B, n_x), t int or (B,) -> u (B, n_u);
    predict: observation (n_x,) or (B, n_x) -> action (n_u,) or (B, n_u)

    Raises
    ------
    TypeError
        If ``model`` is not a LinearGaussianModel or ``cost`` not a QuadraticCost.
    DimensionError
        If the model has no input, or the cost does not match the model's dimensions.
    RiccatiError
        If the DARE has no stabilizing solution ((A, B) not stabilizable, or a mode of A on the
        unit circle that Q does not see).

    Notes
    -----
    The finite-horizon recursion is written in torch and is differentiable with respect to the
    model's and the cost's tensors; the infinite-horizon gain comes from SciPy and is not.

    Examples
    --------
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
    >>> m = LinearGaussianModel(A=[[1.0]], B=[[1.0]], C=[[1.0]], process_cov=[[1.0]],
    ...                         measurement_cov=[[1.0]])
    >>> lqr = LQR(m, QuadraticCost(Q=[[1.0]], R=[[1.0]]))
    >>> round(float(lqr.value_matrix[0, 0]), 6)  # (1 + sqrt(5)) / 2
    1.618034
    """

    def __init__(
        self,
        model: LinearGaussianModel,
        cost: QuadraticCost,
        *,
        horizon: int | None = None,
        terminal_weight: Any = None,
    ) -> None:
        check_design_inputs(model, cost, "LQR")
        self.model = model
        self.cost = cost
        dtype, device = model.dtype, model.device
        if horizon is None:
            if terminal_weight is not None:
                raise ValueError(
                    "terminal_weight: only used with a finite horizon; pass horizon=H as well, "
                    "found horizon=None"
                )
            self.horizon: int | None = None
            self.gain, self.value_matrix = _infinite_horizon(model, cost)
        else:
            self.horizon = check_positive_int(horizon, "horizon")
            Q = cost.Q.to(dtype=dtype, device=device)
            if terminal_weight is None:
                Qf = Q
            else:
                Qf = as_tensor(terminal_weight, "terminal_weight", dtype=dtype, device=device)
                check_covariance(Qf, "terminal_weight", model.n_x, semidefinite=True)
            self.gain, self.value_matrix = _finite_horizon(
                model.A, model.B, Q, cost.R.to(dtype=dtype, device=device), Qf, self.horizon
            )

    def action(self, x: Any, t: Any = 0) -> Tensor:
        """The input u = −K_t x for a batch of (estimated) states.

        Parameters
        ----------
        x : array-like or Tensor, (B, n_x)
        t : int or array-like of int, (B,)
            Time index for a finite-horizon regulator (0 <= t < H); ignored for an infinite
            horizon.

        Returns
        -------
        Tensor, (B, n_u)
            In the dtype and on the device of ``x`` (float64 for NumPy input other than float32);
            differentiable with respect to ``x``.

        Shapes
        ------
        x : (B, n_x), t : () or (B,) -> (B, n_u)
        """
        x = as_tensor(x, "x")
        check_shape(x, "x", ("B", self.n_x))
        B = x.shape[0]
        K = self.gain.to(dtype=x.dtype, device=x.device)
        if self.horizon is None:
            return -(x @ K.mT)
        t_idx = _time_index(t, B, self.horizon, "t")
        Kt = K[torch.as_tensor(t_idx, device=x.device)]  # (B, n_u, n_x)
        return -(Kt @ x.unsqueeze(-1)).squeeze(-1)

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Full-state feedback on the Controller protocol: the observation is the state x_t.

        Parameters
        ----------
        observation : array-like or Tensor, (n_x,) or (B, n_x)
            The true state (finite values only).
        state : np.ndarray of int, (B,), optional
            Finite horizon only: each row's time index t, as returned by the previous call
            (``None`` starts every row at t = 0). Always ``None`` for an infinite horizon.
        episode_start : array-like of bool, (B,), optional
            Rows whose time index restarts at 0 (finite horizon).
        deterministic : bool
            Ignored (the regulator is deterministic).

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
            float32 for a float32 observation, otherwise float64.
        state : np.ndarray of int64, (B,), or None
            The time indices for the next call (finite horizon), else None.

        Raises
        ------
        ValueError
            If a row's time index reaches the horizon H.

        Shapes
        ------
        observation : (n_x,) or (B, n_x) -> action (n_u,) or (B, n_u)
        """
        obs = as_observation_batch(observation, self.n_x, dtype=self.dtype, device=self.device)
        x = obs.value
        B = x.shape[0]
        mask = episode_start_mask(episode_start, B)
        with torch.no_grad():
            if self.horizon is None:
                u = self.action(x)
                new_state = None
            else:
                if state is None:
                    t = np.zeros(B, dtype=np.int64)
                else:
                    t = np.asarray(state)
                    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
                        raise TypeError(
                            "state: expected the (B,) integer time indices returned by the "
                            f"previous call, found {type(state).__name__} of shape "
                            f"{shape_str(np.shape(state))}"
                        )
                    if t.shape[0] != B:
                        if mask is None or not bool(mask.all()):
                            raise BatchSizeError(
                                f"observation: expected batch size {t.shape[0]} (from state), "
                                f"found {B}; pass state=None or reset every row to start a "
                                "new batch"
                            )
                        t = np.zeros(B, dtype=np.int64)
                    t = t.astype(np.int64, copy=True)
                if mask is not None:
                    t[mask.cpu().numpy()] = 0
                t = _time_index(t, B, self.horizon, "state")
                u = self.action(x, t)
                new_state = t + 1
        return as_action(u, obs.single, obs.np_dtype), new_state

    def __repr__(self) -> str:
        return f"LQR(n_x={self.n_x}, n_u={self.n_u}, horizon={self.horizon})"


def _time_index(t: Any, B: int, horizon: int, name: str) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    arr = np.asarray(t)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(
            f"{name}: expected an integer time index or (B,) integer array, found {arr.dtype}"
        )
    if arr.ndim == 0:
        arr = np.full(B, int(arr), dtype=np.int64)
    elif arr.shape != (B,):
        raise DimensionError(f"{name}: expected shape () or ({B},), found {shape_str(arr.shape)}")
    if arr.min() < 0 or arr.max() >= horizon:
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(
            f"{name}: expected time indices in [0, {horizon}) for a horizon-{horizon} regulator, "
            f"found {bad}; reset the episode (episode_start) or use a longer horizon"
        )
    return arr.astype(np.int64, copy=False)


def _infinite_horizon(model: LinearGaussianModel, cost: QuadraticCost) -> tuple[Tensor, Tensor]:
    """(K, P) of the infinite-horizon regulator from SciPy's DARE solver."""
    m = model.numpy()
    Q, R = cost.numpy()
    P, K = solve_dare(
        m["A"],
        m["B"],
        Q,
        R,
        kind="control",
        hint="check that (A, B) is stabilizable and that Q weights every mode of A on the "
        "unit circle",
    )
    to = dict(dtype=model.dtype, device=model.device)
    return torch.as_tensor(K, **to), torch.as_tensor(P, **to)


def _finite_horizon(
    A: Tensor, B: Tensor, Q: Tensor, R: Tensor, Qf: Tensor, horizon: int
) -> tuple[Tensor, Tensor]:
    """Backward Riccati recursion: gains (H, n_u, n_x) and value matrices (H + 1, n_x, n_x)."""
    P = 0.5 * (Qf + Qf.mT)
    gains: list[Tensor] = []
    values: list[Tensor] = [P]
    for _ in range(horizon):
        BtP = B.mT @ P
        S = R + BtP @ B
        K = torch.linalg.solve(0.5 * (S + S.mT), BtP @ A)
        A_cl = A - B @ K
        P = Q + K.mT @ R @ K + A_cl.mT @ P @ A_cl
        P = 0.5 * (P + P.mT)
        gains.append(K)
        values.append(P)
    gains.reverse()
    values.reverse()
    return torch.stack(gains, 0), torch.stack(values, 0)
