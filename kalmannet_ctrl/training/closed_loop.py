"""DNN-aided control: LQG whose estimator is tuned on the closed-loop cost (KalmanNet-LQG).

:func:`closed_loop_cost` simulates an LQG in closed loop with a model, differentiably;
:func:`fit_closed_loop` trains the LQG's estimator on that cost; :func:`control_weight` is the
LQR's cost of estimation errors (the state-error weight of the supervised stage). The end-to-end
builder :func:`~kalmannet_ctrl.training.learned_lqg` is in :mod:`.lqg_pipeline`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from .._validation import check_positive_float, check_positive_int
from ..controllers.base import BaseController
from ..controllers.lqg import LQG
from ..controllers.lqr import LQR
from ..errors import DimensionError, NonFiniteError, ParameterError
from ..models import QuadraticCost, SystemModel
from ..models.base import psd_sqrt
from ._segments import check_segment, first_rows, resume, split_starts, stack_states
from .fit import FitResult, _optimize, _step

__all__ = ["closed_loop_cost", "control_weight", "fit_closed_loop"]

_SCHEDULES = ("constant", "cosine")


def closed_loop_cost(
    controller: LQG,
    model: SystemModel,
    x0: Tensor,
    process_noise: Tensor,
    measurement_noise: Tensor,
    cost: QuadraticCost | None = None,
    *,
    state: Any = None,
) -> Tensor:
    """Average stage cost of ``controller`` in closed loop with ``model``, differentiably.

    Simulates x_{t+1} = f(x_t, u_t) + w_t, y_t = h(x_t) + v_t with u_t = ``controller.step`` of
    y_t (the controller's own clipping included), for the given initial states and noise
    sequences, and returns each episode's mean of c(x_t, u_t), t = 0 … T − 1. Gradients flow to
    the controller's estimator (and to the model, if it has trainable parameters) through the
    whole closed loop.

    Parameters
    ----------
    controller : LQG
    model : SystemModel
        The plant.
    x0, process_noise, measurement_noise : Tensor
        x_0, w_t and v_t.
    cost : QuadraticCost, optional
        Stage cost (default the controller's).
    state : optional
        The controller's recurrent state before the first measurement (e.g. one recorded along
        an earlier run, to continue it); default ``controller.init(B)``, a fresh start.

    Shapes
    ------
    x0 (B, n_x), process_noise (B, T, n_x), measurement_noise (B, T, n_y) -> (B,)
    """
    cost = controller.cost if cost is None else cost
    if state is None:
        state = controller.init(process_noise.shape[0])
    return _closed_loop(controller, model, x0, state, process_noise, measurement_noise, cost)[0]


def _closed_loop(
    controller: LQG,
    model: SystemModel,
    x: Tensor,
    state: Any,
    w: Tensor,
    v: Tensor,
    cost: QuadraticCost,
    record: bool = False,
    terminal: Tensor | None = None,
) -> tuple[Tensor, list[Tensor], list[Any]]:
    """The loop of :func:`closed_loop_cost`: per-episode mean costs, and with ``record`` the
    plant states x_0 … x_T and the controller's states after each of the T steps.

    With ``terminal`` P, the costs are those of a segment of the episodes,
    (Σ_{t<T} c(x_t, u_t) + x_T' P x_T) / T: P is the cost-to-go of the state it ends in (the
    LQR's value matrix), without which a short segment rewards estimates that save input now
    and pay for it after its end.

    Shapes
    ------
    x (B, n_x), w (B, T, n_x), v (B, T, n_y), terminal (n_x, n_x) -> (B,), T + 1 states (B, n_x)
    """
    T = w.shape[1]
    total = x.new_zeros(x.shape[0])
    xs, states = [x], []
    for t in range(T):
        u, state = controller.step(state, model.h(x) + v[:, t])
        u = u.to(dtype=x.dtype)
        total = total + cost(x, u)
        x = model.f(x, u) + w[:, t]
        if record:
            xs.append(x)
            states.append(state)
    if terminal is not None:
        total = total + ((x @ terminal) * x).sum(-1)
    return total / T, xs, states


def fit_closed_loop(
    controller: LQG,
    model: SystemModel,
    *,
    cost: QuadraticCost | None = None,
    steps: int = 100,
    horizon: int = 200,
    episodes: int = 256,
    batch_size: int = 512,
    lr: float = 1e-3,
    grad_clip: float | None = 1.0,
    val_episodes: int = 128,
    val_every: int = 10,
    segment: int | None = 100,
    lr_schedule: str = "cosine",
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train an LQG's estimator on the controller's closed-loop cost in a simulator.

    The estimator's parameters are trained by backpropagation through closed-loop rollouts of
    ``model`` (:func:`closed_loop_cost`) with Adam, validated every ``val_every`` steps on
    ``val_episodes`` fixed noise realisations of ``horizon`` steps (x_0 from the model's prior,
    process and measurement noise from its covariances), and left with the weights of the best
    validation cost. The training rollouts are

    - with ``segment=L`` (default 100): minibatches of ``batch_size`` segments of L steps with
      fresh noise, each started from a plant state and a controller state (estimator state and
      previous input) recorded at a random step t of ``episodes`` fixed ``horizon``-step
      realisations run without gradients (t = 0: a fresh start). The recording is refreshed at
      every validation (one batched pass over both sets of realisations), so that the recorded
      estimator states follow the weights. A segment's loss is its stage costs plus the
      cost-to-go of the state it ends in, x_L' P x_L with P the LQR's value matrix, over L:
      without it a short segment rewards estimates that save input now and pay for it after its
      end (on CartPole-v0, 25-step segments without it made the cost worse than the start).
      Where the starting closed loop is unstable in the simulator (the large CartPole-v0
      mismatch of the bench), shorter segments or a larger step size make the recorded states
      and the gradients blow up: 50-step segments stopped on a diverged loss within 30
      updates, at lr 4e-3 or 1e-3, and 100-step ones at lr 4e-3 within 10; 100 steps at
      lr 1e-3 kept the pole up in every episode. An update then costs L sequential steps
      instead of ``horizon``, and a minibatch of 512 costs little more than one of 32
      (per-operation overhead, not arithmetic, sets the time of these small networks);
    - with ``segment=None``: minibatches of ``batch_size`` whole ``horizon``-step episodes drawn
      from ``episodes`` fixed noise realisations (the objective is exactly the average cost;
      the defaults before segments were ``segment=None, batch_size=32, lr=3e-4,
      lr_schedule="constant"``).

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
        Length T of the simulated (and recorded) episodes.
    episodes, val_episodes : int
        Noise realisations for training (or for recording the segments' starting states) and
        for validation.
    batch_size, lr, grad_clip :
        Adam's minibatch (episodes or segments, drawn with replacement), learning rate and
        gradient-norm clip.
    val_every : int
    segment : int or None
        Train on segments of this many steps (at most ``horizon``; see above), or on whole
        episodes (None).
    lr_schedule : {"constant", "cosine"}
        Keep the learning rate, or anneal it to zero over ``steps`` (cosine).
    seed : int
        Seeds the noise realisations and the minibatch order.
    progress : bool
        Show a progress bar.

    Returns
    -------
    FitResult
        Losses are average stage costs per step (``best_val_loss``: on the validation
        realisations, with the weights kept; training losses of segments include their
        terminal cost).

    Shapes
    ------
    realisations x_0 (episodes, n_x), w (episodes, horizon, n_x), v (episodes, horizon, n_y);
    a minibatch of segments (batch_size, segment, ·)

    Raises
    ------
    TypeError
        If ``controller`` has no trainable estimator, or (with segments) is not an LQG, or
        ``model`` is not a SystemModel.
    DimensionError
        If the model's dimensions differ from the controller's.
    ParameterError
        For non-positive counts, segment length or learning rate, or an unknown
        ``lr_schedule``.
    """
    estimator, params = _check_closed_loop(controller, model)
    steps = check_positive_int(steps, "steps")
    horizon = check_positive_int(horizon, "horizon")
    episodes = check_positive_int(episodes, "episodes")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_episodes = check_positive_int(val_episodes, "val_episodes")
    val_every = check_positive_int(val_every, "val_every")
    segment = check_segment(segment)
    if segment is not None:
        segment = min(segment, horizon)
    lr = check_positive_float(lr, "lr")
    if grad_clip is not None:
        grad_clip = check_positive_float(grad_clip, "grad_clip")
    if lr_schedule not in _SCHEDULES:
        raise ParameterError(f"lr_schedule: expected one of {_SCHEDULES}, found {lr_schedule!r}")
    cost = controller.cost if cost is None else cost
    noise = _Noise(model, torch.Generator().manual_seed(int(seed)))
    train, val = noise.episodes(episodes, horizon), noise.episodes(val_episodes, horizon)
    if segment is None:
        train_step, validate = _episode_objective(controller, model, cost, train, val, grad_clip)
        n_train = episodes
    else:
        train_step, validate = _segment_objective(
            controller, model, cost, train, val, noise, segment, grad_clip
        )
        n_train = episodes * horizon
    with frozen_parameters(model):
        record = _optimize(
            estimator,
            params,
            train_step,
            validate,
            n_train=n_train,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=0.0,
            val_every=val_every,
            patience=None,
            seed=seed,
            progress=progress,
            lr_schedule=lr_schedule,
            name="fit_closed_loop",
        )
    estimator.eval()
    return record


def _check_closed_loop(controller: Any, model: Any) -> tuple[torch.nn.Module, list[Tensor]]:
    """The trainable estimator of ``controller`` and its parameters; the model checked."""
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
    return estimator, params


class _Noise:
    """Draws of x_0, process and measurement noise from a model's distributions."""

    def __init__(self, model: SystemModel, generator: torch.Generator) -> None:
        self.model, self.gen = model, generator
        self.Lw, self.Lv = psd_sqrt(model.process_cov), psd_sqrt(model.measurement_cov)

    def sequences(self, n: int, T: int) -> tuple[Tensor, Tensor]:
        """w (n, T, n_x) and v (n, T, n_y)."""
        m, kw = self.model, {"dtype": self.model.dtype, "device": self.model.device}
        w = torch.randn(n, T, m.n_x, generator=self.gen, **kw) @ self.Lw.mT
        v = torch.randn(n, T, m.n_y, generator=self.gen, **kw) @ self.Lv.mT
        return w, v

    def episodes(self, n: int, T: int) -> tuple[Tensor, Tensor, Tensor]:
        """x_0 (n, n_x), w and v (in the draw order of the episodes' realisations)."""
        x0 = self.model.sample_x0(n, generator=self.gen)
        return (x0, *self.sequences(n, T))


TrainStep = Callable[[Tensor, torch.optim.Optimizer], float]


def _nan_if_diverged(fn: Callable[..., float]) -> Callable[..., float]:
    """``fn``, returning NaN when the simulated closed loop diverges: an estimator refuses the
    non-finite inputs of a state that blew up (:class:`NonFiniteError`), and the training loop
    then stops with the best weights so far, as for any non-finite loss."""

    def guarded(*args: Any) -> float:
        try:
            return fn(*args)
        except NonFiniteError:
            return math.nan

    return guarded


def _episode_objective(
    controller: LQG,
    model: SystemModel,
    cost: QuadraticCost,
    train: tuple[Tensor, ...],
    val: tuple[Tensor, ...],
    grad_clip: float | None,
) -> tuple[TrainStep, Callable[[], float]]:
    """Whole episodes: minibatches of the fixed training realisations."""
    estimator = controller.estimator

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        estimator.train()
        opt.zero_grad(set_to_none=True)
        value = closed_loop_cost(controller, model, *(a[idx] for a in train), cost).mean()
        return _step(value, opt, grad_clip)

    def validate() -> float:
        estimator.eval()
        with torch.no_grad():
            return float(closed_loop_cost(controller, model, *val, cost).mean())

    return _nan_if_diverged(train_step), _nan_if_diverged(validate)


def _segment_objective(
    controller: LQG,
    model: SystemModel,
    cost: QuadraticCost,
    train: tuple[Tensor, ...],
    val: tuple[Tensor, ...],
    noise: _Noise,
    segment: int,
    grad_clip: float | None,
) -> tuple[TrainStep, Callable[[], float]]:
    """Segments from recorded states: each validation also records the training realisations'
    plant and controller states (one batched pass over both sets)."""
    estimator = controller.estimator
    E, T = train[0].shape[0], train[1].shape[1]
    both = tuple(torch.cat([a, b]) for a, b in zip(train, val, strict=True))
    recorded: dict[str, Any] = {}
    if not isinstance(controller, LQG):
        raise TypeError(
            "segment: the segments' terminal cost x'Px needs an LQG (P: its LQR's value matrix), "
            f"found {type(controller).__name__}; pass segment=None"
        )
    terminal = LQR(controller.model, cost).value_matrix.to(dtype=model.dtype)

    def validate() -> float:
        estimator.eval()
        x0 = both[0]
        with torch.no_grad():
            costs, xs, states = _closed_loop(
                controller, model, x0, controller.init(x0.shape[0]), *both[1:], cost, record=True
            )
        recorded["x"] = torch.stack(xs, 1)[:E]
        recorded["state"] = first_rows(stack_states(states, x0.shape[0]), E)
        return float(costs[E:].mean())

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        rows, times = split_starts(idx, T)
        state = resume(recorded["state"], rows, times, controller.reset_rows)
        w, v = noise.sequences(idx.shape[0], segment)
        estimator.train()
        opt.zero_grad(set_to_none=True)
        x = recorded["x"][rows, times]
        value = _closed_loop(controller, model, x, state, w, v, cost, terminal=terminal)[0]
        value = value.mean()
        return _step(value, opt, grad_clip)

    return _nan_if_diverged(train_step), _nan_if_diverged(validate)


@contextmanager
def frozen_parameters(model: Any) -> Iterator[None]:
    """Hold a simulator's own trainable parameters fixed (``requires_grad`` off) while a
    controller trains through it, and restore them after, also on an error."""
    owned = model.parameters() if isinstance(model, torch.nn.Module) else ()
    frozen = [p for p in owned if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


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
