"""Learned optimization for control: a convex-optimization policy (or an unfolded MPC) tuned by
gradient descent on its closed-loop cost in a differentiable simulator (Agrawal, Barratt, Boyd &
Stellato, "Learning convex optimization control policies", L4DC 2020)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_positive_float, check_positive_int
from ..controllers.convex_policy import ConvexPolicy
from ..controllers.mpc import MPC
from ..errors import DimensionError, ParameterError
from ..models import NonlinearModel, QuadraticCost, SystemModel
from .closed_loop import (
    _SCHEDULES,
    _nan_if_diverged,
    _Noise,
    closed_loop_cost,
    frozen_parameters,
)
from .fit import FitResult, _optimize, _step

__all__ = ["tune_policy"]


def tune_policy(
    policy: ConvexPolicy | MPC,
    model: SystemModel,
    *,
    cost: QuadraticCost | None = None,
    steps: int = 50,
    horizon: int = 100,
    episodes: int = 640,
    batch_size: int = 64,
    lr: float = 0.05,
    lr_schedule: str = "cosine",
    grad_clip: float | None = None,
    val_episodes: int = 64,
    val_every: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Tune a policy's parameters on its closed-loop cost in a simulator, in place.

    The cost is the average stage cost of ``horizon``-step closed-loop episodes of ``model``
    (:func:`~kalmannet_ctrl.training.closed_loop_cost`: x_0 from the model's prior, process and
    measurement noise from its covariances, the policy's estimator in the loop), differentiated
    through the simulator, the estimator and the policy's optimisation problem (for a
    :class:`~kalmannet_ctrl.controllers.ConvexPolicy`, the implicit derivative of its QP's
    solution; for an MPC with the :class:`~kalmannet_ctrl.controllers.Unfolded` solver, the
    unrolled iterations). Adam takes ``steps`` steps on minibatches of ``batch_size`` episodes
    drawn from ``episodes`` fixed noise realisations (the training loop of
    :func:`~kalmannet_ctrl.training.fit_closed_loop`); the cost on ``val_episodes`` other fixed
    realisations is evaluated before training, every ``val_every`` steps and at the end, and
    the parameters of the best one are kept. A non-finite loss, gradient or parameter (a
    diverged simulated loop, parameters whose QP data overflow) stops training with those
    parameters restored and a RuntimeWarning.

    Which parameters train is the policy's: those with ``requires_grad`` (a ConvexPolicy's
    ``trainable``; an unfolded MPC's step sizes, and its QP data with ``learn_qp``). The
    simulator is the true model where it is known, or one fitted to data (e.g. the nominal
    model plus a residual, as :func:`~kalmannet_ctrl.training.learned_lqg` fits); its own
    parameters are not trained. For a full-state policy the simulated observation is the state
    itself (no measurement noise).

    The defaults are the settings of ``benchmarks/cocp.py``'s reproduction of cvxgrp/cocp's
    constrained LQR, where they take the ADP policy from 17.7 to 13.1 per step in 25 s on one
    core (the reference's 100 SGD steps of 6 episodes reach about 13.0 on its 6 test episodes):
    per-operation overhead, not arithmetic, sets the time of these small problems, so a
    minibatch of 64 episodes costs little more than one of 6 and needs fewer steps.

    Parameters
    ----------
    policy : ConvexPolicy or MPC
        A ConvexPolicy, or an MPC whose solver setup is a module (``Unfolded``), with at least
        one trainable parameter.
    model : SystemModel
        The differentiable simulator, of the policy's n_x, n_u (and n_y, with an estimator).
    cost : QuadraticCost, optional
        Stage cost (default the policy's).
    steps : int
        Optimisation steps.
    horizon : int
        Length T of the simulated episodes.
    episodes, val_episodes : int
        Noise realisations for training and for validation.
    batch_size, lr, grad_clip :
        Adam's minibatch of episodes (drawn with replacement), learning rate and gradient-norm
        clip (None: no clip).
    lr_schedule : {"constant", "cosine"}
        Keep the learning rate, or anneal it to zero over ``steps``.
    val_every : int
    seed : int
        Seeds the noise realisations and the minibatch order.
    progress : bool
        Show a progress bar.

    Returns
    -------
    FitResult
        Losses are average stage costs per step; ``best_val_loss`` on the validation
        realisations, with the parameters kept.

    Shapes
    ------
    realisations x_0 (episodes, n_x), w (episodes, horizon, n_x), v (episodes, horizon, n_y);
    a minibatch (batch_size, horizon, ·)

    Raises
    ------
    TypeError
        If ``policy`` has no trainable parameters or is of another kind, or ``model`` is not a
        SystemModel.
    DimensionError
        If the model's dimensions differ from the policy's.
    ParameterError
        For non-positive counts or learning rate, or an unknown ``lr_schedule``.
    ValueError
        If the initial validation cost is not finite.

    Examples
    --------
    >>> from kalmannet_ctrl.controllers import ConvexPolicy
    >>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
    >>> m = LinearGaussianModel(A=[[1.1]], B=[[1.0]], C=[[1.0]], process_cov=[[0.1]],
    ...                         measurement_cov=[[0.5]], x0_cov=[[1.0]])
    >>> policy = ConvexPolicy(m, QuadraticCost(Q=[[1.0]], R=[[0.1]]), input_bounds=(-0.5, 0.5))
    >>> result = tune_policy(policy, m, steps=4, horizon=20, episodes=16, val_episodes=16,
    ...                      val_every=2, progress=False)
    >>> result.steps
    4
    """
    module, params = _trainable(policy)
    full_state = isinstance(policy, ConvexPolicy) and policy.full_state
    _check_model(policy, model, full_state)
    steps = check_positive_int(steps, "steps")
    horizon = check_positive_int(horizon, "horizon")
    episodes = check_positive_int(episodes, "episodes")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_episodes = check_positive_int(val_episodes, "val_episodes")
    val_every = check_positive_int(val_every, "val_every")
    lr = check_positive_float(lr, "lr")
    if grad_clip is not None:
        grad_clip = check_positive_float(grad_clip, "grad_clip")
    if lr_schedule not in _SCHEDULES:
        raise ParameterError(f"lr_schedule: expected one of {_SCHEDULES}, found {lr_schedule!r}")
    cost = policy.cost if cost is None else cost
    simulator = _state_output(model) if full_state else model
    noise = _Noise(simulator, torch.Generator().manual_seed(int(seed)))
    train, val = noise.episodes(episodes, horizon), noise.episodes(val_episodes, horizon)
    if full_state:  # the observation is the state itself
        train = (*train[:2], torch.zeros_like(train[2]))
        val = (*val[:2], torch.zeros_like(val[2]))

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        if not _finite(params):
            return float("nan")
        opt.zero_grad(set_to_none=True)
        batch = (a[idx] for a in train)
        value = closed_loop_cost(policy, simulator, *batch, cost).mean()  # type: ignore[arg-type]
        return _step(value, opt, grad_clip)

    def validate() -> float:
        if not _finite(params):
            return float("nan")
        with torch.no_grad():
            value = closed_loop_cost(policy, simulator, *val, cost)  # type: ignore[arg-type]
        return float(value.mean())

    with frozen_parameters(model):
        return _optimize(
            module,
            params,
            _nan_if_diverged(train_step),
            _nan_if_diverged(validate),
            n_train=episodes,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            weight_decay=0.0,
            val_every=val_every,
            patience=None,
            seed=seed,
            progress=progress,
            lr_schedule=lr_schedule,
            name="tune_policy",
        )


def _trainable(policy: Any) -> tuple[nn.Module, list[Tensor]]:
    """The module holding ``policy``'s trainable parameters, and those parameters."""
    if isinstance(policy, ConvexPolicy):
        module: nn.Module = policy
    elif isinstance(policy, MPC) and isinstance(policy.setup, nn.Module):
        module = policy.setup
    else:
        raise TypeError(
            "policy: expected a ConvexPolicy or an MPC with a trainable solver (Unfolded), "
            f"found {type(policy).__name__}"
            + (f" with {type(policy.solver).__name__}" if isinstance(policy, MPC) else "")
        )
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TypeError(
            f"policy: {type(policy).__name__} has no trainable parameters; choose some "
            "(ConvexPolicy(..., trainable=...)) or enable requires_grad"
        )
    return module, params


def _check_model(policy: Any, model: Any, full_state: bool) -> None:
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    dims = ("n_x", "n_u") if full_state else ("n_x", "n_u", "n_y")
    for dim in dims:
        if getattr(model, dim) != getattr(policy, dim):
            raise DimensionError(
                f"model: {dim} = {getattr(model, dim)} differs from the policy's "
                f"{getattr(policy, dim)}"
            )


def _finite(params: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _state_output(model: SystemModel) -> NonlinearModel:
    """``model``'s dynamics and noise with the state as its measurement (full-state feedback)."""
    eye = torch.eye(model.n_x, dtype=model.dtype, device=model.device)
    return NonlinearModel(
        model.f,
        lambda x: x,
        n_x=model.n_x,
        n_y=model.n_x,
        n_u=model.n_u,
        process_cov=model.process_cov,
        measurement_cov=eye,
        x0_mean=model.x0_mean,
        x0_cov=model.x0_cov,
        dtype=model.dtype,
        device=model.device,
    )
