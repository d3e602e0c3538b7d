"""Training neural MPC in rounds: collect closed-loop transitions, fit the residual, redeploy."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch

from .._validation import check_positive_int
from ..controllers.mpc import LTV, MPPI, QP, Solver
from ..controllers.neural_mpc import NeuralMPC
from ..errors import ParameterError
from ..estimators import ExtendedKalmanFilter
from ..models.residual import ResidualModel
from .residual import Transitions, collect_transitions, fit_residual, one_step_mse

__all__ = ["env_cost_state", "prediction_error_cov", "train_neural_mpc"]

STATE_SOURCES = ("privileged", "estimated")

#: The solver settings ``mpc_kwargs`` may still give as MPC keywords (the former flat
#: constructor), per solver: keyword -> the solver's setting.
_FLAT_SETTINGS: dict[type[Solver], dict[str, str]] = {
    QP: {"max_qp_iterations": "max_iterations"},
    LTV: {k: k for k in ("iterations", "line_search", "max_qp_iterations")},
    MPPI: {
        k: k
        for k in (
            "samples",
            "temperature",
            "noise_std",
            "iterations",
            "seed",
            "generator",
            "rollout_dtype",
        )
    },
}
_SOLVER_NAMES: dict[str, type[Solver]] = {"qp": QP, "ltv": LTV, "mppi": MPPI}


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
        Keywords of :class:`NeuralMPC`/:class:`MPC` (``solver``, ``terminal_cost``, ...).
        ``input_bounds`` defaults to the env's action space and ``cost_state`` to the env's
        (e.g. the pendulum's wrapped angle). ``solver`` is a solver object (e.g.
        ``MPPI(samples=64)``) or a name; with a name (or none) the solver's settings may also
        be given as keywords (``{"solver": "mppi", "samples": 64}``, ``{"line_search":
        True}``), as the former MPC keywords. An MPPI solver without its own ``seed`` or
        ``generator`` is seeded with ``seed``.
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
        For an unknown ``states`` or non-positive counts, or a solver setting in
        ``mpc_kwargs`` that the chosen solver does not have.
    TypeError
        If ``mpc_kwargs`` gives solver settings beside a solver object.
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
    kwargs = _with_solver_object(kwargs, seed)

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


def _with_solver_object(kwargs: dict[str, Any], seed: int) -> dict[str, Any]:
    """MPC keywords whose ``solver`` is a solver object (or None, the default): a name (or
    None, the default LTV of a learned model) with flat solver settings becomes the solver they
    configure; an MPPI solver without its own noise source gets ``seed``."""
    solver = kwargs.pop("solver", None)
    flat = {k: kwargs.pop(k) for k in {k for v in _FLAT_SETTINGS.values() for k in v} & set(kwargs)}
    if isinstance(solver, Solver):
        if flat:
            raise TypeError(
                f"mpc_kwargs: give the solver's settings to the solver object ({solver!r}), "
                f"found {sorted(flat)} beside it"
            )
    elif solver is not None or flat:
        if solver is not None and solver not in _SOLVER_NAMES:
            raise ParameterError(
                f"mpc_kwargs: expected solver to be a Solver or one of {list(_SOLVER_NAMES)}, "
                f"found {solver!r}"
            )
        cls = LTV if solver is None else _SOLVER_NAMES[solver]
        names = _FLAT_SETTINGS[cls]
        unknown = sorted(set(flat) - set(names))
        if unknown:
            raise ParameterError(
                f"mpc_kwargs: {unknown} are not settings of {cls.__name__} (solver="
                f"{cls.name!r}); its settings are {sorted(names)}"
            )
        solver = cls(**{names[k]: v for k, v in flat.items()})
    if isinstance(solver, MPPI) and solver.seed is None and solver.generator is None:
        solver = dataclasses.replace(solver, seed=seed)
    return {**kwargs, "solver": solver}


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

    base = env.unwrapped
    if (
        not isinstance(base, PartiallyKnownEnv)
        or type(base).cost_state is PartiallyKnownEnv.cost_state
    ):
        return None
    return base.cost_state
