"""The end-to-end tuning of a convex-optimization policy or an unfolded MPC on a registered
environment: the rollouts and the learned simulator of ``learned_lqg``, then ``tune_policy``."""

from __future__ import annotations

import time
from typing import Any

import torch

from .._validation import check_positive_int
from ..controllers.convex_policy import ConvexPolicy
from ..controllers.mpc import MPC
from ..errors import ParameterError
from .lqg_pipeline import _Clock, _fit_simulator, baseline_rollouts
from .rollout import check_exploration_std
from .tune_policy import _check_model, _trainable, tune_policy

__all__ = ["tune_policy_on_env"]


def tune_policy_on_env(
    env_id: str,
    policy: ConvexPolicy | MPC,
    *,
    episodes: int = 200,
    steps: int | None = None,
    exploration_std: float = 0.01,
    tune_steps: int = 50,
    tune_options: dict[str, Any] | None = None,
    simulator_hidden: tuple[int, ...] = (32, 32),
    simulator_fit_steps: int = 20000,
    simulator_options: dict[str, Any] | None = None,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> tuple[ConvexPolicy | MPC, dict[str, Any]]:
    """Tune ``policy`` on the closed-loop cost in a simulator learned from an env's rollouts.

    1. Roll out ``episodes`` episodes of ``env_id`` under the nominal LQG with excitation
       (the rollouts of :func:`~kalmannet_ctrl.training.learned_lqg`).
    2. Fit the simulator to them: the nominal model plus a residual network, with its one-step
       prediction-error covariance as process noise (as ``learned_lqg``'s closed-loop step).
    3. Tune the policy's trainable parameters in that simulator with
       :func:`~kalmannet_ctrl.training.tune_policy` (``tune_steps`` steps), the policy's own
       estimator in the loop. No further env steps.

    Parameters
    ----------
    env_id : str
        A registered environment with ``nominal_model``, ``cost`` and ``info["state"]``.
    policy : ConvexPolicy or MPC
        Built on the env's nominal design model (e.g. ``ConvexPolicy(design_model(nominal),
        env.cost, input_bounds=...)``, or an MPC with the ``Unfolded`` solver), with trainable
        parameters; tuned in place.
    episodes, steps :
        Training rollouts: number and length (default the env's episode limit).
    exploration_std : float
        The excitation added to the nominal LQG's actions, relative to the bounds (the
        convention of :mod:`kalmannet_ctrl.training.rollout`).
    tune_steps : int
        Optimisation steps of :func:`tune_policy`.
    tune_options : dict, optional
        More keywords of :func:`tune_policy` (``horizon``, ``episodes``, ``batch_size``,
        ``lr``, ...).
    simulator_hidden, simulator_fit_steps :
        The simulator's residual network (hidden widths) and its
        :func:`~kalmannet_ctrl.training.fit_residual` steps.
    simulator_options : dict, optional
        More keywords of :func:`~kalmannet_ctrl.training.fit_residual`.
    seed : int
        Seeds the rollouts, the network's initialisation and the tuning's noise.
    env_kwargs : dict, optional
        Passed to ``gymnasium.make`` (e.g. ``{"mismatch": {...}}``).
    progress : bool
        Show progress bars while training.

    Returns
    -------
    policy : ConvexPolicy or MPC
        The same object, tuned.
    info : dict
        ``env_steps`` (training transitions), ``train_s`` (wall time of rollouts and training),
        ``time_s`` (its parts: ``rollouts``, ``simulator``, ``tune``), ``simulator`` (the
        fitted model) and ``tune`` (the :class:`~kalmannet_ctrl.training.FitResult`).

    Shapes
    ------
    rollouts (episodes, steps, ·); the policy's n_x, n_u, n_y are the env's nominal model's

    Raises
    ------
    ParameterError, TypeError
        For non-positive counts, a negative ``exploration_std``, a full-state policy, or a
        policy :func:`tune_policy` cannot train.
    DimensionError
        If the policy's dimensions differ from the env's model.
    """
    episodes = check_positive_int(episodes, "episodes")
    tune_steps = check_positive_int(tune_steps, "tune_steps")
    simulator_fit_steps = check_positive_int(simulator_fit_steps, "simulator_fit_steps")
    exploration_std = check_exploration_std(exploration_std)
    start = time.perf_counter()
    env, _, rollouts = baseline_rollouts(
        env_id,
        episodes,
        steps=steps,
        exploration_std=exploration_std,
        seed=seed,
        env_kwargs=env_kwargs,
    )
    # the policy checked before the simulator is fitted
    _trainable(policy)
    if isinstance(policy, ConvexPolicy) and policy.full_state:
        raise ParameterError(
            "policy: a full-state ConvexPolicy acts on the state, but the env observes "
            "measurements; build it with an estimator (full_state=False)"
        )
    _check_model(policy, env.nominal_model, False)
    clock = _Clock(start)
    clock.lap("rollouts")
    simulator = _fit_simulator(
        rollouts,
        env.nominal_model,
        simulator_hidden,
        simulator_fit_steps,
        dict(simulator_options or {}),
        seed=seed,
        progress=progress,
    )
    clock.lap("simulator")
    options = {"seed": seed, "progress": progress, **dict(tune_options or {})}
    record = tune_policy(policy, simulator, steps=tune_steps, **options)
    clock.lap("tune")
    info: dict[str, Any] = {
        "env_steps": int(torch.isfinite(rollouts.y[..., 0]).sum()),  # padding after an end
        "train_s": time.perf_counter() - start,
        "time_s": clock.laps,
        "simulator": simulator,
        "tune": record,
    }
    return policy, info
