"""Methods of a comparison: how to build (and, if needed, train) a controller for a scenario.

A method is a name plus a module-level ``build(ctx) -> controller`` function (so that it can be
sent to worker processes), where the controller follows the Controller protocol
(``predict(observation, state, episode_start)``) and may expose ``estimate(state)`` for the
estimation error. Trainable methods keep their artefacts in ``ctx.cache``.

This module registers the built-in methods (their build functions are in
:mod:`kalmannet_ctrl.bench.builders`, the registry in :mod:`kalmannet_ctrl.bench.context`).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from .builders import (
    build_cocp,
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
    build_recurrent_ppo,
    build_rnn,
    build_sac,
    build_unfolded_mpc,
    estimation_only,
    has_inputs,
    regulates_the_origin,
    rl_settings,
)
from .context import FAMILIES, METHODS, BuildContext, Method, get_method, register_method
from .presets import budget

__all__ = [
    "FAMILIES",
    "METHODS",
    "BuildContext",
    "Method",
    "build_cocp",
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
    "build_recurrent_ppo",
    "build_rnn",
    "build_sac",
    "build_unfolded_mpc",
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
#: The tuned policies' data (cocp, unfolded MPC): the rollouts of the LQG variants above;
#: and the simulated episodes of their tuning (keywords of tune_policy; lr per method).
_TUNED_POLICY = {"exploration_std": _LEARNED_LQG["exploration_std"]}
_TUNE_EPISODES = {"horizon": 200, "episodes": 256, "val_episodes": 64}
#: The MPC settings nominal and neural MPC share (keywords of the MPC build and of MPPI).
_MPC_CONFIG = {"horizon": 20, "swing_up_horizon": 30, "samples": 256, "rollout_dtype": "float32"}


def _with_state_only(method: Method) -> tuple[Method, Method]:
    """``method`` and its ``-state`` variant, trained on the state error only (its budget
    without the closed-loop tuning)."""
    tuning = ("closed_loop_steps", "closed_loop_options")
    variant = replace(
        method,
        name=f"{method.name}-state",
        description=f"{method.name} trained on the state error only (no closed-loop tuning)",
        config={k: v for k, v in method.config.items() if k not in tuning},
    )
    return method, variant


def _estimator(name: str, build: Any, lr: float, description: str) -> Method:
    """A learned estimator run with zero input (estimation only; trained with learning rate
    ``lr`` and the budget of :data:`~kalmannet_ctrl.bench.presets.BUDGETS`)."""
    return Method(
        name,
        build,
        f"zero input, {description} (estimation only)",
        estimation_only,
        config={"lr": lr, **budget(name)},
        measure="mse",
    )


def _family(family: str, *methods: Method) -> tuple[Method, ...]:
    """``methods``, each placed in ``family`` of the spectrum."""
    return tuple(replace(m, family=family) for m in methods)


# the table, from the model to the data (Method.family)
for _method in (
    *_family(
        "model-based",
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
            "mpc-nominal",
            build_mpc_nominal,
            "MPC on the nominal model (QP, sequential linearization, or MPPI for a swing-up)",
            has_inputs,
            config=_MPC_CONFIG,
        ),
    ),
    *_family(
        "learned optimization",
        _estimator(
            "learned-noise", build_learned_noise, 0.02, "EKF with noise covariances learned"
        ),
        *_with_state_only(
            Method(
                "learned-noise-lqg",
                build_learned_noise_lqg,
                "LQG on the nominal model, KF/EKF noise covariances learned on closed-loop data, "
                "then tuned on the closed-loop cost in a learned simulator",
                regulates_the_origin,
                config={
                    **_LEARNED_LQG,
                    **budget("learned-noise-lqg"),
                    # closed-loop lr on 100-step segments, quick budget, seed 0: 3e-3 closed
                    # 67 / 91 / 83 % of the CartPole / large-mismatch / LinearSystem gaps,
                    # 1e-2 0 / 91 / 85 % (no step beat the start on CartPole), 1e-3 69 / 69 / 82 %
                    "closed_loop_options": {"lr": 3e-3},
                },
            )
        ),
        Method(
            "cocp",
            build_cocp,
            "ADP convex-optimization policy on the nominal model and KF/EKF, its value function "
            "tuned on the closed-loop cost in a learned simulator (Agrawal et al. 2020)",
            regulates_the_origin,
            config={
                "trainable": ["S", "q"],
                **_TUNED_POLICY,
                # quick budget, training and evaluation seed 1 (CartPole / large mismatch /
                # LinearSystem gap closed): lr 0.1 68 / 96 / 84 %; lr 0.02 26 / 97 / 88 %;
                # 100-step episodes at lr 0.02, 0.05, 0.1 (40 steps) 21, 42, 69 % on CartPole,
                # but 85 % at the large mismatch (lr 0.05), where the pole fell in the env
                "tune_options": {**_TUNE_EPISODES, "lr": 0.1},
                **budget("cocp"),
            },
        ),
    ),
    *_family(
        "deep unfolding",
        Method(
            "unfolded-mpc",
            build_unfolded_mpc,
            "MPC on the nominal model and KF/EKF, solved by 5 unfolded projected-gradient "
            "iterations whose step sizes are tuned on the closed-loop cost in a learned simulator",
            regulates_the_origin,
            config={
                "horizon": _MPC_CONFIG["horizon"],
                "K": 5,
                # the QP's data learned too: with the step sizes alone the policy stays an
                # approximate solver of the nominal MPC, and costs more than it (quick budget,
                # seed 1: -26 % of the LinearSystem gap, -43 % on CartPole); with the data,
                # lr 1e-3: 90 / 77 / 99 % (LinearSystem / CartPole / large mismatch); lr 5e-3:
                # 91 % on LinearSystem, no step beat the start on CartPole
                "learn_qp": True,
                **_TUNED_POLICY,
                "tune_options": {**_TUNE_EPISODES, "lr": 1e-3},
                **budget("unfolded-mpc"),
            },
        ),
    ),
    *_family(
        "DNN-aided",
        _estimator("kalmannet", build_kalmannet, 1e-3, "KalmanNet on the nominal model"),
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
        ),
        *_with_state_only(
            Method(
                "kalmannet-lqg",
                build_kalmannet_lqg,
                "LQG on the nominal model with KalmanNet as the estimator, trained on closed-loop "
                "data, then tuned on the closed-loop cost in a learned simulator",
                regulates_the_origin,
                config={**_LEARNED_LQG, **budget("kalmannet-lqg")},
            )
        ),
    ),
    *_family(
        "data-centric",
        _estimator("rnn", build_rnn, 1e-2, "GRU from measurements to states"),
        Method(
            "ppo",
            build_ppo,
            "PPO (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
            has_inputs,
            config={"observation": "estimate"},
            settings=partial(rl_settings, "ppo"),
        ),
        Method(
            "sac",
            build_sac,
            "SAC (Stable-Baselines3) observing the nominal KF/EKF estimate; long training",
            has_inputs,
            config={"observation": "estimate"},
            settings=partial(rl_settings, "sac"),
        ),
        Method(
            "ppo-measurement",
            build_ppo,
            "PPO (Stable-Baselines3) observing the last measurements (history of 4); long training",
            has_inputs,
            config={"observation": "measurement"},
            settings=partial(rl_settings, "ppo"),
        ),
        Method(
            "sac-measurement",
            build_sac,
            "SAC (Stable-Baselines3) observing the last measurements (history of 4); long training",
            has_inputs,
            config={"observation": "measurement"},
            settings=partial(rl_settings, "sac"),
        ),
        Method(
            "recurrentppo-measurement",
            build_recurrent_ppo,
            "RecurrentPPO (sb3-contrib, an LSTM policy) on the raw measurements; long training",
            has_inputs,
            config={"observation": "measurement", "history": 1},
            settings=partial(rl_settings, "recurrentppo"),
        ),
    ),
):
    register_method(_method)
