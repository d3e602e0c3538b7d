"""A Stable-Baselines3 ``VecEnv`` over the native vector envs: one batched call steps every copy.

``make_vec_env`` steps its copies one by one (a ``DummyVecEnv`` of single envs, each in an
observation wrapper that runs its own estimator). :class:`NativeVecEnv` steps the registered
env's native vector env (:class:`~kalmannet_ctrl.envs.PartiallyKnownVectorEnv`, with
Stable-Baselines3's same-step autoreset) and computes every copy's policy input with one batched
:class:`~kalmannet_ctrl.rl.PolicyObservation`: the estimator steps all copies at once. With one
copy it gives what ``make_vec_env`` of the wrapped env gives, step for step (the tests check it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from kalmannet_ctrl.envs import PartiallyKnownVectorEnv

from .._validation import check_positive_int
from ..estimators.base import Estimator
from ._deps import require_sb3
from .observations import (
    PolicyObservation,
    RLState,
    check_mode,
    default_estimator,
    from_unit_actions,
)
from .wrappers import declared_angles

__all__ = ["NativeVecEnv"]


def _vec_env_base() -> type:
    return require_sb3().common.vec_env.VecEnv


class NativeVecEnv(_vec_env_base()):  # type: ignore[misc]
    """Stable-Baselines3 ``VecEnv`` of ``n_envs`` copies of a registered environment.

    The copies are one native vector env (``gym.make_vec(env_id, n_envs, **env_kwargs)`` with
    ``autoreset_mode=SAME_STEP``); the policy sees what
    :class:`~kalmannet_ctrl.rl.EstimateObservation` (``observation="estimate"``) or
    :class:`~kalmannet_ctrl.rl.MeasurementHistory` (``"measurement"``) would show it, computed
    for every copy at once. A copy whose episode ends restarts in the same step, as
    Stable-Baselines3 expects: ``infos[i]["terminal_observation"]`` holds the policy's
    observation of its last step and ``infos[i]["TimeLimit.truncated"]`` tells a truncation from
    a failure. Wrap it in SB3's ``VecMonitor`` for episode statistics and ``VecNormalize`` for
    normalization, as any VecEnv.

    Parameters
    ----------
    env_id : str
        A registered id of :mod:`kalmannet_ctrl.envs` (a native vector env).
    n_envs : int
    observation : {"measurement", "estimate"}, default "measurement"
    estimator : Estimator, optional
        ``"estimate"`` mode: a Gaussian filter (KF, EKF, UKF, learned-noise filter); default
        :func:`~kalmannet_ctrl.rl.default_estimator` of the env's nominal model with
        ``process_cov_scale``.
    history : int, default 4
        Measurements stacked (``"measurement"`` mode).
    include_actions, include_covariance : bool, default False
        As the wrappers'.
    angles : sequence of int, optional
        Default: the env's declaration (:func:`~kalmannet_ctrl.rl.declared_angles`).
    process_cov_scale : float, default 1
        Of the default estimator.
    rescale_actions : bool, default False
        Take actions in [−1, 1], mapped to the env's bounds as Gymnasium's ``RescaleAction``
        maps them.
    env_kwargs : mapping, optional
        Passed to ``gym.make_vec`` (e.g. ``{"mismatch": {...}}``).

    Attributes
    ----------
    venv : PartiallyKnownVectorEnv
    policy_input : PolicyObservation

    Shapes
    ------
    reset -> (n_envs, size); step_wait -> obs (n_envs, size) float32, rewards (n_envs,) float32,
    dones (n_envs,) bool, infos list of dict

    Raises
    ------
    TypeError
        If ``env_id`` has no native vector env, or the estimator's state is not a Gaussian
        filter's.
    ParameterError
        On an unknown ``observation`` or ``n_envs`` < 1.
    """

    def __init__(
        self,
        env_id: str,
        n_envs: int,
        *,
        observation: str = "measurement",
        estimator: Estimator | None = None,
        history: int = 4,
        include_actions: bool = False,
        include_covariance: bool = False,
        angles: Iterable[int] | None = None,
        process_cov_scale: float = 1.0,
        rescale_actions: bool = False,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        n_envs = check_positive_int(n_envs, "n_envs")
        mode = check_mode(observation)
        missing = (
            f"env_id: {env_id} has no native vector env (a PartiallyKnownVectorEnv); use "
            "make_vec_env"
        )
        if gym.spec(env_id).vector_entry_point is None:
            raise TypeError(missing)
        try:
            venv = gym.make_vec(
                env_id,
                num_envs=n_envs,
                autoreset_mode=AutoresetMode.SAME_STEP,
                **(env_kwargs or {}),
            )
        except TypeError as exc:  # another library's vector env, without same-step autoreset
            raise TypeError(f"{missing} ({exc})") from exc
        if not isinstance(venv, PartiallyKnownVectorEnv):
            venv.close()
            raise TypeError(
                f"env_id: {env_id} has no native vector env (a PartiallyKnownVectorEnv), found "
                f"{type(venv).__name__}; use make_vec_env"
            )
        single = venv.env
        settings: dict[str, Any]
        if mode == "estimate":
            if estimator is None:
                estimator = default_estimator(single.nominal_model, process_cov_scale)
            settings = {"estimator": estimator, "include_covariance": include_covariance}
        else:
            settings = {"history": history, "include_actions": include_actions}
        self.venv = venv
        self.policy_input = PolicyObservation(
            mode,
            n_y=int(np.prod(single.observation_space.shape)),
            n_u=int(np.prod(single.action_space.shape)),
            angles=declared_angles(single, mode) if angles is None else angles,
            **settings,
        )
        if mode == "estimate":  # restarting rows merges Gaussian filter states: check it now
            probe = self.policy_input.init(2)
            try:
                self.policy_input.restart(
                    probe, np.array([True, False]), torch.zeros(1, self.policy_input.n_y)
                )
            except TypeError:
                venv.close()
                raise
        action_space = single.action_space
        assert isinstance(action_space, spaces.Box)
        self._low = np.asarray(action_space.low, dtype=np.float64)
        self._high = np.asarray(action_space.high, dtype=np.float64)
        self.rescale_actions = bool(rescale_actions)
        if self.rescale_actions:
            action_space = spaces.Box(-1.0, 1.0, shape=action_space.shape, dtype=np.float32)
        size = self.policy_input.size
        obs_space = spaces.Box(-np.inf, np.inf, shape=(size,), dtype=np.float32)
        super().__init__(n_envs, obs_space, action_space)
        self._state: RLState | None = None
        self._actions: np.ndarray | None = None

    # -- the VecEnv interface ------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        """Start an episode in every copy, seeded by the last :meth:`seed` (its first seed: the
        native env takes one seed for all copies)."""
        seed = self._seeds[0] if self._seeds else None
        options = self._options[0] if self._options else None
        y, info = self.venv.reset(seed=seed, options=options or None)
        self._reset_seeds()
        self._reset_options()
        state = self.policy_input.init(self.num_envs)
        obs, self._state = self.policy_input.step(state, _rows(y))
        self.reset_infos = [{"state": info["state"][b]} for b in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        if self._state is None or self._actions is None:
            raise RuntimeError("step: call reset() before step()")
        B, n_u = self.num_envs, self.policy_input.n_u
        # the env clips the action to its bounds: the clipped one is what the plant received
        a = self._actions.reshape(B, n_u).astype(np.float64)
        if self.rescale_actions:  # RescaleAction's affine map from [-1, 1] to the bounds
            a = from_unit_actions(a, self._low, self._high)
        u = np.clip(a, self._low, self._high)
        self._actions = None
        y, reward, terminated, truncated, info = self.venv.step(u.astype(np.float32))
        ended = np.asarray(terminated) | np.asarray(truncated)
        last = y.copy()
        if ended.any():
            last[ended] = np.stack(list(info["final_obs"][ended]))
        state = self._state._replace(u_prev=torch.as_tensor(u))
        obs, state = self.policy_input.step(state, _rows(last))
        infos: list[dict[str, Any]] = [{} for _ in range(B)]
        if ended.any():
            final_state = info["final_info"]["state"]
            for b in np.flatnonzero(ended):
                infos[b] = {
                    "terminal_observation": obs[b].copy(),
                    "TimeLimit.truncated": bool(truncated[b] and not terminated[b]),
                    "state": final_state[b],
                }
            first, state = self.policy_input.restart(state, ended, _rows(y[ended]))
            obs[ended] = first
        self._state = state
        return obs, np.asarray(reward, dtype=np.float32), ended, infos

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        """The attribute of the (shared) single env, once per copy of ``indices``."""
        value = getattr(self.venv.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        """Set an attribute of the single env every copy shares (all copies at once)."""
        if len(list(self._get_indices(indices))) != self.num_envs:
            raise ValueError("indices: the copies share one env; set an attribute for all")
        setattr(self.venv.env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the shared single env, once per copy of ``indices``."""
        method = getattr(self.venv.env, method_name)
        return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        """No copy is wrapped in a Gymnasium wrapper (the policy input is computed here)."""
        return [False for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No frames (the native env draws only when made with ``render_mode``)."""
        return [None for _ in range(self.num_envs)]


def _rows(y: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(len(y), -1))
