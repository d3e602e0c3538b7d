"""What a policy sees: the observation computed from raw measurements and applied actions.

A policy trained by Stable-Baselines3 sees what its training environment gave it: the raw
measurement, a stack of the last measurements (and actions), or a state estimate x̂_{t|t} from
an estimator run on the measurements. :class:`PolicyObservation` computes that input from the raw
measurements y_t and the applied actions; the Gymnasium wrappers of
:mod:`kalmannet_ctrl.rl.wrappers` use it during training, and
:class:`~kalmannet_ctrl.rl.RLController` uses it at evaluation, so that the trained policy runs
on the raw measurements exactly as LQG does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_positive_float, check_positive_int
from ..errors import DimensionError, ParameterError
from ..estimators.base import Estimator, GaussianState
from ..estimators.default import default_filter
from ..models.base import SystemModel

__all__ = [
    "OBSERVATION_MODES",
    "SETTING_TYPES",
    "PolicyObservation",
    "RLState",
    "angle_features",
    "check_mode",
    "default_estimator",
    "estimator_n_y",
    "from_unit_actions",
]

#: The observation modes of a policy: ``"measurement"`` (the last ``history`` measurements,
#: optionally with the actions before them) or ``"estimate"`` (x̂_{t|t} of an estimator).
OBSERVATION_MODES: tuple[str, ...] = ("measurement", "estimate")

#: The settings of a :class:`PolicyObservation` kept as attributes of the same name, besides its
#: mode and angles, with their types: what :meth:`PolicyObservation.config` writes and a saved
#: controller's sidecar is checked for.
SETTING_TYPES: dict[str, type] = {
    "n_y": int,
    "n_u": int,
    "history": int,
    "include_actions": bool,
    "include_covariance": bool,
}


def default_estimator(model: SystemModel, process_cov_scale: float = 1.0) -> Estimator:
    """The estimator a policy gets by default: :func:`~kalmannet_ctrl.estimators.default_filter`
    (the Kalman filter of a linear Gaussian model, the extended Kalman filter otherwise) of
    ``model`` with its process covariance scaled.

    Parameters
    ----------
    model : SystemModel
        Usually the environment's nominal model (``env.unwrapped.nominal_model``).
    process_cov_scale : float, default 1
        The filter runs on ``model`` with its process covariance multiplied by this (> 0): a
        filter that trusts a misstated nominal model less follows the measurements more. On
        ``Pendulum-v0`` the nominal EKF's velocity estimate lags the heavier, longer true
        pendulum; see :data:`kalmannet_ctrl.rl.HYPERPARAMS`.

    Raises
    ------
    TypeError
        If ``model`` is not a SystemModel.
    ParameterError
        If ``process_cov_scale`` is not a finite number > 0.

    Shapes
    ------
    The filter's: ``step`` y (B, n_y) -> x̂ (B, n_x).
    """
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    scale = check_positive_float(process_cov_scale, "process_cov_scale")
    if scale != 1.0:
        model = model.replace(process_cov=model.process_cov * scale)
    return default_filter(model)


def check_mode(observation: Any) -> str:
    """``observation`` checked to be one of :data:`OBSERVATION_MODES`, else ParameterError."""
    if observation not in OBSERVATION_MODES:
        raise ParameterError(
            f"observation: expected one of {list(OBSERVATION_MODES)}, found {observation!r}"
        )
    return str(observation)


def _check_angles(angles: Any, size: int, name: str = "angles") -> tuple[int, ...]:
    """``angles`` as a sorted tuple of distinct indices in [0, size), else a typed error.

    Raises
    ------
    TypeError
        If ``angles`` is not an iterable of integers.
    ParameterError
        If an index repeats or is outside [0, size).
    """
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Iterable):
        raise TypeError(
            f"{name}: expected a sequence of component indices, found {type(angles).__name__}"
        )
    out: list[int] = []
    for i in angles:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"{name}: expected integer indices, found {i!r}")
        if not 0 <= int(i) < size:
            raise ParameterError(
                f"{name}: expected indices in [0, {size}) (components of a vector of size "
                f"{size}), found {int(i)}"
            )
        out.append(int(i))
    if len(set(out)) != len(out):
        raise ParameterError(f"{name}: expected distinct indices, found {out}")
    return tuple(sorted(out))


def angle_features(values: Tensor, angles: tuple[int, ...]) -> Tensor:
    """Replace the components ``angles`` of ``values`` by their (cos, sin), in place order.

    Shapes
    ------
    values (..., n) -> (..., n + len(angles)); component i in ``angles`` becomes the two
    entries (cos v_i, sin v_i) at its position, the others are kept.
    """
    if not angles:
        return values
    cols: list[Tensor] = []
    for i in range(values.shape[-1]):
        c = values[..., i : i + 1]
        cols.extend((torch.cos(c), torch.sin(c)) if i in angles else (c,))
    return torch.cat(cols, -1)


def from_unit_actions(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Actions of a policy that acts in [−1, 1] (clipped there) mapped to [low, high], the
    affine map of Gymnasium's ``RescaleAction``: low + (a + 1)(high − low)/2."""
    return low + (np.clip(a, -1.0, 1.0) + 1.0) * (0.5 * (high - low))


def estimator_n_y(estimator: Any) -> int | None:
    """The measurement size of an estimator (its ``n_y`` or its model's), None if it tells none;
    the Estimator protocol declares only ``n_x``."""
    n_y = getattr(estimator, "n_y", None)
    if n_y is None:
        n_y = getattr(getattr(estimator, "model", None), "n_y", None)
    return None if n_y is None else int(n_y)


def _check_policy_estimator(
    estimator: Any, n_y: int, n_u: int, include_covariance: bool
) -> Estimator:
    """The estimator of an ``"estimate"`` policy input, checked against its n_y, n_u and (with
    ``include_covariance``) its propagating a covariance; typed errors naming ``estimator``."""
    if estimator is None:
        raise TypeError(
            "estimator: observation='estimate' needs an estimator (e.g. "
            "default_estimator(env.unwrapped.nominal_model)), found None"
        )
    if not isinstance(estimator, Estimator):
        raise TypeError(
            "estimator: expected an object with the Estimator protocol "
            f"(n_x, init, step, filter, reset), found {type(estimator).__name__}"
        )
    est_n_y = estimator_n_y(estimator)
    if est_n_y is not None and est_n_y != n_y:
        raise DimensionError(
            f"estimator: expected an estimator of n_y = {n_y} measurements, found n_y = {est_n_y}"
        )
    est_n_u = getattr(getattr(estimator, "model", None), "n_u", None)
    if est_n_u is not None and est_n_u != n_u:
        raise DimensionError(
            f"estimator: expected a model with n_u = {n_u} inputs, found n_u = {est_n_u}"
        )
    if include_covariance:
        cov = getattr(estimator.init(1), "cov", None)
        if not isinstance(cov, Tensor):
            raise ParameterError(
                "include_covariance: the estimator propagates no covariance "
                f"({type(estimator).__name__}); use include_covariance=False"
            )
    return estimator


def _replace_gaussian_rows(state: Any, rows: Tensor, new: Any) -> Any:
    """``state`` with the batch rows ``rows`` taken from ``new`` (a state of those rows alone);
    both GaussianStates (a covariance shared by the batch is expanded where rows differ)."""
    if not (isinstance(state, GaussianState) and isinstance(new, GaussianState)):
        raise TypeError(
            "estimator: restarting some rows of a batch needs a Gaussian filter's state "
            f"(GaussianState), found {type(state).__name__}"
        )
    B, n = state.mean.shape
    mean = state.mean.clone()
    mean[rows] = new.mean
    if (
        state.cov.dim() == 2
        and new.cov.dim() == 2
        and (new.cov is state.cov or torch.equal(new.cov, state.cov))
    ):
        cov = state.cov
    else:
        cov = state.cov.expand(B, n, n).clone()
        cov[rows] = new.cov.expand(len(rows), n, n)
    fresh = torch.zeros(B, dtype=torch.bool) if state.fresh is None else state.fresh.clone()
    fresh[rows] = False if new.fresh is None else new.fresh
    return GaussianState(mean, cov, fresh if bool(fresh.any()) else None)


class RLState(NamedTuple):
    """Recurrent state of the policy input (and of :class:`~kalmannet_ctrl.rl.RLController`).

    Attributes
    ----------
    estimator_state :
        The estimator's state after the last measurement (``"estimate"`` mode), else None.
    history : Tensor, (B, k, row_size), or None
        The last k rows (y_τ, u_{τ−1}) (or y_τ), oldest first, as the policy sees them (angle
        components of y_τ as their cos and sin), zero rows before the episode's start
        (``"measurement"`` mode), else None.
    u_prev : Tensor, (B, n_u)
        The action applied after the last measurement (float64): the next prediction's input,
        and the next history row's action. Zero at an episode's start.
    policy_state : tuple of np.ndarray, ((n_layers, B, hidden), (n_layers, B, hidden)), or None
        A recurrent policy's LSTM hidden and cell states after the last action (sb3-contrib's
        ``RecurrentPPO``); None for a feed-forward policy, and before a recurrent policy's
        first action (its zero state).
    """

    estimator_state: Any
    history: Tensor | None
    u_prev: Tensor
    policy_state: tuple[np.ndarray, ...] | None = None


class PolicyObservation:
    """What a policy sees, computed from the raw measurements and the applied actions.

    One object serves the training wrappers (:mod:`kalmannet_ctrl.rl.wrappers`) and
    :class:`~kalmannet_ctrl.rl.RLController`, so that a policy sees at evaluation exactly what it
    saw in training. It holds configuration only; the recurrent state (:class:`RLState`) is
    passed in and returned.

    Time convention (as :class:`~kalmannet_ctrl.controllers.LQG`): at step t, ``step`` receives
    y_t and the state whose ``u_prev`` is u_{t−1}, the action applied after y_{t−1} (zero at an
    episode's start). In ``"estimate"`` mode the estimator predicts with u_{t−1} and updates with
    y_t; the observation is x̂_{t|t}, followed by the diagonal of P_{t|t} when
    ``include_covariance``. In ``"measurement"`` mode the row (y_t, u_{t−1}) (or y_t alone) is
    appended to the last ``history`` rows, and the observation is those rows, oldest first,
    flattened; rows before the episode's start are zero.

    Angles (``angles``): the components they name (of x̂ in ``"estimate"`` mode, of each
    measurement y_τ in ``"measurement"`` mode) are replaced by the two entries (cos, sin) at
    their position, as Gymnasium's Pendulum shows its angle, so that a policy sees the upright
    θ = 0, ±2π, … as one point; the covariance diagonal is appended unchanged.

    Parameters
    ----------
    observation : {"measurement", "estimate"}
    n_y, n_u : int
        Measurement and action sizes.
    estimator : Estimator, optional
        Required in ``"estimate"`` mode (see :func:`default_estimator`); not allowed otherwise.
    history : int, default 1
        k, the number of measurements stacked (``"measurement"`` mode; must be 1 otherwise).
    include_actions : bool, default False
        Stack the action before each measurement too (``"measurement"`` mode only).
    include_covariance : bool, default False
        Append the diagonal of the estimator's covariance (``"estimate"`` mode, estimators whose
        state has a ``cov``).
    angles : sequence of int, default ()
        Indices of the angle components, shown as (cos, sin): into the estimate (0 ≤ i < n_x)
        in ``"estimate"`` mode, into each measurement (0 ≤ i < n_y) in ``"measurement"`` mode.
        Usually the env's ``unwrapped.angle_states`` or ``unwrapped.angle_measurements``.

    Attributes
    ----------
    size : int
        Length of the observation: k·(n_y + a) (+ k·n_u with actions), or n_x + a (+ n_x with
        covariance), a = len(angles).
    angles : tuple of int
        Sorted.

    Shapes
    ------
    step: y (B, n_y) -> observation (B, size), float32 NumPy

    Examples
    --------
    >>> import torch
    >>> p = PolicyObservation("measurement", n_y=1, n_u=1, history=3)
    >>> state = p.init(1)
    >>> obs, state = p.step(state, torch.tensor([[0.5]]))
    >>> obs
    array([[0. , 0. , 0.5]], dtype=float32)
    >>> p = PolicyObservation("measurement", n_y=1, n_u=1, angles=(0,))
    >>> p.step(p.init(1), torch.tensor([[0.0]]))[0]
    array([[1., 0.]], dtype=float32)
    """

    def __init__(
        self,
        observation: str = "measurement",
        *,
        n_y: int,
        n_u: int,
        estimator: Estimator | None = None,
        history: int = 1,
        include_actions: bool = False,
        include_covariance: bool = False,
        angles: Iterable[int] = (),
    ) -> None:
        self.mode = check_mode(observation)
        self.n_y = check_positive_int(n_y, "n_y")
        self.n_u = check_positive_int(n_u, "n_u")
        self.history = check_positive_int(history, "history")
        self.include_actions = bool(include_actions)
        self.include_covariance = bool(include_covariance)
        if self.mode == "measurement":
            if estimator is not None:
                raise ParameterError(
                    "estimator: only used with observation='estimate', found an estimator with "
                    "observation='measurement'"
                )
            if self.include_covariance:
                raise ParameterError(
                    "include_covariance: only used with observation='estimate', "
                    "found include_covariance=True with observation='measurement'"
                )
            self.estimator: Estimator | None = None
            self.angles = _check_angles(angles, self.n_y)
            self.size = self.history * self.row_size
            return
        if self.history != 1 or self.include_actions:
            raise ParameterError(
                "history: a measurement history (history > 1, include_actions) is for "
                f"observation='measurement', found history={self.history}, "
                f"include_actions={self.include_actions} with observation='estimate'"
            )
        self.estimator = _check_policy_estimator(
            estimator, self.n_y, self.n_u, self.include_covariance
        )
        n_x = int(self.estimator.n_x)
        self.angles = _check_angles(angles, n_x)
        self.size = n_x + len(self.angles) + (n_x if self.include_covariance else 0)

    @property
    def row_size(self) -> int:
        """Length of one history row: n_y + len(angles), plus n_u with actions
        (``"measurement"`` mode)."""
        return self.n_y + len(self.angles) + (self.n_u if self.include_actions else 0)

    def features(self, values: Tensor) -> Tensor:
        """The components named by ``angles`` replaced by (cos, sin) (:func:`angle_features`).

        Shapes
        ------
        values (..., n) -> (..., n + len(angles)); n = n_x (estimate) or n_y (measurement)
        """
        return angle_features(values, self.angles)

    def config(self) -> dict[str, Any]:
        """The JSON-able settings (the estimator excepted): ``observation`` (the mode), those of
        :data:`SETTING_TYPES` and ``angles`` (a list)."""
        settings = {name: getattr(self, name) for name in SETTING_TYPES}
        return {"observation": self.mode, **settings, "angles": list(self.angles)}

    def init(self, batch_size: int) -> RLState:
        """The state before an episode's first measurement.

        Shapes
        ------
        -> RLState for ``batch_size`` rows; u_prev (B, n_u) zeros
        """
        B = check_positive_int(batch_size, "batch_size")
        u_prev = torch.zeros(B, self.n_u, dtype=torch.float64)
        if self.estimator is not None:
            return RLState(self.estimator.init(B), None, u_prev)
        history = torch.zeros(B, self.history, self.row_size, dtype=torch.float64)
        return RLState(None, history, u_prev)

    def reset(self, state: RLState, mask: Tensor) -> RLState:
        """Restart the rows where ``mask`` is True (estimator prior, empty history, u_prev 0).

        Shapes
        ------
        mask : (B,) bool
        """
        col = mask[:, None]
        u_prev = torch.where(col, torch.zeros_like(state.u_prev), state.u_prev)
        policy_state = state.policy_state
        if policy_state is not None:  # the LSTM restarts from its zero state
            rows = mask.cpu().numpy()
            policy_state = tuple(np.where(rows[None, :, None], 0.0, h) for h in policy_state)
        if self.estimator is not None:
            estimator_state = self.estimator.reset(state.estimator_state, mask)
            return RLState(estimator_state, None, u_prev, policy_state)
        assert state.history is not None
        history = torch.where(mask[:, None, None], torch.zeros_like(state.history), state.history)
        return RLState(None, history, u_prev, policy_state)

    def restart(self, state: RLState, mask: np.ndarray, y: Tensor) -> tuple[np.ndarray, RLState]:
        """Start a new episode in the rows where ``mask`` is True, with their first measurement
        ``y`` (one row per restarted row); the other rows are unchanged.

        The restarted rows end as :meth:`init` followed by :meth:`step` with ``y`` leaves a
        batch of their own. In ``"estimate"`` mode this needs an estimator whose state is a
        :class:`~kalmannet_ctrl.estimators.base.GaussianState` (the Kalman filters, EKF, UKF,
        the learned-noise filter).

        Shapes
        ------
        mask : (B,) bool; y : (m, n_y) for the m True rows -> observation (m, size)

        Raises
        ------
        TypeError
            For an estimator state other than a GaussianState.
        """
        mask = np.asarray(mask, dtype=bool)
        rows = torch.as_tensor(np.flatnonzero(mask))
        obs, fresh = self.step(self.init(len(rows)), y)
        policy_state = state.policy_state
        if policy_state is not None:  # the LSTM restarts from its zero state, as in reset
            policy_state = tuple(np.where(mask[None, :, None], 0.0, h) for h in policy_state)
        if len(rows) == state.u_prev.shape[0]:  # every row restarts
            return obs, fresh._replace(policy_state=policy_state)
        u_prev = state.u_prev.clone()
        u_prev[rows] = fresh.u_prev
        if self.estimator is None:
            assert state.history is not None and fresh.history is not None
            history = state.history.clone()
            history[rows] = fresh.history
            return obs, RLState(None, history, u_prev, policy_state)
        merged = _replace_gaussian_rows(state.estimator_state, rows, fresh.estimator_state)
        return obs, RLState(merged, None, u_prev, policy_state)

    def step(self, state: RLState, y: Tensor) -> tuple[np.ndarray, RLState]:
        """Take in y_t (with u_{t−1} = ``state.u_prev``) and return the policy's observation.

        Parameters
        ----------
        state : RLState
        y : Tensor, (B, n_y)
            Float64 measurements; in ``"estimate"`` mode a NaN row means no measurement.

        Returns
        -------
        observation : np.ndarray, (B, size), float32
        state : RLState
            With the new estimator state or history; ``u_prev`` unchanged (the caller sets
            it to the action applied next).
        """
        with torch.no_grad():
            if self.estimator is not None:
                xhat, est_state = self.estimator.step(state.estimator_state, y, state.u_prev)
                parts = [self.features(xhat.to(torch.float64))]
                if self.include_covariance:
                    diag = torch.diagonal(est_state.cov, dim1=-2, dim2=-1)
                    parts.append(diag.to(torch.float64).expand(xhat.shape[0], -1))
                obs = torch.cat(parts, -1)
                new_state = RLState(est_state, None, state.u_prev, state.policy_state)
            else:
                assert state.history is not None
                row = self.features(y.to(torch.float64))
                if self.include_actions:
                    row = torch.cat([row, state.u_prev], -1)
                history = torch.cat([state.history[:, 1:], row[:, None]], 1)
                obs = history.reshape(history.shape[0], -1)
                new_state = RLState(None, history, state.u_prev, state.policy_state)
        return obs.cpu().numpy().astype(np.float32), new_state

    def __repr__(self) -> str:
        extra = (
            f"estimator={type(self.estimator).__name__}, include_covariance="
            f"{self.include_covariance}"
            if self.estimator is not None
            else f"history={self.history}, include_actions={self.include_actions}"
        )
        return (
            f"PolicyObservation({self.mode!r}, n_y={self.n_y}, n_u={self.n_u}, {extra}, "
            f"angles={self.angles})"
        )
