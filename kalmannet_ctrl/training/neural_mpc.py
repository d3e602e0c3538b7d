"""Training neural MPC in rounds: collect closed-loop transitions, fit the residual, redeploy."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch

from .._validation import check_positive_int
from ..controllers.neural_mpc import NeuralMPC
from ..errors import ParameterError
from ..estimators import ExtendedKalmanFilter
from ..models.residual import ResidualModel
from .residual import Transitions, collect_transitions, fit_residual, one_step_mse

__all__ = ["env_cost_state", "prediction_error_cov", "train_neural_mpc"]

STATE_SOURCES = ("privileged", "estimated")


def train_neural_mpc(
    env_id: str,
    *,
    horizon: int = 20,
    rounds: int = 3,
    episodes: int = 20,
    steps: int | None = None,
    exploration_std: float = 0.05,
    states: str = "privileged",
    hidden: Sequence[int] = (32, 32),
    fit_steps: int = 1500,
    seed: int = 0,
    learn_process_cov: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
    mpc_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[NeuralMPC, dict[str, Any]]:
    """Learn a :class:`~kalmannet_ctrl.controllers.NeuralMPC` for a registered environment.

    Round r = 0, 1, …, ``rounds`` − 1: run ``episodes`` episodes of ``env_id`` under the
    current controller (round 0: MPC on the nominal model, i.e. the untrained residual) with
    exploration noise, add their transitions to the data, fit the residual g_θ on all data so
    far (continuing from the previous weights), and rebuild the controller on the new f̂.

    Parameters
    ----------
    env_id : str
        A registered environment with ``nominal_model``, ``cost`` and ``info["state"]``.
    horizon : int
        MPC horizon (steps).
    rounds, episodes, steps :
        Data collection: rounds, episodes per round, episode length (default the env's limit).
    exploration_std : float
        Gaussian noise on the actions while collecting, as a fraction of the half-range of
        the action space (see :func:`collect_transitions`).
    states : {"privileged", "estimated"}
        Labels of the transitions: the true states ``info["state"]``, or the estimates of the
        extended Kalman filter of the current prediction model (the nominal model in round 0)
        run on the measurements — no privileged information at all, at the price of noisy,
        biased labels.
    hidden : sequence of int
        Widths of the residual MLP (beside its linear path; see :class:`ResidualModel`).
    fit_steps : int
        Optimisation steps of :func:`fit_residual` per round.
    seed : int
        Seeds the network's initialisation, the data collection and the fits.
    learn_process_cov : bool
        Give the deployed f̂ the covariance of its one-step prediction errors on the data
        (:func:`prediction_error_cov`) as its process covariance, so that the controller's
        extended Kalman filter weighs the learned model by how well it actually predicts (the
        true process noise plus what the network still misses) rather than by the nominal
        model's stated noise. Without it the filter trusts f̂ as much as the designer trusted
        the nominal model, which on CartPole-v0 costs most of what the learned model gains.
    env_kwargs : mapping, optional
        Passed to the env (e.g. ``{"mismatch": {...}}``).
    mpc_kwargs : mapping, optional
        Keywords of :class:`NeuralMPC`/:class:`MPC` (``solver``, ``samples``,
        ``terminal_cost``, ...). ``input_bounds`` defaults to the env's action space and
        ``cost_state`` to the env's (e.g. the pendulum's wrapped angle).
    progress : bool
        Show progress bars.

    Returns
    -------
    controller : NeuralMPC
        Built on the final f̂ (``controller.residual``; with ``learn_process_cov`` a copy of the
        trained model whose ``process_cov`` is the prediction-error covariance).
    info : dict
        ``env_steps`` (transitions collected, all rounds), ``train_s`` (wall time),
        ``rounds`` (per round: ``transitions``, ``fit`` result, ``one_step_mse`` of the nominal
        and the learned model on that round's fresh data, before it was fitted on).

    Raises
    ------
    ParameterError
        For an unknown ``states`` or non-positive counts.
    """
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    rounds = check_positive_int(rounds, "rounds")
    episodes = check_positive_int(episodes, "episodes")
    fit_steps = check_positive_int(fit_steps, "fit_steps")
    if states not in STATE_SOURCES:
        raise ParameterError(f"states: expected one of {STATE_SOURCES}, found {states!r}")
    start = time.perf_counter()
    env = gym.make(env_id, **dict(env_kwargs or {})).unwrapped
    nominal = env.nominal_model
    model = ResidualModel(nominal, hidden=hidden, generator=torch.Generator().manual_seed(seed))
    kwargs = {
        "input_bounds": (env.action_space.low, env.action_space.high),
        **({"cost_state": hook} if (hook := env_cost_state(env)) is not None else {}),
        **dict(mpc_kwargs or {}),
    }
    if kwargs.get("solver") == "mppi":
        kwargs.setdefault("seed", seed)

    deployed = model

    def build() -> NeuralMPC:
        return NeuralMPC(deployed, env.cost, horizon, **kwargs)

    controller = build()
    data: Transitions | None = None
    per_round: list[dict[str, Any]] = []
    for r in range(rounds):
        labels: Any = "privileged"
        if states == "estimated":
            labels = ExtendedKalmanFilter(deployed)
        with torch.no_grad():
            fresh = collect_transitions(
                env_id,
                controller,
                episodes=episodes,
                exploration_std=exploration_std,
                states=labels,
                seed=seed + 1000 * r,
                steps=steps,
                env_kwargs=env_kwargs,
                progress=progress,
            )
            before = {
                "nominal": one_step_mse(nominal, fresh).sum().item(),
                "learned": one_step_mse(model, fresh).sum().item(),
            }
        data = fresh if data is None else Transitions.concat([data, fresh])
        record = fit_residual(model, data, steps=fit_steps, seed=seed + r, progress=progress)
        model.eval()
        deployed = model
        if learn_process_cov:
            deployed = model.replace(process_cov=prediction_error_cov(model, data))
        controller = build()
        per_round.append(
            {"transitions": int(fresh.x.shape[0]), "fit": record, "one_step_mse": before}
        )
    info = {
        "env_steps": sum(p["transitions"] for p in per_round),
        "train_s": time.perf_counter() - start,
        "rounds": per_round,
    }
    return controller, info


def prediction_error_cov(model: Any, data: Transitions) -> torch.Tensor:
    """Covariance of the one-step prediction errors x_next − f̂(x, u) of ``model`` on ``data``:
    an estimate of the process noise the model leaves unexplained (symmetric, PSD).

    Shapes
    ------
    data: x (N, n_x), u (N, n_u), x_next (N, n_x) -> (n_x, n_x)
    """
    with torch.no_grad():
        err = data.x_next - model.f(data.x, data.u)
        err = err - err.mean(0)
        cov = err.mT @ err / max(err.shape[0] - 1, 1)
    return 0.5 * (cov + cov.mT)


def env_cost_state(env: Any) -> Any:
    """The env's ``cost_state`` hook when it charges the cost on a transformed state (e.g. a
    wrapped angle), else None (the identity: nothing for MPC to apply)."""
    from kalmannet_ctrl.envs import PartiallyKnownEnv

    own = getattr(type(env), "cost_state", None)
    if own is None or own is PartiallyKnownEnv.cost_state:
        return None
    return env.cost_state
