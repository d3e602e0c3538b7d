"""Model-free RL on the environments with Stable-Baselines3 (PPO, SAC): training and loading.

:func:`train_rl` wraps copies of an environment so that the policy observes a state estimate or
a measurement history (:mod:`kalmannet_ctrl.rl.wrappers`), trains Stable-Baselines3's PPO or
SAC with the per-environment hyperparameters of :data:`~kalmannet_ctrl.rl.HYPERPARAMS`, and
returns an :class:`~kalmannet_ctrl.rl.RLController` that runs the policy on raw measurements.
:func:`~kalmannet_ctrl.rl.load_rl` loads what it saved. Stable-Baselines3 is the optional extra
``rl``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from .._validation import check_positive_int
from ..errors import CheckpointError, ParameterError
from ..estimators.base import Estimator
from ..models.base import SystemModel
from ._deps import algorithm_class, require_sb3
from .callbacks import (
    BestPolicy,
    Checkpoints,
    LearningCurve,
    plot_learning_curves,
    progress_callback,
)
from .controller import RLController
from .hyperparams import (
    ALGO_CLASSES,
    META_KEYS,
    check_algo,
    constructor_arguments,
    hyperparams_for,
)
from .observations import check_mode
from .training_envs import EnvSpec, env_spec, training_envs, vectorized

__all__ = ["train_rl"]

#: The fields of a :class:`_Plan` its record repeats: algorithm, env, seed, copies, VecEnv.
_RECORDED: tuple[str, ...] = ("algo", "env_id", "seed", "n_envs", "vec_env")

#: How the training copies are stepped (``train_rl``'s ``vec_env``).
_VEC_ENVS: tuple[str, ...] = ("dummy", "native")


@dataclass(frozen=True)
class _Plan:
    """The resolved settings of a training run.

    ``ctor`` holds the algorithm's constructor arguments, ``meta`` the table's other keys as used
    (with ``n_envs``, ``n_timesteps``, ``eval_every``, ``eval_episodes`` resolved).
    """

    env_id: str
    algo: str
    observation: str
    history: int
    seed: int
    ctor: dict[str, Any]
    meta: dict[str, Any]
    total_timesteps: int
    n_envs: int
    eval_every: int | None
    eval_episodes: int
    checkpoint_every: int | None
    root: Path | None
    vec_env: str = "dummy"
    rescale_actions: bool = False

    @property
    def checkpoint_folder(self) -> Path | None:
        """``log_dir/checkpoints``, or None without a log folder."""
        return None if self.root is None else self.root / "checkpoints"

    @property
    def process_cov_scale(self) -> float:
        """The factor of the default estimator's process covariance (the table's, else 1)."""
        return float(self.meta.get("estimator_process_cov_scale", 1.0))

    def record(self) -> dict[str, Any]:
        """What the run was: the fields of :data:`_RECORDED` and the hyperparameters as used
        (JSON-able)."""
        recorded = {name: getattr(self, name) for name in _RECORDED}
        return {**recorded, "hyperparams": _jsonable({**self.ctor, **self.meta})}


def _plan(
    env_id: Any,
    algo: Any,
    total_timesteps: Any,
    *,
    observation: Any,
    history: Any,
    hyperparams: Mapping[str, Any] | None,
    n_envs: Any,
    eval_every: Any,
    eval_episodes: Any,
    log_dir: Any,
    checkpoint_every: Any,
    resume: bool,
    seed: int,
    vec_env: Any = None,
    rescale_actions: Any = None,
) -> _Plan:
    """The arguments of :func:`train_rl` checked and merged with the hyperparameter table."""
    algo = check_algo(algo)
    if not isinstance(env_id, str):
        raise TypeError(
            f"env_id: expected a registered Gymnasium id, found {type(env_id).__name__}"
        )
    observation = check_mode(observation)
    history = check_positive_int(history, "history")
    ctor = hyperparams_for(env_id, algo, hyperparams)
    meta = {key: ctor.pop(key) for key in META_KEYS if key in ctor}
    if eval_every is None:
        eval_every = meta.get("eval_every")
    if eval_every is not None:
        eval_every = check_positive_int(eval_every, "eval_every")
    if eval_episodes is None:
        eval_episodes = meta.get("eval_episodes", 20)
    eval_episodes = check_positive_int(eval_episodes, "eval_episodes")
    meta.update(eval_every=eval_every, eval_episodes=eval_episodes if eval_every else None)
    if total_timesteps is None:
        total_timesteps = int(meta.get("n_timesteps", 0)) or None
    total_timesteps = check_positive_int(total_timesteps, "total_timesteps")
    n_envs = check_positive_int(n_envs if n_envs is not None else meta.get("n_envs", 1), "n_envs")
    meta.update(n_envs=n_envs, n_timesteps=total_timesteps)
    if (checkpoint_every is not None or resume) and log_dir is None:
        raise ParameterError(
            "log_dir: checkpoint_every and resume need a log_dir for the checkpoints, found None"
        )
    if checkpoint_every is not None:
        checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if vec_env is None:
        vec_env = meta.get("vec_env", "dummy")
    if vec_env not in _VEC_ENVS:
        raise ParameterError(f"vec_env: expected one of {list(_VEC_ENVS)}, found {vec_env!r}")
    meta["vec_env"] = vec_env
    if rescale_actions is None:
        rescale_actions = meta.get("rescale_actions", False)
    if not isinstance(rescale_actions, bool):
        raise ParameterError(f"rescale_actions: expected a bool, found {rescale_actions!r}")
    meta["rescale_actions"] = rescale_actions
    if not isinstance(meta.get("discount_failure", False), bool):
        raise ParameterError(
            f"discount_failure: expected a bool, found {meta['discount_failure']!r}"
        )
    return _Plan(
        env_id,
        algo,
        observation,
        history,
        seed,
        ctor,
        meta,
        total_timesteps,
        n_envs,
        eval_every,
        eval_episodes,
        checkpoint_every,
        None if log_dir is None else Path(log_dir),
        vec_env,
        rescale_actions,
    )


def _algorithm(
    sb3: Any,
    plan: _Plan,
    venv: Any,
    checkpoints: Checkpoints,
    *,
    device: str,
    verbose: int,
) -> Any:
    """The SB3 algorithm: loaded from the latest checkpoint (with its replay buffer) or new,
    logging CSV (and stdout when ``verbose``) to the log folder."""
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    algo_cls = algorithm_class(ALGO_CLASSES[plan.algo])
    if checkpoints.latest is not None:
        try:
            model = algo_cls.load(str(checkpoints.latest[1]), env=venv, device=device)
        except Exception as exc:
            raise CheckpointError(
                f"log_dir: the checkpoint {checkpoints.latest[1]} is not readable ({exc})"
            ) from exc
        buffer = checkpoints.file("replay_buffer")
        if buffer is not None and isinstance(model, OffPolicyAlgorithm):
            model.load_replay_buffer(str(buffer))
    else:
        policy = plan.meta.get("policy", "MlpPolicy")
        ctor = constructor_arguments(plan.ctor)
        model = algo_cls(policy, venv, seed=plan.seed, device=device, verbose=verbose, **ctor)
    if plan.root is not None:
        model.set_logger(configure(str(plan.root), ["csv"] + (["stdout"] if verbose else [])))
    else:
        model.set_logger(_folderless_logger(verbose))
    return model


def _folderless_logger(verbose: int) -> Any:
    """SB3's logger without a folder: stdout when ``verbose``, else nothing (SB3's own default
    would create an empty ``SB3-<date>`` folder in the temporary directory at every ``learn``)."""
    import sys

    from stable_baselines3.common.logger import HumanOutputFormat, Logger

    return Logger(None, [HumanOutputFormat(sys.stdout)] if verbose else [])


def _callbacks(
    sb3: Any,
    plan: _Plan,
    spec: EnvSpec,
    venv: Any,
    checkpoints: Checkpoints,
    *,
    callback: Any,
    progress: bool,
) -> tuple[list[Any], BestPolicy | None]:
    """The callbacks of ``learn`` in order (the caller's, best evaluation, checkpoints,
    progress) and the best-evaluation keeper (or None)."""
    callbacks: list[Any] = []
    if callback is not None:
        callbacks.extend(callback if isinstance(callback, (list, tuple)) else [callback])
    best = None
    if plan.eval_every is not None:
        best = BestPolicy(
            # stepped as the training copies are (EvalCallback syncs VecNormalize statistics
            # through the same chain of wrappers), on the env as judged
            vectorized(spec.evaluation(), plan.vec_env, 1, plan.seed + 10_000, None),
            venv,
            eval_every=max(plan.eval_every // plan.n_envs, 1),
            episodes=plan.eval_episodes,
        )
        callbacks.append(best.callback)
    if plan.checkpoint_every is not None:
        callbacks.append(checkpoints.callback(plan.checkpoint_every, plan.n_envs))
    callbacks.append(progress_callback(sb3, enabled=progress))
    return callbacks, best


def _learning_curve(
    spec: EnvSpec,
    plan: _Plan,
    venv: Any,
    estimator: Estimator | None,
    nominal: SystemModel | None,
    *,
    every: int,
    episodes: int,
) -> LearningCurve:
    """The learning curve of a run: the policy of the moment as the controller
    :func:`train_rl` would return, on ``episodes`` copies of the native vector env."""
    judge = gym.make(spec.env_id, **spec.env_kwargs)
    steps = judge.spec.max_episode_steps if judge.spec is not None else None
    if steps is None:
        judge.close()
        raise ParameterError(
            f"curve_every: {spec.env_id} has no time limit (max_episode_steps) to evaluate over"
        )

    def make_controller(model: Any) -> RLController:
        return _controller(
            model,
            spec,
            plan,
            estimator=estimator,
            nominal=nominal,
            obs_normalization=_obs_normalization(venv),
            best_eval=None,
        )

    return LearningCurve(
        make_controller,
        lambda n: gym.make_vec(spec.env_id, num_envs=n, **spec.env_kwargs),
        judge,
        every=every,
        episodes=episodes,
        seed=plan.seed + 20_000,
        steps=int(steps),
        path=None if plan.root is None else plan.root / "learning_curve.csv",
    )


def _close_log(model: Any) -> None:
    """Close the run's CSV log in ``log_dir`` (complete on disk) and give the model a logger
    without a folder, so that further ``learn`` calls work."""
    model.logger.close()
    model.set_logger(_folderless_logger(model.verbose))


def _obs_normalization(venv: Any) -> dict[str, Any] | None:
    """The observation statistics of a VecNormalize that normalizes observations, else None."""
    from stable_baselines3.common.vec_env import VecNormalize

    if not (isinstance(venv, VecNormalize) and venv.norm_obs):
        return None
    return {
        "mean": np.asarray(venv.obs_rms.mean, dtype=np.float64),
        "var": np.asarray(venv.obs_rms.var, dtype=np.float64),
        "epsilon": float(venv.epsilon),
        "clip_obs": float(venv.clip_obs),
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _controller(
    model: Any,
    spec: EnvSpec,
    plan: _Plan,
    *,
    estimator: Estimator | None,
    nominal: SystemModel | None,
    obs_normalization: dict[str, Any] | None,
    best_eval: dict[str, Any] | None,
) -> RLController:
    """The trained policy as an :class:`RLController` on raw measurements, with its record; the
    default estimator is rebuilt from ``nominal`` (as :meth:`RLController.load` does)."""
    return RLController(
        model,
        observation=spec.observation,
        estimator=estimator,
        history=spec.history,
        include_actions=spec.include_actions,
        include_covariance=spec.include_covariance,
        angles=spec.angles,
        nominal_model=nominal if estimator is None else None,
        process_cov_scale=plan.process_cov_scale,
        obs_normalization=obs_normalization,
        action_bounds=spec.action_bounds,
        metadata={
            **plan.record(),
            "env_kwargs": _jsonable(spec.env_kwargs),
            "training_env_kwargs": _jsonable(spec.training_kwargs),
            "env_steps": int(model.num_timesteps),
            "best_eval": best_eval,
        },
    )


def train_rl(
    env_id: str,
    algo: str = "sac",
    total_timesteps: int | None = None,
    *,
    observation: str = "measurement",
    estimator: Estimator | None = None,
    history: int = 4,
    include_actions: bool = False,
    include_covariance: bool = False,
    angles: Iterable[int] | None = None,
    seed: int = 0,
    n_envs: int | None = None,
    hyperparams: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    log_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Any = None,
    eval_every: int | None = None,
    eval_episodes: int | None = None,
    curve_every: int | None = None,
    curve_episodes: int = 20,
    vec_env: str | None = None,
    rescale_actions: bool | None = None,
    device: str = "cpu",
    verbose: int = 0,
) -> tuple[RLController, dict[str, Any]]:
    """Train a PPO, SAC or RecurrentPPO policy on an environment, observed through a wrapper.

    Each of ``n_envs`` copies of ``gym.make(env_id, **env_kwargs)`` is wrapped in
    :class:`~kalmannet_ctrl.rl.EstimateObservation` (``observation="estimate"``) or
    :class:`~kalmannet_ctrl.rl.MeasurementHistory` (``"measurement"``) and in SB3's
    ``Monitor``, vectorized with ``make_vec_env`` (a ``DummyVecEnv``) and, when the
    hyperparameters say ``normalize``, SB3's ``VecNormalize``. The algorithm is built with
    :func:`~kalmannet_ctrl.rl.hyperparams_for` ``(env_id, algo, hyperparams)``: the entries of
    the files ``kalmannet_ctrl/rl/hyperparams/<algo>.yml`` (:data:`~kalmannet_ctrl.rl.HYPERPARAMS`),
    adapted from rl-baselines3-zoo's tuned settings for the closest Gymnasium task (Pendulum-v1
    for Pendulum and LinearSystem; the pybullet InvertedPendulumSwingup defaults for CartPole
    SAC, MuJoCo InvertedPendulum-v2 for CartPole PPO; SB3's defaults for other envs), each with
    its source and why it departs from it. An entry with ``discount_failure: true`` trains on
    copies whose failure cost is discounted at the algorithm's ``gamma`` (the env's
    ``failure_discount``, e.g. :class:`~kalmannet_ctrl.envs.CartPoleEnv`'s: the rest of the
    episode charged as that learner discounts it); the learning curve, the best-policy
    evaluation and every comparison judge the env as made with ``env_kwargs``.
    ``"recurrentppo"`` is sb3-contrib's RecurrentPPO (an LSTM policy, rl-zoo's ``ppo_lstm``
    settings): meant for raw measurements (``observation="measurement"``, ``history=1``), its
    LSTM state is carried in the returned controller's state and restarted by
    ``episode_start``.

    Parameters
    ----------
    env_id : str
        A registered Gymnasium id, e.g. ``"kalmannet_ctrl/Pendulum-v0"``.
    algo : {"sac", "ppo", "recurrentppo"}, default "sac"
    total_timesteps : int, optional
        Env steps over all copies; default the table's ``n_timesteps``.
    observation : {"measurement", "estimate"}, default "measurement"
        What the policy sees (see :class:`~kalmannet_ctrl.rl.PolicyObservation`).
    estimator : Estimator, optional
        The estimator of ``"estimate"`` mode, shared by every copy and the returned controller.
        Default: :func:`~kalmannet_ctrl.rl.default_estimator` (Kalman filter of a linear nominal
        model, else EKF) of ``env.unwrapped.nominal_model``, with the table's
        ``estimator_process_cov_scale``.
    history : int, default 4
        Measurements stacked in ``"measurement"`` mode (ignored in ``"estimate"`` mode).
    include_actions : bool, default False
        Stack the actions with the measurements (``"measurement"`` mode).
    include_covariance : bool, default False
        Append diag(P_{t|t}) to the estimate (``"estimate"`` mode).
    angles : sequence of int, optional
        Components shown to the policy as (cos, sin): of the estimate (``"estimate"``) or of
        each measurement (``"measurement"``). Default: the env's declaration,
        ``unwrapped.angle_states`` or ``unwrapped.angle_measurements`` of a
        :class:`~kalmannet_ctrl.envs.PartiallyKnownEnv` (the pendulum's θ; none for other
        envs); ``()`` for none. Recorded in the controller.
    seed : int, default 0
        Seeds the algorithm (SB3 seeds its networks and sampling) and the copies (seed + i).
        Same seed, same weights on CPU.
    n_envs : int, optional
        Copies of the env; default the table's.
    hyperparams : mapping, optional
        Overrides of the table entry (SB3 constructor arguments, ``normalize``, ``n_envs``).
    env_kwargs : mapping, optional
        Passed to ``gym.make`` (e.g. ``{"mismatch": {...}}``).
    progress : bool, default True
        Show a progress bar of the env steps (when the output is a terminal).
    log_dir : path-like, optional
        Where Monitor CSVs (``monitor/``), SB3's CSV log (``progress.csv``, closed when the
        call returns), checkpoints (``checkpoints/``) and the final controller (``final.zip`` +
        ``final.json``) are written.
    checkpoint_every : int, optional
        Save an SB3 checkpoint (model, replay buffer, VecNormalize statistics) about every
        this many env steps, to ``log_dir/checkpoints`` (needs ``log_dir``).
    resume : bool, default False
        Continue from the latest checkpoint in ``log_dir/checkpoints`` (if any) up to
        ``total_timesteps`` in all: a run stopped early (Ctrl-C, a crash, or a ``callback``
        returning False) continues where its last checkpoint left it. A resumed run is not
        bitwise identical to an uninterrupted one (the random generators' states are not
        checkpointed).
    callback : SB3 callback or list of them, optional
        Passed to ``learn`` with the checkpoint and progress callbacks (e.g. an evaluation
        that builds an :class:`RLController` from ``self.model``, or a stop criterion).
    eval_every : int, optional
        Default: the table's ``eval_every`` (None: off).
        Keep the best policy instead of the last (as rl-baselines3-zoo does): about every this
        many env steps, SB3's ``EvalCallback`` runs ``eval_episodes`` deterministic episodes on
        a separate copy of the env (seeded ``seed + 10_000`` onwards, apart from the training
        copies and from benchmark seeds), and the policy with the best mean return, with the
        observation-normalization statistics of that moment, is the one returned. Off-policy
        learners such as SAC can lose a skill late in training (on ``Pendulum-v0`` the success
        rate went 90 % → 71 % between 1.5e5 and 1.75e5 steps). Evaluation steps are not
        counted in ``env_steps``; the best is tracked within one call (not across ``resume``).
    eval_episodes : int, optional
        Episodes per evaluation (with ``eval_every``); default the table's, else 20.
    curve_every : int, optional
        Record a learning curve (:class:`~kalmannet_ctrl.rl.LearningCurve`): at the start, about
        every this many env steps and at the end, the policy of the moment runs
        ``curve_episodes`` seeded episodes (seeds ``seed + 20_000`` onwards, the same at every
        point) of the env's native vector env, judged as the comparison judges a controller:
        success rate and cost per step on the env's own cost. The rows are in
        ``info["learning_curve"]`` and, with ``log_dir``, in ``learning_curve.csv`` (rewritten
        at every point) and ``learning_curve.png``. Their time is not counted in ``train_s``;
        their env steps are not counted in ``env_steps``.
    curve_episodes : int, default 20
        Episodes per learning-curve point.
    vec_env : {"dummy", "native"}, optional
        How the training copies are stepped (default: the table's ``vec_env``, else
        ``"dummy"``): ``"dummy"``, SB3's ``make_vec_env`` of the wrapped env (copy ``i``
        seeded ``seed + i``); ``"native"``, :class:`~kalmannet_ctrl.rl.NativeVecEnv` (the
        native vector env and one batched policy input; one seed for all copies, episode
        statistics from SB3's ``VecMonitor``), the same with one copy and faster with many. It
        needs an env with a native vector env and, in ``"estimate"`` mode, a Gaussian filter.
    rescale_actions : bool, optional
        Train the policy on actions in [−1, 1] (Gymnasium's ``RescaleAction`` around the policy
        input, as Stable-Baselines3 recommends), the physical bounds kept in the env and in the
        returned controller, which maps its actions back (``RLController(action_bounds=...)``).
        Default: the table's ``rescale_actions``, else False (the policy acts in the env's
        units). Needs a bounded Box action space.
    device : str, default "cpu"
    verbose : int, default 0
        SB3's verbosity.

    Returns
    -------
    controller : RLController
        The trained policy on raw measurements (with the normalization statistics, if any).
    info : dict
        ``env_steps``, ``train_s`` (wall time), ``algo``, ``env_id``, ``seed``, ``n_envs``,
        ``hyperparams`` (as used), ``resumed_from`` (checkpoint path or None),
        ``episode_returns`` and ``episode_lengths`` (the last up to 100 training episodes, from
        Monitor), ``learning_curve`` (with ``curve_every``: the rows, keys
        :data:`~kalmannet_ctrl.rl.CURVE_COLUMNS`; None without), and ``best_eval`` (with
        ``eval_every``: ``{"env_steps", "mean_return"}`` of the policy returned; None without).

    Raises
    ------
    ParameterError
        On an unknown ``algo`` or ``observation``, ``history`` or ``total_timesteps`` < 1, or
        ``checkpoint_every``/``resume`` without ``log_dir``.
    MissingDependencyError
        If Stable-Baselines3 is not installed.

    Notes
    -----
    Checkpoints, replay buffers and VecNormalize statistics are Stable-Baselines3's own files
    (zip and pickle): resume only from folders you wrote.

    Examples
    --------
    >>> ctrl, info = train_rl("kalmannet_ctrl/Pendulum-v0", "sac", 50_000,
    ...                       observation="estimate")  # doctest: +SKIP
    """
    sb3 = require_sb3()
    plan = _plan(
        env_id,
        algo,
        total_timesteps,
        observation=observation,
        history=history,
        hyperparams=hyperparams,
        n_envs=n_envs,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        log_dir=log_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        seed=seed,
        vec_env=vec_env,
        rescale_actions=rescale_actions,
    )
    spec, nominal = env_spec(
        plan,
        env_kwargs,
        estimator,
        include_actions=include_actions,
        include_covariance=include_covariance,
        angles=angles,
    )
    if curve_every is not None:
        curve_every = check_positive_int(curve_every, "curve_every")
    curve_episodes = check_positive_int(curve_episodes, "curve_episodes")
    start = time.perf_counter()
    checkpoints = Checkpoints.find(plan.checkpoint_folder, resume)
    venv = training_envs(spec, plan, checkpoints)
    best: BestPolicy | None = None
    curve: LearningCurve | None = None
    model = None
    try:
        model = _algorithm(sb3, plan, venv, checkpoints, device=device, verbose=verbose)
        callbacks, best = _callbacks(
            sb3, plan, spec, venv, checkpoints, callback=callback, progress=progress
        )
        if curve_every is not None:
            curve = _learning_curve(
                spec, plan, venv, estimator, nominal, every=curve_every, episodes=curve_episodes
            )
            callbacks.insert(len(callbacks) - 1, curve.callback)  # before the progress bar
        remaining = plan.total_timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=callbacks or None,
                reset_num_timesteps=checkpoints.latest is None,
                progress_bar=False,
            )
        train_s = time.perf_counter() - start - (0.0 if curve is None else curve.eval_s)
        if curve is not None and plan.root is not None and curve.rows:
            title = f"{plan.algo.upper()} on {plan.env_id} ({plan.observation}), seed {plan.seed}"
            plot_learning_curves(
                {f"seed {plan.seed}": curve.rows}, plan.root / "learning_curve.png", title=title
            )
        obs_normalization = _obs_normalization(venv)
        best_eval = None
        if best is not None and best.snapshot is not None:
            best_eval = best.restore(model, obs_normalization)
        controller = _controller(
            model,
            spec,
            plan,
            estimator=estimator,
            nominal=nominal,
            obs_normalization=obs_normalization,
            best_eval=best_eval,
        )
        if plan.root is not None:
            controller.save(plan.root / "final")
        info = {
            **plan.record(),
            "env_steps": int(model.num_timesteps),
            "train_s": train_s,
            "resumed_from": None if checkpoints.latest is None else str(checkpoints.latest[1]),
            "episode_returns": [float(ep["r"]) for ep in model.ep_info_buffer],
            "episode_lengths": [int(ep["l"]) for ep in model.ep_info_buffer],
            "best_eval": best_eval,
            "learning_curve": None if curve is None else list(curve.rows),
        }
    finally:
        venv.close()
        if best is not None:
            best.close()
        if curve is not None:
            curve.judge.close()
        if model is not None and plan.root is not None:
            _close_log(model)
    return controller, info
