"""Bring your own system: a nominal model from python-control, your own true simulator.
====================================================================================

The designer models a mass on a spring as linear (python-control, continuous time, sampled at
50 Hz); the real spring is stiffer than believed and hardens with stretch (a Duffing spring,
s k x + k3 x^3), and has a little more friction. Wrap both in an environment, register it,
and let the compare runner put LQG on the nominal model against LQG on the (linearized) true
model. The cubic term is what no linear design captures: the gap learned methods can close.

    python examples/bring_your_own_system.py
"""

from __future__ import annotations

from typing import ClassVar

import control
import numpy as np
import torch
from gymnasium.envs.registration import register, registry

from kalmannet_ctrl.bench import LocalExecutor, Scenario, compare, get_method
from kalmannet_ctrl.envs import (
    MismatchParameter,
    PartiallyKnownEnv,
    PartiallyKnownVectorEnv,
    Problem,
)
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel, QuadraticCost

DT = 0.02
MASS, K, C = 1.0, 4.0, 0.2


def nominal_model() -> LinearGaussianModel:
    """m x'' = -k x - c x' + u, from python-control, zero-order hold at DT."""
    sys = control.ss([[0.0, 1.0], [-K / MASS, -C / MASS]], [[0.0], [1.0 / MASS]], [[1.0, 0.0]], 0.0)
    return LinearGaussianModel.from_control(
        sys, np.diag([1e-6, 1e-4]), [[1e-3]], dt=DT, x0_cov=0.25 * np.eye(2)
    )


def true_model(stiffness_scale: float, k3: float, friction_scale: float) -> NonlinearModel:
    """The real spring: s k x + k3 x^3, friction c * friction_scale; RK4 at DT."""

    def deriv(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        pos, vel = x[:, 0], x[:, 1]
        spring = stiffness_scale * K * pos + k3 * pos**3
        acc = (-spring - C * friction_scale * vel + u[:, 0]) / MASS
        return torch.stack([vel, acc], dim=-1)

    def f(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        k1 = deriv(x, u)
        k2 = deriv(x + 0.5 * DT * k1, u)
        k3_ = deriv(x + 0.5 * DT * k2, u)
        k4 = deriv(x + DT * k3_, u)
        return x + DT / 6 * (k1 + 2 * k2 + 2 * k3_ + k4)

    nom = nominal_model()
    return NonlinearModel(
        f,
        lambda x: x[:, :1],
        n_x=2,
        n_y=1,
        n_u=1,
        process_cov=nom.process_cov,
        measurement_cov=nom.measurement_cov,
        x0_cov=nom.x0_cov,
        dt=DT,
    )


class StiffeningSpringEnv(PartiallyKnownEnv):
    """Hold a mass on a stiffening spring at rest; only its position is measured."""

    mismatch_spec: ClassVar[dict[str, MismatchParameter]] = {
        "stiffness_scale": MismatchParameter(1.5, 0.1, 10.0, "true / nominal linear stiffness"),
        "k3": MismatchParameter(20.0, 0.0, 1000.0, "cubic stiffness of the true spring"),
        "friction_scale": MismatchParameter(1.5, 0.0, 10.0, "true / nominal friction"),
    }

    def build(self, mismatch: dict[str, float]) -> Problem:
        return Problem(
            nominal=nominal_model(),
            true=true_model(
                mismatch["stiffness_scale"], mismatch["k3"], mismatch["friction_scale"]
            ),
            cost=QuadraticCost(np.diag([10.0, 1.0]), [[0.01]]),
            action_low=np.array([-5.0]),
            action_high=np.array([5.0]),
        )


class StiffeningSpringVectorEnv(PartiallyKnownVectorEnv, env_class=StiffeningSpringEnv):
    """Native batched copies, stepped by one call (``gymnasium.make_vec``'s entry point)."""


if "examples/StiffeningSpring-v0" not in registry:
    register(
        id="examples/StiffeningSpring-v0",
        entry_point=StiffeningSpringEnv,
        vector_entry_point=StiffeningSpringVectorEnv,
        max_episode_steps=250,
    )


def main() -> None:
    scenarios = [
        Scenario("examples/StiffeningSpring-v0", name="spring (default mismatch)"),
        Scenario(
            "examples/StiffeningSpring-v0",
            mismatch={"stiffness_scale": 3.0, "k3": 100.0},
            name="spring (3x stiffer, k3=100)",
        ),
    ]
    methods = [get_method("lqg-oracle"), get_method("lqg-nominal")]
    # one worker: the environment is registered in this script, not in an importable module
    results = compare(scenarios, methods, episodes=100, seed=0, executor=LocalExecutor(1))
    print(results.to_markdown())


if __name__ == "__main__":
    main()
