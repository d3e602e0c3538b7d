"""DNN-aided control: LQG whose estimator is learned from closed-loop data (KalmanNet-LQG)."""

from __future__ import annotations

import math
import time
from typing import Any

import gymnasium as gym
import torch
from torch import Tensor

from .._validation import check_positive_float, check_positive_int
from ..controllers.base import BaseController
from ..controllers.lqg import LQG
from ..controllers.lqr import LQR, design_model
from ..errors import DimensionError, ParameterError
from ..estimators import KalmanNet, LearnedNoiseKalmanFilter
from ..models import QuadraticCost, SystemModel, Trajectory
from ..models.base import psd_sqrt
from ..models.residual import ResidualModel
from .datasets import env_rollouts, split
from .fit import FitResult, _optimize, _update, fit
from .neural_mpc import prediction_error_cov
from .residual import Transitions, fit_residual
from .rollout import check_exploration_std

__all__ = ["closed_loop_cost", "control_weight", "fit_closed_loop", "learned_lqg"]

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
    batch_size: int = 32,
    lr: float | None = None,
    tbptt: int | None = None,
    closed_loop_steps: int = 0,
    closed_loop_options: dict[str, Any] | None = None,
    simulator_hidden: tuple[int, ...] = (32, 32),
    simulator_fit_steps: int = 20000,
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
    fit_steps, batch_size, lr, tbptt :
        Passed to :func:`fit`; ``lr`` defaults to 1e-3 for KalmanNet and 2e-2 for the
        learned-noise filter.
    closed_loop_steps : int
        Optimisation steps of the closed-loop fine-tuning (step 3); 0 (default) skips it.
        Needs ``supervised=True``: the simulator is fitted on the state labels.
    closed_loop_options : dict, optional
        More keywords of :func:`fit_closed_loop` (``horizon``, ``episodes``, ``batch_size``,
        ``lr``, ...).
    simulator_hidden, simulator_fit_steps :
        The simulator's residual network (hidden widths) and its :func:`fit_residual` steps.
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
    if loss_weight not in ("control", "uniform"):
        raise ValueError(f"loss_weight: expected 'control' or 'uniform', found {loss_weight!r}")
    closed_loop_steps = check_positive_int(closed_loop_steps, "closed_loop_steps", minimum=0)
    if closed_loop_steps and not supervised:
        raise ParameterError(
            "closed_loop_steps: the closed-loop fine-tuning fits its simulator on the state "
            "labels; it needs supervised=True"
        )
    if isinstance(estimator, str) and estimator not in ESTIMATORS:
        raise ValueError(
            f"estimator: expected one of {ESTIMATORS} or a module, found {estimator!r}"
        )
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    start = time.perf_counter()
    env = gym.make(env_id, **(env_kwargs or {})).unwrapped
    nominal, cost = env.nominal_model, env.cost
    bounds = (env.action_space.low, env.action_space.high)
    design = design_model(nominal)
    baseline = LQG(design, cost, input_bounds=bounds)
    rollouts = env_rollouts(
        env_id,
        episodes,
        controller=baseline,
        steps=steps,
        seed=seed,
        exploration_std=exploration_std,
        env_kwargs=env_kwargs,
    )
    est = _new_estimator(estimator, nominal, seed)
    data = Trajectory(*(t.float() for t in rollouts)) if _dtype(est) == torch.float32 else rollouts
    train, val = split(data, (0.8, 0.2), seed=seed)
    weight = None
    if supervised and loss_weight == "control":
        weight = control_weight(baseline.lqr)
    if lr is None:
        lr = 2e-2 if isinstance(est, LearnedNoiseKalmanFilter) else 1e-3
    record = fit(
        est,
        train,
        val,
        steps=fit_steps,
        batch_size=batch_size,
        lr=lr,
        loss="state" if supervised else "measurement",
        tbptt=tbptt,
        state_weight=weight,
        seed=seed,
        progress=progress,
        val_every=max(fit_steps // 20, 1),
    )
    est.eval()
    controller = LQG(design, cost, est, input_bounds=bounds)
    info: dict[str, Any] = {"fit": record}
    if closed_loop_steps:
        simulator = _fit_simulator(
            rollouts, nominal, simulator_hidden, simulator_fit_steps, seed=seed, progress=progress
        )
        info["simulator"] = simulator
        options = {"seed": seed, "progress": progress, **dict(closed_loop_options or {})}
        info["closed_loop"] = fit_closed_loop(
            controller, simulator, steps=closed_loop_steps, **options
        )
    info["env_steps"] = int(torch.isfinite(data.y[..., 0]).sum())  # padding after an end is NaN
    info["train_s"] = time.perf_counter() - start
    return controller, info


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
    *,
    seed: int,
    progress: bool,
) -> ResidualModel:
    """The nominal model plus a residual fitted to the rollouts' measured transitions, with
    its one-step prediction-error covariance as process noise."""
    measured = torch.isfinite(rollouts.y).all(-1)
    transitions = Transitions.from_trajectory(rollouts, mask=measured)
    residual = ResidualModel(nominal, hidden=hidden, generator=torch.Generator().manual_seed(seed))
    fit_residual(residual, transitions, steps=fit_steps, seed=seed, progress=progress)
    residual.eval()
    return residual.replace(process_cov=prediction_error_cov(residual, transitions))


def closed_loop_cost(
    controller: LQG,
    model: SystemModel,
    x0: Tensor,
    process_noise: Tensor,
    measurement_noise: Tensor,
    cost: QuadraticCost | None = None,
) -> Tensor:
    """Average stage cost of ``controller`` in closed loop with ``model``, differentiably.

    Simulates x_{t+1} = f(x_t, u_t) + w_t, y_t = h(x_t) + v_t with u_t = ``controller.step`` of
    y_t (the controller's own clipping included), for the given initial states and noise
    sequences, and returns each episode's mean of c(x_t, u_t), t = 0 … T − 1. Gradients flow to
    the controller's estimator (and to the model, if it has trainable parameters) through the
    whole closed loop.

    Shapes
    ------
    x0 (B, n_x), process_noise (B, T, n_x), measurement_noise (B, T, n_y) -> (B,)
    """
    cost = controller.cost if cost is None else cost
    B, T = process_noise.shape[0], process_noise.shape[1]
    state = controller.init(B)
    x, total = x0, x0.new_zeros(B)
    for t in range(T):
        u, state = controller.step(state, model.h(x) + measurement_noise[:, t])
        u = u.to(dtype=x.dtype)
        total = total + cost(x, u)
        x = model.f(x, u) + process_noise[:, t]
    return total / T


def fit_closed_loop(
    controller: LQG,
    model: SystemModel,
    *,
    cost: QuadraticCost | None = None,
    steps: int = 100,
    horizon: int = 200,
    episodes: int = 256,
    batch_size: int = 32,
    lr: float = 3e-4,
    grad_clip: float | None = 1.0,
    val_episodes: int = 128,
    val_every: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train an LQG's estimator on the controller's closed-loop cost in a simulator.

    The estimator's parameters are trained by backpropagation through ``horizon``-step
    closed-loop rollouts of ``model`` (:func:`closed_loop_cost`): Adam on minibatches of
    ``episodes`` fixed noise realisations (x_0 from the model's prior, process and measurement
    noise from its covariances), validated every ``val_every`` steps on ``val_episodes`` other
    realisations, and left with the weights of the best validation cost.

    With the LQR fixed, an estimator trained on its state error can at best remove the
    estimation part of a model mismatch. Trained on the cost, it also learns the estimates on
    which the (mismatched) LQR acts best; its estimation error may grow while the cost falls. On
    CartPole-v0, nominal LQR with the *true* model's EKF costs 0.00977 (54 % of the gap between
    nominal LQG, 0.01127, and the oracle, 0.00848), while KalmanNet tuned on the cost in a
    learned model of the true dynamics reaches 0.00876 (90 %; ``benchmarks/closed_loop.py``).
    The simulated episodes should be long enough for the closed loop's stationary behaviour to
    dominate the initial transient: on CartPole-v0, 100 steps instead of 200 gave almost no gain.

    Parameters
    ----------
    controller : LQG
        With a trainable estimator (an ``nn.Module`` with parameters, e.g. :class:`KalmanNet`
        or :class:`LearnedNoiseKalmanFilter`), trained in place and left in evaluation mode.
    model : SystemModel
        The simulator: a differentiable model of the plant, e.g. the nominal model plus a
        residual fitted to data (:class:`~kalmannet_ctrl.models.ResidualModel` with its
        prediction-error covariance as process noise). Its own parameters are not trained.
    cost : QuadraticCost, optional
        Stage cost (default the controller's).
    steps : int
        Optimisation steps.
    horizon : int
        Length T of the simulated episodes.
    episodes, val_episodes : int
        Noise realisations for training and for validation.
    batch_size, lr, grad_clip :
        Adam's minibatch (drawn with replacement), learning rate and gradient-norm clip.
    val_every : int
    seed : int
        Seeds the noise realisations and the minibatch order.
    progress : bool
        Show a progress bar.

    Returns
    -------
    FitResult
        Losses are average stage costs per step (``best_val_loss``: on the validation
        realisations, with the weights kept).

    Raises
    ------
    TypeError
        If ``controller`` has no trainable estimator or ``model`` is not a SystemModel.
    DimensionError
        If the model's dimensions differ from the controller's.
    ParameterError
        For non-positive counts or learning rate.
    """
    estimator = controller.estimator if isinstance(controller, BaseController) else None
    if not isinstance(estimator, torch.nn.Module):
        raise TypeError(
            "controller: expected an LQG whose estimator is a torch module, found "
            f"{type(controller).__name__} with {type(estimator).__name__}"
        )
    params = [p for p in estimator.parameters() if p.requires_grad]
    if not params:
        raise TypeError(
            f"controller: its estimator {type(estimator).__name__} has no trainable parameters"
        )
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    for dim in ("n_x", "n_u", "n_y"):
        if getattr(model, dim) != getattr(controller, dim):
            raise DimensionError(
                f"model: {dim} = {getattr(model, dim)} differs from the controller's "
                f"{getattr(controller, dim)}"
            )
    steps = check_positive_int(steps, "steps")
    horizon = check_positive_int(horizon, "horizon")
    episodes = check_positive_int(episodes, "episodes")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_episodes = check_positive_int(val_episodes, "val_episodes")
    val_every = check_positive_int(val_every, "val_every")
    lr = check_positive_float(lr, "lr")
    if grad_clip is not None:
        grad_clip = check_positive_float(grad_clip, "grad_clip")

    gen = torch.Generator().manual_seed(int(seed))
    Lw, Lv = psd_sqrt(model.process_cov), psd_sqrt(model.measurement_cov)

    def draw(n: int) -> tuple[Tensor, Tensor, Tensor]:
        dtype, device = model.dtype, model.device
        x0 = model.sample_x0(n, generator=gen)
        w = torch.randn(n, horizon, model.n_x, dtype=dtype, device=device, generator=gen) @ Lw.mT
        v = torch.randn(n, horizon, model.n_y, dtype=dtype, device=device, generator=gen) @ Lv.mT
        return x0, w, v

    train, val = draw(episodes), draw(val_episodes)
    owned = model.parameters() if isinstance(model, torch.nn.Module) else ()
    frozen = [p for p in owned if p.requires_grad]

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        estimator.train()
        opt.zero_grad(set_to_none=True)
        value = closed_loop_cost(controller, model, *(a[idx] for a in train), cost).mean()
        if not bool(torch.isfinite(value)) or not _update(value, opt, params, grad_clip):
            return math.nan
        return float(value.detach())

    def validate() -> float:
        estimator.eval()
        with torch.no_grad():
            return float(closed_loop_cost(controller, model, *val, cost).mean())

    try:
        for p in frozen:
            p.requires_grad_(False)
        record = _optimize(
            estimator,
            params,
            train_step,
            validate,
            n_train=episodes,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=0.0,
            val_every=val_every,
            patience=None,
            seed=seed,
            progress=progress,
            name="fit_closed_loop",
        )
    finally:
        for p in frozen:
            p.requires_grad_(True)
    estimator.eval()
    return record


def control_weight(lqr: LQR, regularization: float = 1e-3) -> torch.Tensor:
    """W = K'(R + B'PB)K + ε·tr(W)/n_x·I, the LQR's cost of state-estimation errors.

    For a linear model, acting with u = −K x̂ instead of −K x costs (x̂ − x)' W (x̂ − x) more per
    step (without ε): the weight to train a controller's estimator with. ``regularization`` ε
    keeps the directions the gain ignores in the loss.

    Shapes
    ------
    -> (n_x, n_x)
    """
    K, P = lqr.gain, lqr.value_matrix
    B, R = lqr.model.B, lqr.cost.R
    W = K.mT @ (R + B.mT @ P @ B) @ K
    W = 0.5 * (W + W.mT)
    n = W.shape[-1]
    return W + regularization * torch.trace(W) / n * torch.eye(n, dtype=W.dtype, device=W.device)


def _dtype(module: torch.nn.Module) -> torch.dtype:
    for p in module.parameters():
        return p.dtype
    return torch.float64
