"""The adapter of a trained Stable-Baselines3 policy to the controller base.

:class:`RLController` is a :class:`~kalmannet_ctrl.controllers.base.BaseController`: the base's
``predict`` converts and checks the raw measurement y_t, applies the ``episode_start`` resets and
runs without gradients; the adapter's :meth:`~RLController.act` computes what the policy saw in
training (:class:`~kalmannet_ctrl.rl.PolicyObservation`), normalizes it as training did and asks
the policy for u_t. It runs inside ``stable_baselines3.common.evaluation.evaluate_policy`` and
the bench runner as LQG does.

Stable-Baselines3 is imported when an :class:`RLController` is built or loaded, never at module
import.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._docstrings import fill
from .._validation import check_positive_float, check_positive_int
from ..controllers._docs import BASE_SHAPES
from ..controllers.base import BaseController, delegated
from ..errors import DimensionError, ParameterError
from ..estimators.base import Estimator
from ..models.base import SystemModel
from . import persistence
from ._deps import require_sb3
from .observations import (
    PolicyObservation,
    RLState,
    check_mode,
    default_estimator,
    estimator_n_y,
    from_unit_actions,
)

__all__ = ["RLController"]


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


def _check_action_bounds(
    bounds: Any, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The physical (low, high) of a policy whose action space (low, high) is [−1, 1]."""
    if not (np.all(low == -1.0) and np.all(high == 1.0)):
        raise ParameterError(
            "action_bounds: a rescaled policy acts in [-1, 1], found an action space "
            f"[{low.tolist()}, {high.tolist()}]"
        )
    try:
        b_low, b_high = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"action_bounds: expected (low, high) arrays, found {bounds!r}") from exc
    if b_low.shape != low.shape or b_high.shape != high.shape:
        raise DimensionError(
            f"action_bounds: expected (low, high) of shape {low.shape}, found "
            f"{b_low.shape} and {b_high.shape}"
        )
    if not (np.all(np.isfinite(b_low)) and np.all(np.isfinite(b_high)) and np.all(b_low < b_high)):
        raise ParameterError(
            f"action_bounds: expected finite low < high, found {b_low.tolist()}, {b_high.tolist()}"
        )
    return b_low, b_high


def _check_algorithm(sb3: Any, model: Any) -> tuple[int, int]:
    """(observation size, n_u) of a trained SB3 algorithm with flat Box spaces; TypeError else."""
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
    return int(obs_space.shape[0]), int(model.action_space.shape[0])


def _is_recurrent(model: Any) -> bool:
    """Whether ``model``'s policy keeps an LSTM state (sb3-contrib's recurrent policies)."""
    return hasattr(model.policy, "lstm_hidden_state_shape")


def _history_n_y(
    angles: Any, size: int, history: int, n_u: int, include_actions: bool
) -> tuple[int, tuple[Any, ...]]:
    """n_y of a ``"measurement"`` policy whose observation has ``size`` entries, and ``angles``
    as a tuple (checked further by :class:`PolicyObservation`)."""
    if isinstance(angles, (str, bytes)) or not isinstance(angles, Iterable):
        raise TypeError(
            f"angles: expected a sequence of component indices, found {type(angles).__name__}"
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
    return n_y, angles


@fill(base_shapes=BASE_SHAPES)
class RLController(BaseController):
    """A trained Stable-Baselines3 policy on the controller base, fed raw measurements.

    ``predict`` (the base's) takes the measurement y_t (one or a batch); :meth:`act` does what
    the training wrapper did (:class:`~kalmannet_ctrl.rl.PolicyObservation`: runs the
    estimator, or keeps the measurement history, in the explicit state; rows flagged by
    ``episode_start`` restart), applies the observation normalization of training
    (VecNormalize statistics) if any, and asks the policy for u_t. The action is clipped to the
    policy's action space and fed back to the estimator/history at the next call, as
    :class:`~kalmannet_ctrl.controllers.LQG` does. A recurrent policy (sb3-contrib's
    ``RecurrentPPO``) keeps its LSTM state in the controller state (``RLState.policy_state``),
    restarted from zero for the rows flagged by ``episode_start``.

    Parameters
    ----------
    model : stable_baselines3 BaseAlgorithm
        The trained policy (PPO, SAC, sb3-contrib's RecurrentPPO, ...), with a Box action
        space.
    observation : {"measurement", "estimate"}, default "measurement"
        What the policy was trained on (see :class:`~kalmannet_ctrl.rl.PolicyObservation`).
    estimator : Estimator, optional
        The estimator of ``"estimate"`` mode. Default:
        :func:`~kalmannet_ctrl.rl.default_estimator` of ``nominal_model``.
    history : int, default 1
        Measurements stacked in ``"measurement"`` mode (1: the policy sees y_t alone).
    include_actions, include_covariance : bool
        As in :class:`~kalmannet_ctrl.rl.PolicyObservation`.
    angles : sequence of int, default ()
        The angle components the policy saw as (cos, sin): as in training, e.g.
        ``env.unwrapped.angle_states`` (``"estimate"``) or ``env.unwrapped.angle_measurements``
        (``"measurement"``). Saved with the controller.
    nominal_model : SystemModel, optional
        The model the default estimator is built on (``env.unwrapped.nominal_model``).
    process_cov_scale : float, default 1
        Of the default estimator (:func:`~kalmannet_ctrl.rl.default_estimator`); saved with the
        controller.
    obs_normalization : mapping, optional
        VecNormalize statistics ``{"mean", "var", "epsilon", "clip_obs"}`` (mean and var of
        shape (size,)): the observation becomes clip((o − mean)/sqrt(var + epsilon), ±clip_obs).
    action_bounds : (low, high), optional
        For a policy trained on actions rescaled to [−1, 1] (``train_rl(...,
        rescale_actions=True)``, Gymnasium's ``RescaleAction``): the physical bounds its action
        a is mapped back to, u = low + (a + 1)(high − low)/2 (the policy's action space must be
        [−1, 1]). None: the policy acts in the env's units. Saved with the controller.
    metadata : mapping, optional
        JSON-able notes saved with the controller (e.g. env id, training record).

    Attributes
    ----------
    policy_input : PolicyObservation
    model, metadata
    estimator : Estimator or None
        The estimator of ``"estimate"`` mode; None in ``"measurement"`` mode, where
        :meth:`estimate` returns None.
    accepts_missing : bool
        True in ``"estimate"`` mode only (a NaN row: the estimator predicts only).
    default_estimator : bool
        Whether the estimator is the default one (rebuilt from the nominal model at load).
    process_cov_scale : float
    action_low, action_high : np.ndarray, (n_u,)
    input_bounds : tuple of Tensor (n_u,)
        The bounds of the actions applied, float64: the policy's action space, or
        ``action_bounds`` for a rescaled policy.
    rescaled : bool
        Whether the policy's actions in [−1, 1] are mapped to ``action_bounds``.

    Shapes
    ------
    %(base_shapes)s

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

    state_type = RLState

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
        action_bounds: tuple[Any, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        size, n_u = _check_algorithm(require_sb3(), model)
        mode = check_mode(observation)
        history = check_positive_int(history, "history")
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
            n_y = estimator_n_y(estimator)
            if n_y is None:
                raise TypeError(
                    "estimator: cannot tell its measurement size (no n_y or model.n_y), found "
                    f"{type(estimator).__name__}"
                )
        else:
            n_y, angles = _history_n_y(angles, size, history, n_u, include_actions)
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
                f"{self.policy_input!r}, found {model.observation_space.shape}"
            )
        self.model = model
        #: Whether the policy is recurrent (sb3-contrib's RecurrentPPO): its LSTM state is
        #: carried in the controller state (``RLState.policy_state``).
        self.recurrent = _is_recurrent(model)
        self.estimator = estimator
        self.action_low = np.asarray(model.action_space.low, dtype=np.float64)
        self.action_high = np.asarray(model.action_space.high, dtype=np.float64)
        self.rescaled = action_bounds is not None
        if action_bounds is not None:
            self.action_low, self.action_high = _check_action_bounds(
                action_bounds, self.action_low, self.action_high
            )
        self.input_bounds = (torch.as_tensor(self.action_low), torch.as_tensor(self.action_high))
        self.obs_normalization = _check_normalization(obs_normalization, size)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- dimensions and capabilities ---------------------------------------------------------------
    observation = delegated(
        "policy_input", "mode", 'The observation mode, ``"measurement"`` or ``"estimate"``.'
    )
    n_y = delegated("policy_input", "n_y", "Size of one raw measurement.")
    n_u = delegated("policy_input", "n_u", "Size of one action.")

    @property  # type: ignore[override]
    def accepts_missing(self) -> bool:
        """True in ``"estimate"`` mode (a NaN row: the estimator predicts only); a
        measurement-history policy needs every measurement."""
        return self.policy_input.mode == "estimate"

    # -- the controller base -----------------------------------------------------------------------
    def init(self, batch_size: int) -> RLState:
        """The state before the first measurement of ``batch_size`` episodes.

        Shapes
        ------
        -> RLState; u_prev (B, n_u) zeros
        """
        return self.policy_input.init(batch_size)

    def reset_rows(self, state: RLState, mask: Tensor) -> RLState:
        """Estimator prior (or empty history) and u_prev = 0 for the rows where ``mask`` is True.

        Shapes
        ------
        mask : (B,) bool
        """
        return self.policy_input.reset(state, mask)

    def act(
        self, state: RLState, y: Tensor, *, episode_start: Tensor | None, deterministic: bool
    ) -> tuple[Tensor, RLState]:
        """The policy's (normalized) input for y_t, then its action u_t, clipped to the action
        space (float64; also the new state's ``u_prev``).

        Shapes
        ------
        y : (B, n_y) -> u (B, n_u)
        """
        features, state = self.policy_input.step(state, y)
        obs = self._normalize(features)
        if self.recurrent:
            # rows restarted by episode_start already have the LSTM's zero state (reset_rows)
            action, policy_state = self.model.predict(
                obs, state=state.policy_state, deterministic=deterministic
            )
            state = state._replace(policy_state=tuple(np.asarray(h) for h in policy_state))
        else:
            action, _ = self.model.predict(obs, deterministic=deterministic)
        a = np.asarray(action, dtype=np.float64).reshape(-1, self.n_u)
        if self.rescaled:  # Gymnasium's RescaleAction map from [-1, 1] to the bounds
            a = from_unit_actions(a, self.action_low, self.action_high)
        u = self.clip(torch.as_tensor(a))
        return u, state._replace(u_prev=u)

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
        (``state._replace(u_prev=u)``) before the next call, as :meth:`predict` does. Errors as
        :meth:`predict`'s.

        Shapes
        ------
        observation (n_y,) or (B, n_y) -> (B, size) float32
        """
        y = self._observation_batch(observation).value
        state, _ = self._resume(state, y, episode_start)
        features, state = self.policy_input.step(state, y)
        return self._normalize(features), state

    # -- save / load -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The JSON sidecar: format, algorithm, observation settings, estimator, normalization."""
        return persistence.sidecar(self)

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
        return persistence.save(self, path)

    @staticmethod
    def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The validated JSON sidecar of a controller saved at ``path`` (see :meth:`config`).

        Raises
        ------
        CheckpointError
            If the sidecar is missing, unreadable or foreign.
        """
        return persistence.read_sidecar(path)

    @classmethod
    @fill(load_raises=persistence.LOAD_RAISES)
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
            The nominal model (or a :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`, whose
            ``unwrapped.nominal_model`` it is) to rebuild the default estimator of an
            ``"estimate"`` policy. Not needed in ``"measurement"`` mode.
        estimator : Estimator, optional
            The estimator of an ``"estimate"`` policy trained with a non-default estimator
            (same class as recorded in the sidecar).
        device : str, default "cpu"
            Where the policy's network is loaded.

        Raises
        ------
        %(load_raises)s
        """
        return persistence.load(cls, path, model, estimator=estimator, device=device)

    def __repr__(self) -> str:
        return (
            f"RLController({type(self.model).__name__}, observation={self.observation!r}, "
            f"n_y={self.n_y}, n_u={self.n_u}, input={self.policy_input!r}, "
            f"normalized={self.obs_normalization is not None})"
        )
