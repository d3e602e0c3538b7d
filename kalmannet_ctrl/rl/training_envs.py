"""The training copies of :func:`~kalmannet_ctrl.rl.train_rl`: one copy's spec (the env in the
policy-input wrapper, actions optionally rescaled to [−1, 1]) and the vectorized, normalized
copies built from it (SB3's ``make_vec_env`` or :class:`~kalmannet_ctrl.rl.NativeVecEnv`)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from kalmannet_ctrl.envs import PartiallyKnownEnv

from ..errors import ParameterError
from ..estimators.base import Estimator
from ..models.base import SystemModel
from .callbacks import Checkpoints
from .observations import default_estimator
from .wrappers import EstimateObservation, MeasurementHistory, declared_angles

if TYPE_CHECKING:
    from .train import _Plan

__all__: list[str] = []


@dataclass(frozen=True)
class EnvSpec:
    """One training copy: ``gym.make(env_id, **env_kwargs, **training_kwargs)`` in the wrapper
    of the policy input; ``env_kwargs`` alone make the env the policy is judged on."""

    env_id: str
    env_kwargs: dict[str, Any]
    observation: str
    estimator: Estimator | None  # the policy's ("estimate" mode): the caller's or the default
    history: int
    include_actions: bool
    include_covariance: bool
    angles: tuple[int, ...]
    rescale_actions: bool = False
    #: The env's action bounds (low, high), which a rescaled policy's [-1, 1] maps to.
    action_bounds: tuple[np.ndarray, np.ndarray] | None = None
    #: Env arguments of the training copies only (``discount_failure``'s ``failure_discount``).
    training_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def training_env_kwargs(self) -> dict[str, Any]:
        """The arguments of a training copy: ``env_kwargs`` and ``training_kwargs``."""
        return {**self.env_kwargs, **self.training_kwargs}

    def evaluation(self) -> EnvSpec:
        """The same copy on the env as judged (``env_kwargs`` only)."""
        return replace(self, training_kwargs={})

    def make(self) -> gym.Env:
        """A new wrapped copy (``make_vec_env`` seeds it): the policy input, then (outermost)
        Gymnasium's ``RescaleAction`` to [−1, 1] when ``rescale_actions``."""
        env = gym.make(self.env_id, **self.training_env_kwargs)
        wrapped: gym.Env
        if self.observation == "estimate":
            wrapped = EstimateObservation(
                env, self.estimator, include_covariance=self.include_covariance, angles=self.angles
            )
        else:
            wrapped = MeasurementHistory(
                env, self.history, include_actions=self.include_actions, angles=self.angles
            )
        if self.rescale_actions:
            wrapped = gym.wrappers.RescaleAction(wrapped, np.float32(-1.0), np.float32(1.0))
        return wrapped


def env_spec(
    plan: _Plan,
    env_kwargs: Mapping[str, Any] | None,
    estimator: Estimator | None,
    *,
    include_actions: bool,
    include_covariance: bool,
    angles: Iterable[int] | None,
) -> tuple[EnvSpec, SystemModel | None]:
    """The training copies' spec and the env's nominal model (None for an env that is not a
    :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv`), from one probe copy of the env."""
    env_id, observation, history = plan.env_id, plan.observation, plan.history
    kwargs = dict(env_kwargs or {})
    if observation == "estimate":
        history, include_actions = 1, False
    training_kwargs = _training_kwargs(plan)
    try:
        probe = gym.make(env_id, **kwargs, **training_kwargs)
    except TypeError as exc:
        if not training_kwargs:
            raise
        raise ParameterError(
            f"discount_failure: {env_id} takes no {sorted(training_kwargs)} argument ({exc})"
        ) from exc
    known = isinstance(probe.unwrapped, PartiallyKnownEnv)
    nominal = probe.unwrapped.nominal_model if known else None
    angles = tuple(declared_angles(probe, observation) if angles is None else angles)
    space = probe.action_space
    bounds = None
    if plan.rescale_actions:
        if not isinstance(space, gym.spaces.Box) or not np.all(np.isfinite(space.low)):
            probe.close()
            raise ParameterError(
                f"rescale_actions: {env_id} has no bounded Box action space to rescale, "
                f"found {space!r}"
            )
        bounds = (np.asarray(space.low, np.float64), np.asarray(space.high, np.float64))
    probe.close()
    if observation == "estimate" and estimator is None:
        if nominal is None:
            raise TypeError(
                f"estimator: {env_id} has no unwrapped.nominal_model to build the default "
                "estimator on; pass an estimator"
            )
        estimator = default_estimator(nominal, plan.process_cov_scale)
    spec = EnvSpec(
        env_id,
        kwargs,
        observation,
        estimator,
        history,
        include_actions,
        include_covariance,
        angles,
        plan.rescale_actions,
        bounds,
        training_kwargs,
    )
    return spec, nominal


def _training_kwargs(plan: _Plan) -> dict[str, Any]:
    """The training copies' extra env arguments: with the table's ``discount_failure``, the
    env's ``failure_discount`` at the algorithm's discount factor (its ``gamma``, else the
    algorithm's default)."""
    if not plan.meta.get("discount_failure", False):
        return {}
    gamma = plan.ctor.get("gamma")
    if gamma is None:
        from ._deps import algorithm_class
        from .hyperparams import ALGO_CLASSES

        algo_cls = algorithm_class(ALGO_CLASSES[plan.algo])
        gamma = inspect.signature(algo_cls.__init__).parameters["gamma"].default
    return {"failure_discount": float(gamma)}


def vectorized(spec: EnvSpec, vec_env: str, n_envs: int, seed: int, monitor: Path | None) -> Any:
    """``n_envs`` copies of ``spec`` stepped as ``vec_env`` says: Monitor-wrapped copies in a
    DummyVecEnv (seeds seed, seed + 1, …), or a VecMonitor-wrapped
    :class:`~kalmannet_ctrl.rl.NativeVecEnv` (seeded ``seed``); episode statistics written to
    the folder ``monitor`` when given."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecMonitor

    if vec_env != "native":
        return make_vec_env(
            spec.make,
            n_envs=n_envs,
            seed=seed,
            monitor_dir=None if monitor is None else str(monitor),
        )
    from .vec_env import NativeVecEnv

    venv = NativeVecEnv(
        spec.env_id,
        n_envs,
        observation=spec.observation,
        estimator=spec.estimator,
        history=spec.history,
        include_actions=spec.include_actions,
        include_covariance=spec.include_covariance,
        angles=spec.angles,
        env_kwargs=spec.training_env_kwargs,
        rescale_actions=spec.rescale_actions,
    )
    venv.seed(seed)
    if monitor is not None:
        monitor.mkdir(parents=True, exist_ok=True)
    return VecMonitor(venv, filename=None if monitor is None else str(monitor / "native"))


def training_envs(spec: EnvSpec, plan: _Plan, checkpoints: Checkpoints) -> Any:
    """The ``n_envs`` training copies (:func:`vectorized`, seeded ``plan.seed``, episode
    statistics in ``log_dir/monitor``), in VecNormalize when the table says ``normalize`` (its
    statistics resumed from a checkpoint)."""
    from stable_baselines3.common.vec_env import VecNormalize

    monitor = None if plan.root is None else plan.root / "monitor"
    venv = vectorized(spec, plan.vec_env, plan.n_envs, plan.seed, monitor)
    normalize = plan.meta.get("normalize", False)
    if not normalize:
        return venv
    vecnorm_path = checkpoints.file("vecnormalize")
    if vecnorm_path is not None:
        return VecNormalize.load(str(vecnorm_path), venv)
    norm_kwargs = dict(normalize) if isinstance(normalize, Mapping) else {}
    norm_kwargs.setdefault("gamma", plan.ctor.get("gamma", 0.99))
    return VecNormalize(venv, **norm_kwargs)
