"""Model-free RL on the environments with Stable-Baselines3 (PPO, SAC): training and loading.

:func:`train_rl` wraps copies of an environment so that the policy observes a state estimate or
a measurement history (:mod:`kalmannet_ctrl.envs.wrappers`), trains Stable-Baselines3's PPO or
SAC with the per-environment hyperparameters of :data:`HYPERPARAMS`, and returns an
:class:`~kalmannet_ctrl.controllers.rl.RLController` that runs the policy on raw measurements.
Stable-Baselines3 is the optional extra ``rl``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..controllers.rl import OBSERVATION_MODES, RLController, default_estimator, require_sb3
from ..errors import CheckpointError, ParameterError
from ..estimators.base import Estimator

__all__ = ["ALGOS", "HYPERPARAMS", "hyperparams_for", "load_rl", "train_rl"]

#: The algorithms :func:`train_rl` trains (Stable-Baselines3 class names in upper case).
ALGOS: tuple[str, ...] = ("ppo", "sac")

# Keys of a HYPERPARAMS entry that are not constructor arguments of the SB3 algorithm.
_META_KEYS = (
    "n_envs",
    "n_timesteps",
    "normalize",
    "policy",
    "estimator_process_cov_scale",
    "eval_every",
    "eval_episodes",
)

_ZOO = "rl-baselines3-zoo (DLR-RM/rl-baselines3-zoo)"

#: Hyperparameters per (environment name, algorithm). Environment names are the ids of
#: :mod:`kalmannet_ctrl.envs` without namespace and version ("Pendulum" for
#: ``kalmannet_ctrl/Pendulum-v0``); ``"*"`` holds the fallback for any other environment.
#: Keys are Stable-Baselines3 constructor arguments of the algorithm, plus ``n_envs`` (copies
#: of the env), ``n_timesteps`` (the budget when ``train_rl`` gets none) and ``normalize``
#: (VecNormalize of the observations and rewards, as rl-zoo's ``normalize: true``),
#: ``estimator_process_cov_scale`` (of the default estimator of ``observation="estimate"``,
#: :func:`~kalmannet_ctrl.controllers.rl.default_estimator`) and ``eval_every`` /
#: ``eval_episodes`` (keep the best evaluated policy, see :func:`train_rl`). Anything
#: not set takes Stable-Baselines3's default. The values follow rl-baselines3-zoo's tuned
#: settings for the closest Gymnasium task, cited per entry.
HYPERPARAMS: dict[tuple[str, str], dict[str, Any]] = {
    # Fallbacks: Stable-Baselines3's defaults (SAC: lr 3e-4, buffer 1e6, batch 256,
    # learning_starts 100, tau 0.005, gamma 0.99, train_freq 1, ent_coef "auto", [256, 256];
    # PPO: n_steps 2048, batch 64, n_epochs 10, gamma 0.99, gae_lambda 0.95, clip 0.2, [64, 64]).
    ("*", "sac"): {"n_envs": 1, "n_timesteps": 50_000},
    ("*", "ppo"): {"n_envs": 4, "n_timesteps": 200_000},
    # From rl-zoo hyperparams/sac.yml, Pendulum-v1 (tuned: learning_rate 1e-3, SB3 defaults
    # otherwise, 2e4 steps of 200-step episodes from a random angle), with zoo's gamma 0.98 of
    # Pendulum-v1 TD3/DDPG and [64, 64] networks (as good per step as SAC's [256, 256] here,
    # 2.3x faster on CPU). Ours starts hanging down with a motor of 15 % of the gravity torque
    # (Pendulum-v1: 40 %), needs ~200 steps to swing up and a catch within ~0.15 rad to balance.
    # The policy's estimate comes from the nominal EKF with its process covariance × 100
    # (velocity noise std 0.1 rad/s instead of 0.01): with the nominal value the EKF trusts the
    # lighter, shorter nominal pendulum and its velocity lags; LQR on it holds 62 % of 200
    # near-upright starts (|θ| < 0.08, |θ̇| < 0.25) for 10 s, on the ×100 EKF 100 %, on the
    # true model's EKF 98 %. As rl-zoo does, the policy kept is the best of evaluations every
    # 1e4 steps (20 episodes on their own seeds): SAC's success here is not monotone.
    # Measured (1 thread, ~170 steps/s; success = PendulumEnv.succeeded on 100 seeded episodes,
    # θ̂ as cos/sin), last policy at 2.5e4-step intervals: 0 % up to 7.5e4, 52 % at 1e5, 74 % at
    # 1.25e5, 90 % at 1.5e5, 71 % at 1.75e5, 82 % at 2e5, 96 % at 2.25e5, 82 % at 2.5e5. With
    # the nominal EKF: 31 % at 1e5,
    # 25-57 % between 1e5 and 1.5e5. lr 1e-3 with SB3 defaults ([256, 256], gamma 0.99): 0-1 %
    # up to 4.1e4. observation="measurement" (history 4, cos/sin): no swing-up in 8e4 steps.
    ("Pendulum", "sac"): {
        "n_envs": 1,
        "n_timesteps": 250_000,
        "learning_rate": 1e-3,
        "gamma": 0.98,
        "policy_kwargs": {"net_arch": [64, 64]},
        "estimator_process_cov_scale": 100.0,
        "eval_every": 10_000,
        "eval_episodes": 20,
    },
    # rl-zoo hyperparams/ppo.yml, Pendulum-v1 (tuned): n_envs 4, n_steps 1024, gae_lambda 0.95,
    # gamma 0.9, n_epochs 10, ent_coef 0, learning_rate 1e-3, clip_range 0.2, use_sde with
    # sde_sample_freq 4, n_timesteps 1e5.
    ("Pendulum", "ppo"): {
        "n_envs": 4,
        "n_timesteps": 100_000,
        "n_steps": 1024,
        "gae_lambda": 0.95,
        "gamma": 0.9,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
        "use_sde": True,
        "sde_sample_freq": 4,
        "estimator_process_cov_scale": 100.0,  # the same estimate as SAC's (see above)
    },
    # A regulation task with a quadratic cost and one bounded input: rl-zoo's Pendulum-v1
    # settings above (sac.yml: learning_rate 1e-3, n_timesteps 2e4; ppo.yml as above), SAC with
    # gSDE exploration (use_sde, as zoo's continuous-control SAC entries). Measured (50 episodes
    # of the estimate policy, 2e4 steps): cost 1.54 per step with gSDE, 5.9 without (actions of
    # −13 where LQG gives −0.7: the squashed policy spans the ±20 bound), 8.0 without at 5e4
    # steps, 18.2 with ent_coef 0.005; nominal LQG 0.84, zero input 1.69.
    ("LinearSystem", "sac"): {
        "n_envs": 1,
        "n_timesteps": 20_000,
        "learning_rate": 1e-3,
        "use_sde": True,
    },
    ("LinearSystem", "ppo"): {
        "n_envs": 4,
        "n_timesteps": 100_000,
        "n_steps": 1024,
        "gae_lambda": 0.95,
        "gamma": 0.9,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
        "use_sde": True,
        "sde_sample_freq": 4,
    },
    # Balancing with a bounded force and a failure that ends the episode: rl-zoo sac.yml's
    # pybullet defaults (InvertedPendulumSwingupBulletEnv-v0, InvertedDoublePendulumBulletEnv-v0,
    # tuned): learning_rate 7.3e-4, buffer 3e5, batch 256, ent_coef auto, gamma 0.98, tau 0.02,
    # train_freq 8, gradient_steps 8, learning_starts 1e4, use_sde, log_std_init -3,
    # net_arch [400, 300]; n_timesteps 3e5, cut here to 4e4 (balancing from near upright needs
    # no swing-up; one SAC step with these networks takes ~23 ms on one CPU core).
    ("CartPole", "sac"): {
        "n_envs": 1,
        "n_timesteps": 40_000,
        "learning_rate": 7.3e-4,
        "buffer_size": 300_000,
        "batch_size": 256,
        "ent_coef": "auto",
        "gamma": 0.98,
        "tau": 0.02,
        "train_freq": 8,
        "gradient_steps": 8,
        "learning_starts": 10_000,
        "use_sde": True,
        "policy_kwargs": {"log_std_init": -3, "net_arch": [400, 300]},
    },
    # rl-zoo ppo.yml, InvertedPendulum-v2 (MuJoCo, tuned): normalize, n_envs 1, batch 64,
    # n_steps 32, gamma 0.999, learning_rate 2.22425e-4, ent_coef 1.37976e-7, clip_range 0.4,
    # n_epochs 5, gae_lambda 0.9, max_grad_norm 0.3, vf_coef 0.19816; n_timesteps 1e6, cut here
    # to 2e5 (~500 steps/s on one CPU core).
    ("CartPole", "ppo"): {
        "n_envs": 1,
        "n_timesteps": 200_000,
        "normalize": True,
        "batch_size": 64,
        "n_steps": 32,
        "gamma": 0.999,
        "learning_rate": 2.22425e-4,
        "ent_coef": 1.37976e-7,
        "clip_range": 0.4,
        "n_epochs": 5,
        "gae_lambda": 0.9,
        "max_grad_norm": 0.3,
        "vf_coef": 0.19816,
    },
}


def _env_name(env_id: str) -> str:
    """ "kalmannet_ctrl/Pendulum-v0" -> "Pendulum"; other ids -> "*" (the fallback)."""
    match = re.fullmatch(r"kalmannet_ctrl/(\w+)-v\d+", env_id)
    return match.group(1) if match else "*"


def _check_algo(algo: Any) -> str:
    if not isinstance(algo, str) or algo.lower() not in ALGOS:
        raise ParameterError(f"algo: expected one of {list(ALGOS)}, found {algo!r}")
    return algo.lower()


def hyperparams_for(
    env_id: str, algo: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The hyperparameters :func:`train_rl` uses: fallback, then the env's entry, then overrides.

    Returns a deep copy (``policy_kwargs`` in ``overrides`` replaces the table's whole).
    """
    algo = _check_algo(algo)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(f"hyperparams: expected a mapping, found {type(overrides).__name__}")
    out = dict(HYPERPARAMS[("*", algo)])
    out.update(HYPERPARAMS.get((_env_name(env_id), algo), {}))
    out.update(overrides or {})
    return copy.deepcopy(out)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _progress_callback(sb3: Any) -> tuple[bool, Any]:
    """(use SB3's rich progress bar, or a plain tqdm callback) — SB3's needs tqdm and rich."""
    if importlib.util.find_spec("rich") is not None:
        return True, None
    from tqdm import tqdm

    class _TqdmCallback(sb3.common.callbacks.BaseCallback):  # type: ignore[misc, name-defined]
        def _on_training_start(self) -> None:
            total = self.locals["total_timesteps"] - self.model.num_timesteps
            self.pbar = tqdm(total=total, unit="step", desc=type(self.model).__name__)

        def _on_step(self) -> bool:
            self.pbar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.pbar.close()

    return False, _TqdmCallback()


def _latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    best: tuple[int, Path] | None = None
    for p in folder.glob("rl_model_*_steps.zip"):
        match = re.fullmatch(r"rl_model_(\d+)_steps\.zip", p.name)
        if match and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), p)
    return best


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
    device: str = "cpu",
    verbose: int = 0,
) -> tuple[RLController, dict[str, Any]]:
    """Train a Stable-Baselines3 PPO or SAC policy on an environment, observed through a wrapper.

    Each of ``n_envs`` copies of ``gym.make(env_id, **env_kwargs)`` is wrapped in
    :class:`~kalmannet_ctrl.envs.wrappers.EstimateObservation` (``observation="estimate"``) or
    :class:`~kalmannet_ctrl.envs.wrappers.MeasurementHistory` (``"measurement"``) and in SB3's
    ``Monitor``, vectorized with ``make_vec_env`` (a ``DummyVecEnv``) and, when the
    hyperparameters say ``normalize``, SB3's ``VecNormalize``. The algorithm is built with
    :func:`hyperparams_for` ``(env_id, algo, hyperparams)``:

    ===================  =====  =======================================================
    env                  algo   hyperparameters (source: rl-baselines3-zoo)
    ===================  =====  =======================================================
    Pendulum             sac    lr 1e-3 (zoo Pendulum-v1), gamma 0.98, [64, 64]; EKF
                                process covariance × 100; best of evaluations every 1e4
                                steps; 2.5e5 steps
    Pendulum             ppo    4 envs, n_steps 1024, gamma 0.9, gae 0.95, 10 epochs,
                                lr 1e-3, clip 0.2, gSDE (freq 4); EKF process covariance
                                × 100; 1e5 steps (Pendulum-v1)
    LinearSystem         sac    as Pendulum-v1: lr 1e-3, gSDE; 2e4 steps
    LinearSystem         ppo    as Pendulum ppo; 1e5 steps
    CartPole             sac    zoo pybullet defaults (InvertedPendulumSwingupBullet):
                                lr 7.3e-4, buffer 3e5, gamma 0.98, tau 0.02, train_freq
                                and gradient_steps 8, learning_starts 1e4, gSDE,
                                log_std_init -3, [400, 300]; 4e4 steps (zoo: 3e5)
    CartPole             ppo    zoo InvertedPendulum-v2: normalize, n_steps 32, batch 64,
                                gamma 0.999, lr 2.2e-4, clip 0.4, 5 epochs, gae 0.9,
                                max_grad_norm 0.3, vf_coef 0.2; 2e5 steps (zoo: 1e6)
    other                sac    SB3 defaults, 1 env; 5e4 steps
    other                ppo    SB3 defaults, 4 envs; 2e5 steps
    ===================  =====  =======================================================

    The full values, with their sources, are in :data:`HYPERPARAMS`.

    Parameters
    ----------
    env_id : str
        A registered Gymnasium id, e.g. ``"kalmannet_ctrl/Pendulum-v0"``.
    algo : {"sac", "ppo"}, default "sac"
    total_timesteps : int, optional
        Env steps over all copies; default the table's ``n_timesteps``.
    observation : {"measurement", "estimate"}, default "measurement"
        What the policy sees (see :class:`~kalmannet_ctrl.controllers.rl.PolicyObservation`).
    estimator : Estimator, optional
        The estimator of ``"estimate"`` mode, shared by every copy and the returned controller.
        Default: Kalman filter (linear nominal model) or EKF on ``env.unwrapped.nominal_model``.
    history : int, default 4
        Measurements stacked in ``"measurement"`` mode (ignored in ``"estimate"`` mode).
    include_actions : bool, default False
        Stack the actions with the measurements (``"measurement"`` mode).
    include_covariance : bool, default False
        Append diag(P_{t|t}) to the estimate (``"estimate"`` mode).
    angles : sequence of int, optional
        Components shown to the policy as (cos, sin): of the estimate (``"estimate"``) or of
        each measurement (``"measurement"``). Default: the env's declaration,
        ``unwrapped.angle_states`` or ``unwrapped.angle_measurements`` (the pendulum's θ);
        ``()`` for none. Recorded in the controller.
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
        Show a progress bar (SB3's when ``rich`` is installed, a plain tqdm bar otherwise).
    log_dir : path-like, optional
        Where Monitor CSVs (``monitor/``), SB3's CSV log, checkpoints (``checkpoints/``) and
        the final controller (``final.zip`` + ``final.json``) are written.
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
    device : str, default "cpu"
    verbose : int, default 0
        SB3's verbosity.

    Returns
    -------
    controller : RLController
        The trained policy on raw measurements (with the normalization statistics, if any).
    info : dict
        ``env_steps``, ``wall_s``, ``algo``, ``env_id``, ``seed``, ``n_envs``, ``hyperparams``
        (as used), ``resumed_from`` (checkpoint path or None), ``episode_returns`` and
        ``episode_lengths`` (the last up to 100 training episodes, from Monitor), and
        ``best_eval`` (with ``eval_every``: ``{"env_steps", "mean_return"}`` of the policy
        returned; None without).

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
    import gymnasium as gym
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
    from kalmannet_ctrl.envs.wrappers import EstimateObservation, MeasurementHistory

    algo = _check_algo(algo)
    if not isinstance(env_id, str):
        raise TypeError(
            f"env_id: expected a registered Gymnasium id, found {type(env_id).__name__}"
        )
    if observation not in OBSERVATION_MODES:
        raise ParameterError(
            f"observation: expected one of {list(OBSERVATION_MODES)}, found {observation!r}"
        )
    history = check_positive_int(history, "history")
    hp = hyperparams_for(env_id, algo, hyperparams)
    meta = {key: hp.pop(key) for key in _META_KEYS if key in hp}
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
    env_kwargs = dict(env_kwargs or {})
    if observation == "estimate":
        history, include_actions = 1, False

    probe = gym.make(env_id, **env_kwargs)
    nominal = getattr(probe.unwrapped, "nominal_model", None)
    if angles is None:
        declared = "angle_states" if observation == "estimate" else "angle_measurements"
        angles = tuple(getattr(probe.unwrapped, declared, ()))
    angles = tuple(angles)
    probe.close()
    if observation == "estimate" and estimator is None and nominal is None:
        raise TypeError(
            f"estimator: {env_id} has no unwrapped.nominal_model to build the default estimator "
            "on; pass an estimator"
        )

    scale = float(meta.get("estimator_process_cov_scale", 1.0))
    policy_estimator = estimator
    if observation == "estimate" and estimator is None:
        policy_estimator = default_estimator(nominal, scale)

    def make_env() -> Any:
        env = gym.make(env_id, **env_kwargs)
        if observation == "estimate":
            return EstimateObservation(
                env, policy_estimator, include_covariance=include_covariance, angles=angles
            )
        return MeasurementHistory(env, history, include_actions=include_actions, angles=angles)

    root = None if log_dir is None else Path(log_dir)
    ckpt_dir = None if root is None else root / "checkpoints"
    start = time.perf_counter()
    venv = make_vec_env(
        make_env,
        n_envs=n_envs,
        seed=seed,
        monitor_dir=None if root is None else str(root / "monitor"),
    )
    normalize = meta.get("normalize", False)
    latest = _latest_checkpoint(ckpt_dir) if (resume and ckpt_dir is not None) else None

    def checkpoint_file(kind: str) -> Path | None:
        if latest is None or ckpt_dir is None:
            return None
        path = ckpt_dir / f"rl_model_{kind}_{latest[0]}_steps.pkl"
        return path if path.is_file() else None

    if normalize:
        norm_kwargs = dict(normalize) if isinstance(normalize, Mapping) else {}
        norm_kwargs.setdefault("gamma", hp.get("gamma", 0.99))
        vecnorm_path = checkpoint_file("vecnormalize")
        if vecnorm_path is not None:
            venv = VecNormalize.load(str(vecnorm_path), venv)
        else:
            venv = VecNormalize(venv, **norm_kwargs)
    algo_cls = getattr(sb3, algo.upper())
    policy = meta.get("policy", "MlpPolicy")
    best: _BestPolicy | None = None
    try:
        if latest is not None:
            try:
                model = algo_cls.load(str(latest[1]), env=venv, device=device)
            except Exception as exc:
                raise CheckpointError(
                    f"log_dir: the checkpoint {latest[1]} is not readable ({exc})"
                ) from exc
            buffer = checkpoint_file("replay_buffer")
            if buffer is not None and hasattr(model, "replay_buffer"):
                model.load_replay_buffer(str(buffer))
        else:
            model = algo_cls(policy, venv, seed=seed, device=device, verbose=verbose, **hp)
        if root is not None:
            model.set_logger(configure(str(root), ["csv"] + (["stdout"] if verbose else [])))
        callbacks: list[Any] = []
        if callback is not None:
            callbacks.extend(callback if isinstance(callback, (list, tuple)) else [callback])
        if eval_every is not None:
            best = _BestPolicy(
                make_vec_env(make_env, n_envs=1, seed=seed + 10_000),
                venv,
                eval_every=max(eval_every // n_envs, 1),
                episodes=eval_episodes,
            )
            callbacks.append(best.callback)
        if checkpoint_every is not None:
            callbacks.append(
                CheckpointCallback(
                    save_freq=max(checkpoint_every // n_envs, 1),
                    save_path=str(ckpt_dir),
                    name_prefix="rl_model",
                    save_replay_buffer=True,
                    save_vecnormalize=True,
                )
            )
        sb3_bar = False
        if progress:
            sb3_bar, bar = _progress_callback(sb3)
            if bar is not None:
                callbacks.append(bar)
        remaining = total_timesteps - model.num_timesteps
        if remaining > 0:
            model.learn(
                remaining,
                callback=callbacks or None,
                reset_num_timesteps=latest is None,
                progress_bar=sb3_bar,
            )
        wall_s = time.perf_counter() - start
        obs_normalization = None
        if isinstance(venv, VecNormalize) and venv.norm_obs:
            obs_normalization = {
                "mean": np.asarray(venv.obs_rms.mean, dtype=np.float64),
                "var": np.asarray(venv.obs_rms.var, dtype=np.float64),
                "epsilon": float(venv.epsilon),
                "clip_obs": float(venv.clip_obs),
            }
        best_eval = None
        if best is not None and best.snapshot is not None:
            model.policy.load_state_dict(best.snapshot["policy"])
            if obs_normalization is not None and best.snapshot["obs_rms"] is not None:
                mean, var = best.snapshot["obs_rms"]
                obs_normalization.update(mean=mean, var=var)
            best_eval = {
                "env_steps": best.snapshot["env_steps"],
                "mean_return": best.snapshot["mean_return"],
            }
        record = {
            "algo": algo,
            "env_id": env_id,
            "seed": seed,
            "n_envs": n_envs,
            "hyperparams": _jsonable({**hp, **meta}),
        }
        controller = RLController(
            model,
            observation=observation,
            estimator=estimator,
            history=history,
            include_actions=include_actions,
            include_covariance=include_covariance,
            angles=angles,
            nominal_model=nominal if estimator is None else None,
            process_cov_scale=scale,
            obs_normalization=obs_normalization,
            metadata={
                **record,
                "env_kwargs": _jsonable(env_kwargs),
                "env_steps": int(model.num_timesteps),
                "best_eval": best_eval,
            },
        )
        if root is not None:
            controller.save(root / "final")
        info = {
            **record,
            "env_steps": int(model.num_timesteps),
            "wall_s": wall_s,
            "resumed_from": None if latest is None else str(latest[1]),
            "episode_returns": [float(ep["r"]) for ep in model.ep_info_buffer],
            "episode_lengths": [int(ep["l"]) for ep in model.ep_info_buffer],
            "best_eval": best_eval,
        }
    finally:
        venv.close()
        if best is not None:
            best.close()
    return controller, info


class _BestPolicy:
    """SB3's ``EvalCallback`` on a separate env, keeping (in memory) the policy weights and the
    observation-normalization statistics of the best evaluation."""

    def __init__(self, eval_env: Any, train_env: Any, *, eval_every: int, episodes: int) -> None:
        from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
        from stable_baselines3.common.vec_env import VecNormalize

        if isinstance(train_env, VecNormalize):
            # EvalCallback copies the training statistics into it before each evaluation
            eval_env = VecNormalize(
                eval_env,
                training=False,
                norm_obs=train_env.norm_obs,
                norm_reward=False,
                clip_obs=train_env.clip_obs,
                epsilon=train_env.epsilon,
            )
        self.env = eval_env
        self.snapshot: dict[str, Any] | None = None
        owner = self

        class _OnNewBest(BaseCallback):  # type: ignore[misc]
            def _on_step(self) -> bool:
                parent = self.parent
                rms = getattr(train_env, "obs_rms", None)
                owner.snapshot = {
                    "policy": copy.deepcopy(parent.model.policy.state_dict()),
                    "obs_rms": None
                    if rms is None
                    else (
                        np.asarray(rms.mean, dtype=np.float64).copy(),
                        np.asarray(rms.var, dtype=np.float64).copy(),
                    ),
                    "env_steps": int(parent.model.num_timesteps),
                    "mean_return": float(parent.best_mean_reward),
                }
                return True

        self.callback = EvalCallback(
            eval_env,
            callback_on_new_best=_OnNewBest(),
            n_eval_episodes=episodes,
            eval_freq=eval_every,
            deterministic=True,
            verbose=0,
        )

    def close(self) -> None:
        self.env.close()


def load_rl(
    path: str | os.PathLike[str],
    *,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    estimator: Estimator | None = None,
    device: str = "cpu",
) -> RLController:
    """Load an :class:`RLController` saved by :meth:`RLController.save` or :func:`train_rl`.

    The nominal model an ``"estimate"`` policy's default estimator needs is taken from
    ``gym.make(env_id, **env_kwargs)``; both default to what :func:`train_rl` recorded in the
    sidecar.

    Raises
    ------
    CheckpointError
        If the files are missing or unreadable.
    """
    import gymnasium as gym

    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    config = RLController.read_config(path)
    env = None
    if config["observation"] == "estimate" and estimator is None:
        meta = config["metadata"]
        env_id = env_id if env_id is not None else meta.get("env_id")
        if not isinstance(env_id, str):
            raise TypeError(
                "env_id: the sidecar records no env id; pass env_id (or use "
                "RLController.load with the nominal model)"
            )
        kwargs = env_kwargs if env_kwargs is not None else meta.get("env_kwargs", {})
        env = gym.make(env_id, **dict(kwargs))
    try:
        return RLController.load(path, env, estimator=estimator, device=device)
    finally:
        if env is not None:
            env.close()
