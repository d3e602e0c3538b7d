"""Model-free RL policies (Stable-Baselines3) on the Controller protocol.

A policy trained by Stable-Baselines3 sees what its training environment gave it: the raw
measurement, a stack of the last measurements (and actions), or a state estimate x̂_{t|t} from
an estimator run on the measurements. :class:`PolicyObservation` computes that input from the raw
measurements y_t and the applied actions; the Gymnasium wrappers of
:mod:`kalmannet_ctrl.envs.wrappers` use it during training, and :class:`RLController` uses it at
evaluation, so that the trained policy runs on the raw measurements exactly as LQG does, inside
``stable_baselines3.common.evaluation.evaluate_policy`` or the bench runner.

Stable-Baselines3 is the optional extra ``rl`` (``pip install "kalmannet-ctrl[rl]"``); it is
imported when an :class:`RLController` is built or loaded, never at module import.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._validation import check_positive_float, check_positive_int
from ..errors import (
    BatchSizeError,
    CheckpointError,
    DimensionError,
    MissingDependencyError,
    ParameterError,
)
from ..estimators.base import Estimator
from ..estimators.extended import ExtendedKalmanFilter
from ..estimators.kalman import KalmanFilter
from ..models.base import SystemModel
from ..models.linear import LinearGaussianModel
from .base import (
    ObservationBatch,
    as_action,
    as_observation_batch,
    episode_start_mask,
    estimator_mean,
)

__all__ = [
    "OBSERVATION_MODES",
    "PolicyObservation",
    "RLController",
    "RLState",
    "angle_features",
    "default_estimator",
    "require_sb3",
]

#: The observation modes of a policy: ``"measurement"`` (the last ``history`` measurements,
#: optionally with the actions before them) or ``"estimate"`` (x̂_{t|t} of an estimator).
OBSERVATION_MODES: tuple[str, ...] = ("measurement", "estimate")

_FORMAT = "kalmannet_ctrl.rl/1"
_ALGOS = ("PPO", "SAC", "TD3", "DDPG", "A2C")
_INSTALL_HINT = 'pip install "kalmannet-ctrl[rl]"  (or: pip install "stable-baselines3>=2.3")'


def require_sb3() -> Any:
    """Import and return ``stable_baselines3``.

    Raises
    ------
    MissingDependencyError
        If Stable-Baselines3 is not installed; the message holds the pip command.
    """
    try:
        import stable_baselines3
    except ImportError as exc:
        raise MissingDependencyError(
            f"stable_baselines3 is needed for RL policies but is not installed: {_INSTALL_HINT}"
        ) from exc
    return stable_baselines3


def default_estimator(model: SystemModel, process_cov_scale: float = 1.0) -> Estimator:
    """The estimator a policy gets by default: the Kalman filter of a linear Gaussian model,
    the extended Kalman filter otherwise.

    Parameters
    ----------
    model : SystemModel
        Usually the environment's nominal model (``env.unwrapped.nominal_model``).
    process_cov_scale : float, default 1
        The filter runs on ``model`` with its process covariance multiplied by this (> 0): a
        filter that trusts a misstated nominal model less follows the measurements more. On
        ``Pendulum-v0`` the nominal EKF's velocity estimate lags the heavier, longer true
        pendulum; see :data:`kalmannet_ctrl.training.rl.HYPERPARAMS`.
    """
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    scale = check_positive_float(process_cov_scale, "process_cov_scale")
    if scale != 1.0:
        model = model.replace(process_cov=model.process_cov * scale)
    if isinstance(model, LinearGaussianModel):
        return KalmanFilter(model)
    return ExtendedKalmanFilter(model)


def _check_mode(observation: Any) -> str:
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


def _estimator_n_y(estimator: Any) -> int | None:
    n_y = getattr(estimator, "n_y", None)
    if n_y is None:
        n_y = getattr(getattr(estimator, "model", None), "n_y", None)
    return None if n_y is None else int(n_y)


class RLState(NamedTuple):
    """Recurrent state of the policy input (and of :class:`RLController`).

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
    """

    estimator_state: Any
    history: Tensor | None
    u_prev: Tensor


class PolicyObservation:
    """What a policy sees, computed from the raw measurements and the applied actions.

    One object serves the training wrappers (:mod:`kalmannet_ctrl.envs.wrappers`) and
    :class:`RLController`, so that a policy sees at evaluation exactly what it saw in training.
    It holds configuration only; the recurrent state (:class:`RLState`) is passed in and
    returned.

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
        self.mode = _check_mode(observation)
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
            self.estimator = None
            self.angles = _check_angles(angles, self.n_y)
            self.size = self.history * self.row_size
            return
        if self.history != 1 or self.include_actions:
            raise ParameterError(
                "history: a measurement history (history > 1, include_actions) is for "
                f"observation='measurement', found history={self.history}, "
                f"include_actions={self.include_actions} with observation='estimate'"
            )
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
        est_n_y = _estimator_n_y(estimator)
        if est_n_y is not None and est_n_y != self.n_y:
            raise DimensionError(
                f"estimator: expected an estimator of n_y = {self.n_y} measurements, "
                f"found n_y = {est_n_y}"
            )
        est_n_u = getattr(getattr(estimator, "model", None), "n_u", None)
        if est_n_u is not None and est_n_u != self.n_u:
            raise DimensionError(
                f"estimator: expected a model with n_u = {self.n_u} inputs, found n_u = {est_n_u}"
            )
        if self.include_covariance:
            cov = getattr(estimator.init(1), "cov", None)
            if not isinstance(cov, Tensor):
                raise ParameterError(
                    "include_covariance: the estimator propagates no covariance "
                    f"({type(estimator).__name__}); use include_covariance=False"
                )
        self.estimator = estimator
        n_x = int(estimator.n_x)
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
        """The JSON-able settings (the estimator excepted)."""
        return {
            "observation": self.mode,
            "n_y": self.n_y,
            "n_u": self.n_u,
            "history": self.history,
            "include_actions": self.include_actions,
            "include_covariance": self.include_covariance,
            "angles": list(self.angles),
        }

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
        if self.estimator is not None:
            return RLState(self.estimator.reset(state.estimator_state, mask), None, u_prev)
        assert state.history is not None
        history = torch.where(mask[:, None, None], torch.zeros_like(state.history), state.history)
        return RLState(None, history, u_prev)

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
                new_state = RLState(est_state, None, state.u_prev)
            else:
                assert state.history is not None
                row = self.features(y.to(torch.float64))
                if self.include_actions:
                    row = torch.cat([row, state.u_prev], -1)
                history = torch.cat([state.history[:, 1:], row[:, None]], 1)
                obs = history.reshape(history.shape[0], -1)
                new_state = RLState(None, history, state.u_prev)
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


def _check_normalization(obs_normalization: Any, size: int) -> dict[str, Any] | None:
    """Validate VecNormalize statistics {mean, var, epsilon, clip_obs} for an observation."""
    if obs_normalization is None:
        return None
    if not isinstance(obs_normalization, Mapping):
        raise TypeError(
            "obs_normalization: expected a mapping with mean, var, epsilon and clip_obs, found "
            f"{type(obs_normalization).__name__}"
        )
    missing = {"mean", "var", "epsilon", "clip_obs"} - set(obs_normalization)
    if missing:
        raise ParameterError(f"obs_normalization: missing key(s) {sorted(missing)}")
    out: dict[str, Any] = {}
    for key in ("mean", "var"):
        arr = np.asarray(obs_normalization[key], dtype=np.float64)
        if arr.shape != (size,):
            raise DimensionError(
                f"obs_normalization[{key!r}]: expected shape ({size},), found {arr.shape}"
            )
        if not np.all(np.isfinite(arr)) or (key == "var" and np.any(arr < 0)):
            raise ParameterError(f"obs_normalization[{key!r}]: expected finite values (var >= 0)")
        out[key] = arr
    out["epsilon"] = float(obs_normalization["epsilon"])
    out["clip_obs"] = float(obs_normalization["clip_obs"])
    return out


class RLController:
    """A trained Stable-Baselines3 policy on the Controller protocol, fed raw measurements.

    ``predict`` takes the measurement y_t (one or a batch), does what the training wrapper did
    (:class:`PolicyObservation`: runs the estimator, or keeps the measurement history, in the
    explicit state; rows flagged by ``episode_start`` restart), applies the observation
    normalization of training (VecNormalize statistics) if any, and asks the policy for u_t.
    The action is clipped to the policy's action space and fed back to the estimator/history
    at the next call, as :class:`~kalmannet_ctrl.controllers.LQG` does.

    Parameters
    ----------
    model : stable_baselines3 BaseAlgorithm
        The trained policy (PPO, SAC, ...), with a Box action space.
    observation : {"measurement", "estimate"}, default "measurement"
        What the policy was trained on (see :class:`PolicyObservation`).
    estimator : Estimator, optional
        The estimator of ``"estimate"`` mode. Default: :func:`default_estimator` of
        ``nominal_model``.
    history : int, default 1
        Measurements stacked in ``"measurement"`` mode (1: the policy sees y_t alone).
    include_actions, include_covariance : bool
        As in :class:`PolicyObservation`.
    angles : sequence of int, default ()
        The angle components the policy saw as (cos, sin) (:class:`PolicyObservation`): as in
        training, e.g. ``env.unwrapped.angle_states`` (``"estimate"``) or
        ``env.unwrapped.angle_measurements`` (``"measurement"``). Saved with the controller.
    nominal_model : SystemModel, optional
        The model the default estimator is built on (``env.unwrapped.nominal_model``).
    process_cov_scale : float, default 1
        Of the default estimator (:func:`default_estimator`); saved with the controller.
    obs_normalization : mapping, optional
        VecNormalize statistics ``{"mean", "var", "epsilon", "clip_obs"}`` (mean and var of
        shape (size,)): the observation becomes clip((o − mean)/sqrt(var + epsilon), ±clip_obs).
    metadata : mapping, optional
        JSON-able notes saved with the controller (e.g. env id, training record).

    Attributes
    ----------
    policy_input : PolicyObservation
    model, estimator, metadata
    action_low, action_high : np.ndarray, (n_u,)

    Shapes
    ------
    predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u)

    Raises
    ------
    MissingDependencyError
        If Stable-Baselines3 is not installed.
    TypeError
        If ``model`` is not a Stable-Baselines3 algorithm with a Box action space, or
        ``"estimate"`` mode gets neither an estimator nor a nominal model.
    ParameterError
        On an unknown observation mode, ``history < 1``, or options of the other mode.
    DimensionError
        If the policy's observation space does not fit the observation mode.
    """

    def __init__(
        self,
        model: Any,
        *,
        observation: str = "measurement",
        estimator: Estimator | None = None,
        history: int = 1,
        include_actions: bool = False,
        include_covariance: bool = False,
        angles: Iterable[int] = (),
        nominal_model: SystemModel | None = None,
        process_cov_scale: float = 1.0,
        obs_normalization: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        sb3 = require_sb3()
        from gymnasium import spaces

        if not isinstance(model, sb3.common.base_class.BaseAlgorithm):
            raise TypeError(
                "model: expected a trained Stable-Baselines3 algorithm (PPO, SAC, ...), "
                f"found {type(model).__name__}"
            )
        if not isinstance(model.action_space, spaces.Box):
            raise TypeError(
                f"model: expected a Box action space, found {type(model.action_space).__name__}"
            )
        obs_space = model.observation_space
        if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) != 1:
            raise TypeError(f"model: expected a flat Box observation space, found {obs_space!r}")
        mode = _check_mode(observation)
        history = check_positive_int(history, "history")
        n_u = int(model.action_space.shape[0])
        size = int(obs_space.shape[0])
        self.default_estimator = False
        self.process_cov_scale = check_positive_float(process_cov_scale, "process_cov_scale")
        if mode == "estimate":
            if estimator is None:
                if nominal_model is None:
                    raise TypeError(
                        "estimator: observation='estimate' needs an estimator or the "
                        "nominal_model to build the default one, found neither"
                    )
                estimator = default_estimator(nominal_model, process_cov_scale)
                self.default_estimator = True
            n_y = _estimator_n_y(estimator)
            if n_y is None:
                raise TypeError(
                    "estimator: cannot tell its measurement size (no n_y or model.n_y), found "
                    f"{type(estimator).__name__}"
                )
        else:
            if isinstance(angles, (str, bytes)) or not isinstance(angles, Iterable):
                raise TypeError(
                    "angles: expected a sequence of component indices, found "
                    f"{type(angles).__name__}"
                )
            angles = tuple(angles)
            per_row = size / history
            n_y = int(per_row) - (n_u if include_actions else 0) - len(angles)
            if per_row != int(per_row) or n_y < 1:
                raise DimensionError(
                    f"model: expected an observation of history = {history} rows of "
                    f"n_y{' + len(angles)' if angles else ''}"
                    f"{' + n_u' if include_actions else ''} values, found size {size}"
                )
        self.policy_input = PolicyObservation(
            mode,
            n_y=n_y,
            n_u=n_u,
            estimator=estimator,
            history=history,
            include_actions=include_actions,
            include_covariance=include_covariance,
            angles=angles,
        )
        if self.policy_input.size != size:
            raise DimensionError(
                f"model: expected an observation space of shape ({self.policy_input.size},) for "
                f"{self.policy_input!r}, found {obs_space.shape}"
            )
        self.model = model
        self.estimator = estimator
        self.action_low = np.asarray(model.action_space.low, dtype=np.float64)
        self.action_high = np.asarray(model.action_space.high, dtype=np.float64)
        self.obs_normalization = _check_normalization(obs_normalization, size)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- dimensions --------------------------------------------------------------------------------
    @property
    def observation(self) -> str:
        """The observation mode, ``"measurement"`` or ``"estimate"``."""
        return self.policy_input.mode

    @property
    def n_y(self) -> int:
        return self.policy_input.n_y

    @property
    def n_u(self) -> int:
        return self.policy_input.n_u

    # -- the protocol ------------------------------------------------------------------------------
    def init(self, batch_size: int) -> RLState:
        """The state before the first measurement of ``batch_size`` episodes."""
        return self.policy_input.init(batch_size)

    @property
    def estimate(self) -> Any:
        """``estimate(state)``: x̂_{t|t} behind the last action, (B, n_x) (``"estimate"`` mode).

        In ``"measurement"`` mode the controller has no estimate and this attribute does not
        exist (``hasattr(ctrl, "estimate")`` is False), so benchmarks skip the estimation error.
        """
        if self.policy_input.estimator is None:
            raise AttributeError("estimate: an observation='measurement' policy has no estimate")
        return self._estimate

    def _estimate(self, state: RLState) -> Tensor:
        return estimator_mean(state, RLState)

    def _prepare(self, state: RLState | None, B: int, mask: Tensor | None) -> RLState:
        if state is None:
            return self.init(B)
        if not isinstance(state, RLState):
            raise TypeError(
                "state: expected the RLState returned by the previous call (or None), "
                f"found {type(state).__name__}"
            )
        if state.u_prev.shape[0] != B:
            if mask is None or not bool(mask.all()):
                raise BatchSizeError(
                    f"observation: expected batch size {state.u_prev.shape[0]} (from state), "
                    f"found {B}; pass state=None or reset every row (episode_start) to start a "
                    "new batch"
                )
            return self.init(B)
        if mask is not None:
            return self.policy_input.reset(state, mask)
        return state

    def _normalize(self, obs: np.ndarray) -> np.ndarray:
        norm = self.obs_normalization
        if norm is None:
            return obs
        out = (obs - norm["mean"]) / np.sqrt(norm["var"] + norm["epsilon"])
        return np.clip(out, -norm["clip_obs"], norm["clip_obs"]).astype(np.float32)

    def policy_observation(
        self, observation: Any, state: RLState | None = None, episode_start: Any = None
    ) -> tuple[np.ndarray, RLState]:
        """The policy's (normalized) input for the measurement y_t, without choosing an action.

        The returned state's ``u_prev`` is the previous one: set it to the action applied
        (``state._replace(u_prev=u)``) before the next call, as :meth:`predict` does.

        Shapes
        ------
        observation (n_y,) or (B, n_y) -> (B, size) float32
        """
        _, features, state = self._features(observation, state, episode_start)
        return features, state

    def _features(
        self, observation: Any, state: RLState | None, episode_start: Any
    ) -> tuple[ObservationBatch, np.ndarray, RLState]:
        obs = as_observation_batch(
            observation,
            self.n_y,
            dtype=torch.float64,
            allow_nan_rows=self.observation == "estimate",
        )
        B = obs.value.shape[0]
        mask = episode_start_mask(episode_start, B)
        state = self._prepare(state, B, mask)
        features, state = self.policy_input.step(state, obs.value)
        return obs, self._normalize(features), state

    def predict(
        self,
        observation: Any,
        state: RLState | None = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, RLState]:
        """The action for the measurement y_t, on the Controller protocol.

        Parameters
        ----------
        observation : array-like or Tensor, (n_y,) or (B, n_y)
            Raw measurements (as the unwrapped env gives them). In ``"estimate"`` mode a NaN row
            means a missing measurement (the estimator predicts only).
        state : RLState, optional
            Returned by the previous call; ``None`` starts a new batch.
        episode_start : array-like of bool, (B,), optional
            Rows that begin a new episode (estimator/history reset, u_prev = 0).
        deterministic : bool, default True
            The policy's mean action (True) or a sample of its stochastic policy.

        Returns
        -------
        action : np.ndarray, (n_u,) or (B, n_u)
            In the policy's action bounds; the observation's dtype when it is a NumPy floating
            array, float64 otherwise.
        state : RLState

        Raises
        ------
        DimensionError
            If the observation is not (n_y,) or (B, n_y).
        BatchSizeError
            If B differs from the previous call's without a reset of every row, or
            ``episode_start`` has the wrong length.
        NonFiniteError
            On infinite entries, or NaN entries in ``"measurement"`` mode.
        """
        obs, features, state = self._features(observation, state, episode_start)
        action, _ = self.model.predict(features, deterministic=deterministic)
        action = np.clip(
            np.asarray(action, dtype=np.float64).reshape(-1, self.n_u),
            self.action_low,
            self.action_high,
        )
        u = torch.as_tensor(action, dtype=torch.float64)
        return as_action(u, obs.single, obs.np_dtype), state._replace(u_prev=u)

    # -- save / load -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The JSON sidecar: format, algorithm, observation settings, estimator, normalization."""
        est = self.policy_input.estimator
        norm = self.obs_normalization
        return {
            "format": _FORMAT,
            "algo": type(self.model).__name__,
            **self.policy_input.config(),
            "estimator": None
            if est is None
            else ("default" if self.default_estimator else type(est).__name__),
            "estimator_process_cov_scale": self.process_cov_scale,
            "obs_normalization": None
            if norm is None
            else {
                "mean": norm["mean"].tolist(),
                "var": norm["var"].tolist(),
                "epsilon": norm["epsilon"],
                "clip_obs": norm["clip_obs"],
            },
            "metadata": self.metadata,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the policy in Stable-Baselines3's ``.zip`` format and a JSON sidecar.

        ``path`` names the ``.zip`` (the suffix is added when missing); the sidecar is the same
        name with ``.json``. Both are written atomically (temporary file + rename). The
        estimator is not saved: :meth:`load` rebuilds the default one from the nominal model,
        and takes a trained estimator (e.g. a KalmanNet, saved with
        :func:`kalmannet_ctrl.training.save_checkpoint`) as an argument.

        Returns
        -------
        Path
            The ``.zip`` path.
        """
        zip_path, json_path = _paths(path)
        config = self.config()
        try:
            text = json.dumps(config, indent=2, default=str)
        except (TypeError, ValueError) as exc:  # pragma: no cover - default=str covers it
            raise TypeError(f"metadata: expected JSON-able values ({exc})") from exc
        zip_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=zip_path.parent, prefix=f".{zip_path.stem}.", suffix=".zip")
        os.close(fd)
        try:
            self.model.save(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, zip_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _atomic_write_text(json_path, text)
        return zip_path

    @staticmethod
    def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The validated JSON sidecar of a controller saved at ``path`` (see :meth:`config`).

        Raises
        ------
        CheckpointError
            If the sidecar is missing, unreadable or foreign.
        """
        return _read_sidecar(_paths(path)[1])

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: Any = None,
        *,
        estimator: Estimator | None = None,
        device: str = "cpu",
    ) -> RLController:
        """Load a controller written by :meth:`save`.

        The observation settings, the angle components (``angles``) included, come from the
        sidecar; a sidecar written before angle features existed has none (the policy saw raw
        values).

        Parameters
        ----------
        path : path-like
            The ``.zip`` (or its name without the suffix); the ``.json`` sidecar must be beside.
        model : SystemModel or Gymnasium env, optional
            The nominal model (or an env whose ``unwrapped.nominal_model`` it is) to rebuild the
            default estimator of an ``"estimate"`` policy. Not needed in ``"measurement"`` mode.
        estimator : Estimator, optional
            The estimator of an ``"estimate"`` policy trained with a non-default estimator
            (same class as recorded in the sidecar).
        device : str, default "cpu"
            Where the policy's network is loaded.

        Raises
        ------
        CheckpointError
            If a file is missing, truncated or foreign, or does not fit the recorded settings.
        TypeError
            If an ``"estimate"`` policy gets neither the estimator it needs nor a nominal model.
        MissingDependencyError
            If Stable-Baselines3 is not installed.
        """
        sb3 = require_sb3()
        zip_path, json_path = _paths(path)
        config = _read_sidecar(json_path)
        if not zip_path.is_file():
            raise CheckpointError(f"path: no policy file at {zip_path}")
        algo_cls = getattr(sb3, config["algo"])
        try:
            policy = algo_cls.load(
                str(zip_path),
                device=device,
                custom_objects={"learning_rate": 0.0, "lr_schedule": _zero, "clip_range": _zero},
            )
        except (
            zipfile.BadZipFile,
            OSError,
            KeyError,
            ValueError,
            RuntimeError,
            EOFError,
            AttributeError,
            TypeError,
        ) as exc:
            raise CheckpointError(
                f"path: {zip_path} is not a readable Stable-Baselines3 {config['algo']} ({exc})"
            ) from exc
        nominal = None
        if config["observation"] == "estimate":
            recorded = config["estimator"]
            if estimator is not None:
                if recorded not in ("default", type(estimator).__name__):
                    raise TypeError(
                        f"estimator: the policy was trained with a {recorded}, "
                        f"found {type(estimator).__name__}"
                    )
            else:
                if recorded != "default":
                    raise TypeError(
                        f"estimator: the policy was trained with a {recorded}; pass it "
                        "(estimator=...), it is not saved with the policy"
                    )
                nominal = getattr(getattr(model, "unwrapped", None), "nominal_model", model)
                if not isinstance(nominal, SystemModel):
                    raise TypeError(
                        "model: an observation='estimate' policy needs the nominal model (a "
                        "SystemModel or an env with unwrapped.nominal_model) to rebuild its "
                        f"estimator, found {type(model).__name__}"
                    )
        try:
            ctrl = cls(
                policy,
                observation=config["observation"],
                estimator=estimator,
                history=config["history"],
                include_actions=config["include_actions"],
                include_covariance=config["include_covariance"],
                angles=config["angles"],
                nominal_model=nominal,
                process_cov_scale=config["estimator_process_cov_scale"],
                obs_normalization=config["obs_normalization"],
                metadata=config["metadata"],
            )
        except (DimensionError, ParameterError) as exc:
            raise CheckpointError(f"path: {zip_path} does not fit its sidecar ({exc})") from exc
        if (ctrl.n_y, ctrl.n_u) != (config["n_y"], config["n_u"]):
            raise CheckpointError(
                f"path: expected n_y = {config['n_y']}, n_u = {config['n_u']} (sidecar), "
                f"found n_y = {ctrl.n_y}, n_u = {ctrl.n_u}"
            )
        return ctrl

    def __repr__(self) -> str:
        return (
            f"RLController({type(self.model).__name__}, observation={self.observation!r}, "
            f"n_y={self.n_y}, n_u={self.n_u}, input={self.policy_input!r}, "
            f"normalized={self.obs_normalization is not None})"
        )


def _zero(_: float) -> float:
    return 0.0


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix != ".zip":
        p = p.with_name(p.name + ".zip")
    return p, p.with_suffix(".json")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SIDECAR_KEYS = {
    "format": str,
    "algo": str,
    "observation": str,
    "n_y": int,
    "n_u": int,
    "history": int,
    "include_actions": bool,
    "include_covariance": bool,
    "metadata": dict,
}


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"path: no sidecar at {path} (written by RLController.save)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"path: {path} is not readable JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        raise CheckpointError(f"path: {path} is not a kalmannet_ctrl RL sidecar ({_FORMAT})")
    for key, kind in _SIDECAR_KEYS.items():
        if not isinstance(config.get(key), kind):
            raise CheckpointError(
                f"path: {path} has no valid {key!r} (expected {kind.__name__}, "
                f"found {config.get(key)!r})"
            )
    if config["algo"] not in _ALGOS:
        raise CheckpointError(f"path: {path} names an unknown algorithm {config['algo']!r}")
    if config["observation"] not in OBSERVATION_MODES:
        raise CheckpointError(f"path: {path} has an unknown observation {config['observation']!r}")
    if config.get("estimator") is not None and not isinstance(config["estimator"], str):
        raise CheckpointError(f"path: {path} has an invalid 'estimator' entry")
    angles = config.setdefault("angles", [])  # sidecars written before angles: none
    if not isinstance(angles, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in angles
    ):
        raise CheckpointError(f"path: {path} has an invalid 'angles' entry (expected ints)")
    config.setdefault("estimator", None)
    config.setdefault("obs_normalization", None)
    scale = config.setdefault("estimator_process_cov_scale", 1.0)  # older sidecars: none
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise CheckpointError(
            f"path: {path} has an invalid 'estimator_process_cov_scale' (expected a number > 0, "
            f"found {scale!r})"
        )
    return config
