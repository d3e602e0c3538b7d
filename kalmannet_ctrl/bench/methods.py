"""Methods of a comparison: how to build (and, if needed, train) a controller for a scenario.

A method is a name plus a module-level ``build(ctx) -> controller`` function (so that it can be
sent to worker processes), where the controller follows the Controller protocol
(``predict(observation, state, episode_start)``) and may expose ``estimate(state)`` for the
estimation error. Trainable methods keep their artefacts in ``ctx.cache``.

This module registers the built-in methods (their build functions are in
:mod:`kalmannet_ctrl.bench.builders`, the registry in :mod:`kalmannet_ctrl.bench.context`).
"""

from __future__ import annotations

from .builders import (
    build_ekf_nominal,
    build_ekf_oracle,
    build_kalmannet,
    build_kalmannet_lqg,
    build_learned_noise,
    build_learned_noise_lqg,
    build_lqg_nominal,
    build_lqg_oracle,
    build_mpc_nominal,
    build_neural_mpc,
    build_ppo,
    build_rnn,
    build_sac,
    estimation_only,
    has_inputs,
    regulates_the_origin,
)
from .context import FAMILIES, METHODS, BuildContext, Method, get_method, register_method
from .presets import budget

__all__ = [
    "FAMILIES",
    "METHODS",
    "BuildContext",
    "Method",
    "build_ekf_nominal",
    "build_ekf_oracle",
    "build_kalmannet",
    "build_kalmannet_lqg",
    "build_learned_noise",
    "build_learned_noise_lqg",
    "build_lqg_nominal",
    "build_lqg_oracle",
    "build_mpc_nominal",
    "build_neural_mpc",
    "build_ppo",
    "build_rnn",
    "build_sac",
    "estimation_only",
    "get_method",
    "has_inputs",
    "register_method",
    "regulates_the_origin",
]

#: The exploration of the LQG variants with a learned estimator while they collect data (see
#: :func:`~kalmannet_ctrl.training.learned_lqg`), relative to the action bounds: 0.01 is 0.1 N
#: on CartPole-v0. Their budgets are in :data:`~kalmannet_ctrl.bench.presets.BUDGETS`.
_LEARNED_LQG = {"exploration_std": 0.01}
#: The MPC settings nominal and neural MPC share (keywords of the MPC build and of MPPI).
_MPC_CONFIG = {"horizon": 20, "swing_up_horizon": 30, "samples": 256, "rollout_dtype": "float32"}


def _state_only(name: str) -> dict:
    """The budget of ``name`` without its closed-loop tuning (the ``*-state`` variants)."""
    return {k: v for k, v in budget(name).items() if k != "closed_loop_steps"}


for _method in (
    Method(
        "lqg-oracle",
        build_lqg_oracle,
        "LQG on the true model (linearized at the origin): the oracle",
        regulates_the_origin,
        oracle=True,
    ),
    Method(
        "lqg-nominal",
        build_lqg_nominal,
        "LQG on the nominal model (linearized at the origin): the model-based baseline",
        regulates_the_origin,
        baseline=True,
    ),
    Method(
        "ekf-oracle",
        build_ekf_oracle,
        "zero input, EKF on the true model (estimation only): the oracle",
        estimation_only,
        oracle=True,
        measure="mse",
    ),
    Method(
        "ekf-nominal",
        build_ekf_nominal,
        "zero input, EKF on the nominal model (estimation only)",
        estimation_only,
        baseline=True,
        measure="mse",
    ),
    Method(
        "learned-noise",
        build_learned_noise,
        "zero input, EKF on the nominal model with learned noise covariances (estimation only)",
        estimation_only,
        config={"lr": 0.02, **budget("learned-noise")},
        family="learned optimization",
        measure="mse",
    ),
    Method(
        "kalmannet",
        build_kalmannet,
        "zero input, KalmanNet on the nominal model (estimation only)",
        estimation_only,
        config={"lr": 1e-3, **budget("kalmannet")},
        family="DNN-aided",
        measure="mse",
    ),
    Method(
        "rnn",
        build_rnn,
        "zero input, GRU from measurements to states (estimation only)",
        estimation_only,
        config={"lr": 1e-2, **budget("rnn")},
        family="data-centric",
        measure="mse",
    ),
    Method(
        "mpc-nominal",
        build_mpc_nominal,
        "MPC on the nominal model (QP, sequential linearization, or MPPI for a swing-up)",
        has_inputs,
        config=_MPC_CONFIG,
    ),
    Method(
        "neural-mpc",
        build_neural_mpc,
        "MPC on the nominal model plus a residual network learned in closed-loop rounds",
        has_inputs,
        config={
            **_MPC_CONFIG,
            **budget("neural-mpc"),
            "exploration_std": 0.05,
            "states": "privileged",
        },
        family="DNN-aided",
    ),
    Method(
        "learned-noise-lqg",
        build_learned_noise_lqg,
        "LQG on the nominal model, KF/EKF noise covariances learned on closed-loop data, then "
        "tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={
            **_LEARNED_LQG,
            **budget("learned-noise-lqg"),
            "closed_loop_options": {"lr": 1e-2},
        },
        family="learned optimization",
    ),
    Method(
        "kalmannet-lqg",
        build_kalmannet_lqg,
        "LQG on the nominal model with KalmanNet as the estimator, trained on closed-loop data, "
        "then tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={**_LEARNED_LQG, **budget("kalmannet-lqg")},
        family="DNN-aided",
    ),
    Method(
        "learned-noise-lqg-state",
        build_learned_noise_lqg,
        "learned-noise-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config={**_LEARNED_LQG, **_state_only("learned-noise-lqg")},
        family="learned optimization",
    ),
    Method(
        "kalmannet-lqg-state",
        build_kalmannet_lqg,
        "kalmannet-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config={**_LEARNED_LQG, **_state_only("kalmannet-lqg")},
        family="DNN-aided",
    ),
    Method(
        "ppo",
        build_ppo,
        "PPO (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
        family="data-centric",
    ),
    Method(
        "sac",
        build_sac,
        "SAC (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
        family="data-centric",
    ),
    Method(
        "ppo-measurement",
        build_ppo,
        "PPO (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
        family="data-centric",
    ),
    Method(
        "sac-measurement",
        build_sac,
        "SAC (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
        family="data-centric",
    ),
):
    register_method(_method)
