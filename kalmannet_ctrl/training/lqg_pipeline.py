"""The end-to-end builder of LQG with a learned estimator (KalmanNet-LQG, learned-noise LQG):
rollouts, supervised training, a learned simulator and the closed-loop fine-tuning."""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import torch

from .._validation import check_positive_int
from ..controllers.lqg import LQG
from ..controllers.lqr import design_model
from ..errors import ParameterError
from ..estimators import KalmanNet, LearnedNoiseKalmanFilter
from ..models import SystemModel, Trajectory
from ..models.residual import ResidualModel
from .closed_loop import control_weight, fit_closed_loop
from .datasets import env_rollouts, split
from .fit import fit
from .neural_mpc import prediction_error_cov
from .residual import Transitions, fit_residual
from .rollout import check_exploration_std

__all__ = ["learned_lqg"]

ESTIMATORS = ("kalmannet", "learned-noise")


def learned_lqg(
    env_id: str,
    estimator: str | torch.nn.Module = "kalmannet",
    *,
    episodes: int = 200,
    steps: int | None = None,
    exploration_std: float = 0.01,
    supervised: bool = True,
    loss_weight: str = "control",
    fit_steps: int = 1000,
    batch_size: int = 256,
    lr: float | None = None,
    tbptt: int | None = None,
    segment: int | None = 20,
    closed_loop_steps: int = 0,
    closed_loop_options: dict[str, Any] | None = None,
    simulator_hidden: tuple[int, ...] = (32, 32),
    simulator_fit_steps: int = 20000,
    simulator_options: dict[str, Any] | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[LQG, dict[str, Any]]:
    """Build LQG with a learned estimator for a registered environment, end to end.

    1. Roll out ``episodes`` episodes of ``env_id`` in closed loop under the exploration policy:
       LQG designed on the env's nominal model (the model-based baseline: the LQR and the
       Kalman filter of :func:`design_model`) with Gaussian excitation added to its actions
       (``exploration_std``, relative to the bounds; then clipped to the bounds).
    2. Train the estimator on the nominal model (KalmanNet, or the KF/EKF with learned noise
       covariances) with :func:`~kalmannet_ctrl.training.fit`, on the measurements and applied
       inputs, with ``info["state"]`` as labels (``supervised=True``) or without any state
       label, on the predicted measurements (``supervised=False``).
    3. Optionally (``closed_loop_steps`` > 0, with state labels), fit a simulator to the same
       rollouts, the nominal model plus a residual network
       (:class:`~kalmannet_ctrl.models.ResidualModel`, :func:`fit_residual`) whose process noise
       is its one-step prediction-error covariance, and fine-tune the estimator on the LQG's
       closed-loop cost in that simulator (:func:`fit_closed_loop`). No further env steps.
    4. Return LQG with the LQR designed on the nominal model (linearized about the origin if
       nonlinear) and the trained estimator in place of the Kalman filter.

    Parameters
    ----------
    env_id : str
        A registered environment with ``nominal_model``, ``cost`` and ``info["state"]`` (e.g.
        ``"kalmannet_ctrl/LinearSystem-v0"``).
    estimator : {"kalmannet", "learned-noise"} or nn.Module
        What to train; a module is trained as given (it must estimate the nominal model's
        states and have ``filter``).
    episodes, steps :
        Training rollouts: number and length (default the env's episode limit); 20 % of the
        episodes are held out for validation.
    exploration_std : float
        The excitation added to the baseline's actions, relative to the bounds: standard
        deviation ``exploration_std · (high − low) / 2`` per input (≥ 0; the default 0.01 is
        0.1 N on CartPole-v0). The convention of :mod:`kalmannet_ctrl.training.rollout`.
    supervised : bool
        Train on state labels (``loss="state"``) or on measurements only (``"measurement"``).
    loss_weight : {"control", "uniform"}
        With state labels: weight the state error by W = K'(R + B'PK)K (``"control"``), the
        LQR's sensitivity to estimation errors, so that the loss is the excess cost of acting
        on x̂ instead of x (exact for a linear model: the LQG cost is the LQR cost plus
        E[(x̂ − x)' W (x̂ − x)]); plus 1e-3·tr(W)/n_x·I so that no state is ignored. Or the plain
        MSE (``"uniform"``, the KalmanNet paper's loss).
    fit_steps, batch_size, lr, tbptt, segment :
        Passed to :func:`fit`. ``segment`` (state labels only; with ``supervised=False`` the
        whole sequences are used): train on ``batch_size`` segments of this many steps per
        minibatch, resumed from recorded filter states (at most the rollouts' length; pass
        ``segment=None`` for whole sequences, and with ``tbptt``). ``lr`` defaults to 3e-3 for
        KalmanNet on segments, 1e-3 for KalmanNet on whole sequences and 2e-2 for the
        learned-noise filter. The settings before segments were ``batch_size=32,
        segment=None``.
    closed_loop_steps : int
        Optimisation steps of the closed-loop fine-tuning (step 3); 0 (default) skips it.
        Needs ``supervised=True``: the simulator is fitted on the state labels.
    closed_loop_options : dict, optional
        More keywords of :func:`fit_closed_loop` (``horizon``, ``episodes``, ``batch_size``,
        ``lr``, ``segment``, ...).
    simulator_hidden, simulator_fit_steps :
        The simulator's residual network (hidden widths) and its :func:`fit_residual` steps.
    simulator_options : dict, optional
        More keywords of :func:`fit_residual` (``batch_size``, ``lr``, ...).
    seed : int
        Seeds the rollouts, the network's initialisation and the minibatches.
    env_kwargs : dict, optional
        Passed to ``gymnasium.make`` (e.g. ``{"mismatch": {...}}``).
    progress : bool
        Show a progress bar while training.

    Returns
    -------
    controller : LQG
        Output feedback with the trained estimator (in evaluation mode).
    info : dict
        ``env_steps`` (training transitions), ``train_s`` (wall time of rollouts and training),
        ``time_s`` (its parts: ``rollouts``, ``fit``, ``simulator``, ``closed_loop``),
        ``fit`` (the :class:`~kalmannet_ctrl.training.FitResult`); with the fine-tuning also
        ``simulator`` (the fitted model) and ``closed_loop`` (its :class:`FitResult`).

    Notes
    -----
    The LQR stays the nominal model's. An estimator trained on its state error can then only
    remove the estimation part of the mismatch. On LinearSystem-v0 that is nearly all of it (the
    nominal LQR acting on the true model's Kalman filter costs 0.464 against the oracle's 0.459
    and the nominal LQG's 0.759, exact average costs). On CartPole-v0 it is 54 % of the gap
    (0.00977 against 0.00848 and 0.01127), and the estimators trained on the state error alone
    do worse than the nominal filter there (KalmanNet −52 %, the learned-noise EKF −97 % of the
    gap, 100 seeded episodes). The closed-loop fine-tuning (step 3) trains the estimator on the
    cost instead, so that its estimates also compensate for the mismatched gain: KalmanNet-LQG
    then closes 90 % of the gap on CartPole-v0 (300 steps, about 5 minutes on one core), 89 %
    on LinearSystem-v0, and keeps the pole up in every episode at the large mismatch, where
    nominal LQG drops it in 92 % (``benchmarks/closed_loop.py``).

    Raises
    ------
    ValueError
        For an unknown ``estimator`` name.
    ParameterError, TypeError
        For non-positive counts or a negative ``exploration_std``.
    """
    episodes = check_positive_int(episodes, "episodes")
    fit_steps = check_positive_int(fit_steps, "fit_steps")
    exploration_std = check_exploration_std(exploration_std)
    closed_loop_steps = check_positive_int(closed_loop_steps, "closed_loop_steps", minimum=0)
    _check_choices(estimator, loss_weight, supervised, closed_loop_steps)
    start = time.perf_counter()
    env, baseline, rollouts = baseline_rollouts(
        env_id,
        episodes,
        steps=steps,
        exploration_std=exploration_std,
        seed=seed,
        env_kwargs=env_kwargs,
    )
    nominal, cost = env.nominal_model, env.cost
    bounds = (env.action_space.low, env.action_space.high)
    design = baseline.model
    clock = _Clock(start)
    clock.lap("rollouts")
    est = _new_estimator(estimator, nominal, seed)
    data = Trajectory(*(t.float() for t in rollouts)) if _dtype(est) == torch.float32 else rollouts
    train, val = split(data, (0.8, 0.2), seed=seed)
    segment = min(segment, data.y.shape[1]) if supervised and segment is not None else None
    if lr is None:
        lr = 3e-3 if segment is not None else 1e-3
        lr = 2e-2 if isinstance(est, LearnedNoiseKalmanFilter) else lr
    record = fit(
        est,
        train,
        val,
        steps=fit_steps,
        batch_size=batch_size,
        lr=lr,
        loss="state" if supervised else "measurement",
        tbptt=tbptt,
        segment=segment,
        state_weight=control_weight(baseline.lqr)
        if supervised and loss_weight == "control"
        else None,
        seed=seed,
        progress=progress,
        # 20 validations on whole sequences; 10 with segments (each also refreshes the recording)
        val_every=max(fit_steps // (20 if segment is None else 10), 1),
    )
    est.eval()
    clock.lap("fit")
    controller = LQG(design, cost, est, input_bounds=bounds)
    info: dict[str, Any] = {"fit": record}
    if closed_loop_steps:
        simulator = _fit_simulator(
            rollouts,
            nominal,
            simulator_hidden,
            simulator_fit_steps,
            dict(simulator_options or {}),
            seed=seed,
            progress=progress,
        )
        clock.lap("simulator")
        info["simulator"] = simulator
        options = {"seed": seed, "progress": progress, **dict(closed_loop_options or {})}
        info["closed_loop"] = fit_closed_loop(
            controller, simulator, steps=closed_loop_steps, **options
        )
        clock.lap("closed_loop")
    info["env_steps"] = int(torch.isfinite(data.y[..., 0]).sum())  # padding after an end is NaN
    info["train_s"] = time.perf_counter() - start
    info["time_s"] = clock.laps
    return controller, info


def baseline_rollouts(
    env_id: str,
    episodes: int,
    *,
    steps: int | None,
    exploration_std: float,
    seed: int,
    env_kwargs: dict[str, Any] | None,
) -> tuple[Any, LQG, Trajectory]:
    """The env (unwrapped), the exploration policy (LQG on the nominal model's
    :func:`design_model`) and ``episodes`` closed-loop rollouts of it with excitation
    ``exploration_std``: step 1 of :func:`learned_lqg`.

    Shapes
    ------
    -> Trajectory x (episodes, steps, n_x), y (episodes, steps, n_y), u (episodes, steps, n_u)
    """
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    env = gym.make(env_id, **(env_kwargs or {})).unwrapped
    bounds = (env.action_space.low, env.action_space.high)
    baseline = LQG(design_model(env.nominal_model), env.cost, input_bounds=bounds)
    rollouts = env_rollouts(
        env_id,
        episodes,
        controller=baseline,
        steps=steps,
        seed=seed,
        exploration_std=exploration_std,
        env_kwargs=env_kwargs,
    )
    return env, baseline, rollouts


def _check_choices(
    estimator: Any, loss_weight: str, supervised: bool, closed_loop_steps: int
) -> None:
    if loss_weight not in ("control", "uniform"):
        raise ValueError(f"loss_weight: expected 'control' or 'uniform', found {loss_weight!r}")
    if closed_loop_steps and not supervised:
        raise ParameterError(
            "closed_loop_steps: the closed-loop fine-tuning fits its simulator on the state "
            "labels; it needs supervised=True"
        )
    if isinstance(estimator, str) and estimator not in ESTIMATORS:
        raise ValueError(
            f"estimator: expected one of {ESTIMATORS} or a module, found {estimator!r}"
        )


class _Clock:
    """Wall time of consecutive stages: ``lap(name)`` records the time since the last lap."""

    def __init__(self, start: float) -> None:
        self.last = start
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now


def _new_estimator(estimator: str | torch.nn.Module, nominal: SystemModel, seed: int) -> Any:
    """The estimator ``learned_lqg`` trains: a named one built on ``nominal``, or the module."""
    if estimator == "kalmannet":
        return KalmanNet(nominal, generator=torch.Generator().manual_seed(seed))
    if estimator == "learned-noise":
        return LearnedNoiseKalmanFilter(nominal)
    return estimator


def _fit_simulator(
    rollouts: Trajectory,
    nominal: SystemModel,
    hidden: tuple[int, ...],
    fit_steps: int,
    options: dict[str, Any],
    *,
    seed: int,
    progress: bool,
) -> ResidualModel:
    """The nominal model plus a residual fitted to the rollouts' measured transitions, with
    its one-step prediction-error covariance as process noise."""
    measured = torch.isfinite(rollouts.y).all(-1)
    transitions = Transitions.from_trajectory(rollouts, mask=measured)
    residual = ResidualModel(nominal, hidden=hidden, generator=torch.Generator().manual_seed(seed))
    options = {"seed": seed, "progress": progress, **options}
    fit_residual(residual, transitions, steps=fit_steps, **options)
    residual.eval()
    return residual.replace(process_cov=prediction_error_cov(residual, transitions))


def _dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float64
