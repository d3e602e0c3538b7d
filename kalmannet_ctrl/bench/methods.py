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
from .context import METHODS, BuildContext, Method, get_method, register_method

__all__ = [
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

#: Data and state-error training of the LQG variants with a learned estimator (see
#: :func:`~kalmannet_ctrl.training.learned_lqg`).
#: ``exploration_std`` is relative to the action bounds: 0.01 is 0.1 N on CartPole-v0.
_LEARNED_NOISE_LQG = {"episodes": 100, "steps": 100, "fit_steps": 150, "exploration_std": 0.01}
_KALMANNET_LQG = {"episodes": 100, "steps": 100, "fit_steps": 300, "exploration_std": 0.01}
#: The MPC settings nominal and neural MPC share (keywords of the MPC build and of MPPI).
_MPC_CONFIG = {"horizon": 20, "swing_up_horizon": 30, "samples": 256, "rollout_dtype": "float32"}

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
    ),
    Method(
        "ekf-oracle",
        build_ekf_oracle,
        "zero input, EKF on the true model (estimation only): the oracle",
        estimation_only,
        oracle=True,
    ),
    Method(
        "ekf-nominal",
        build_ekf_nominal,
        "zero input, EKF on the nominal model (estimation only)",
        estimation_only,
    ),
    Method(
        "learned-noise",
        build_learned_noise,
        "zero input, EKF on the nominal model with learned noise covariances (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 150, "lr": 0.02},
    ),
    Method(
        "kalmannet",
        build_kalmannet,
        "zero input, KalmanNet on the nominal model (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 300, "lr": 1e-3},
    ),
    Method(
        "rnn",
        build_rnn,
        "zero input, GRU from measurements to states (estimation only)",
        estimation_only,
        config={"episodes": 100, "steps": 100, "fit_steps": 300, "lr": 1e-2},
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
            "rounds": 3,
            "episodes": 20,
            "fit_steps": 1500,
            "exploration_std": 0.05,
            "states": "privileged",
        },
    ),
    Method(
        "learned-noise-lqg",
        build_learned_noise_lqg,
        "LQG on the nominal model, KF/EKF noise covariances learned on closed-loop data, then "
        "tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={
            **_LEARNED_NOISE_LQG,
            "closed_loop_steps": 100,
            "closed_loop_options": {"lr": 1e-2},
        },
    ),
    Method(
        "kalmannet-lqg",
        build_kalmannet_lqg,
        "LQG on the nominal model with KalmanNet as the estimator, trained on closed-loop data, "
        "then tuned on the closed-loop cost in a learned simulator",
        regulates_the_origin,
        config={**_KALMANNET_LQG, "closed_loop_steps": 300},
    ),
    Method(
        "learned-noise-lqg-state",
        build_learned_noise_lqg,
        "learned-noise-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config=_LEARNED_NOISE_LQG,
    ),
    Method(
        "kalmannet-lqg-state",
        build_kalmannet_lqg,
        "kalmannet-lqg trained on the state error only (no closed-loop tuning)",
        regulates_the_origin,
        config=_KALMANNET_LQG,
    ),
    Method(
        "ppo",
        build_ppo,
        "PPO (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
    ),
    Method(
        "sac",
        build_sac,
        "SAC (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
        has_inputs,
        config={"observation": "estimate"},
    ),
    Method(
        "ppo-measurement",
        build_ppo,
        "PPO (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
    ),
    Method(
        "sac-measurement",
        build_sac,
        "SAC (Stable-Baselines3) observing the last measurements (history of 4); long training",
        has_inputs,
        config={"observation": "measurement"},
    ),
):
    register_method(_method)
