"""tune_policy_on_env: learned_lqg's rollouts and simulator, then tune_policy, end to end on
LinearSystem-v0 at a tiny budget; the policy is checked before anything is fitted."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import MPC, ConvexPolicy, Unfolded
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.models import ResidualModel
from kalmannet_ctrl.training import FitResult, tune_policy_on_env
from kalmannet_ctrl.training.lqg_pipeline import baseline_rollouts

from ..controllers.systems import random_system

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
TINY = {
    "episodes": 4,
    "steps": 20,
    "tune_steps": 3,
    "tune_options": {"horizon": 10, "episodes": 8, "val_episodes": 4, "val_every": 1},
    "simulator_fit_steps": 20,
    "progress": False,
}


def linear_env():
    return gym.make(LINEAR).unwrapped


def bounds(env):
    return (env.action_space.low, env.action_space.high)


@pytest.mark.parametrize("kind", ["convex", "unfolded"])
def test_tunes_the_policy_in_place_on_the_rollouts_budget(kind: str) -> None:
    env = linear_env()
    if kind == "convex":
        policy = ConvexPolicy(env.nominal_model, env.cost, input_bounds=bounds(env))
        module = policy
    else:
        solver = Unfolded(K=3, learn_qp=True)
        policy = MPC(env.nominal_model, env.cost, 5, input_bounds=bounds(env), solver=solver)
        module = policy.setup
    start = {k: v.clone() for k, v in module.state_dict().items()}
    out, info = tune_policy_on_env(LINEAR, policy, seed=3, **TINY)
    assert out is policy
    assert info["env_steps"] == 4 * 20
    assert set(info["time_s"]) == {"rollouts", "simulator", "tune"}
    assert info["train_s"] >= sum(info["time_s"].values()) - 1e-6
    assert isinstance(info["simulator"], ResidualModel) and isinstance(info["tune"], FitResult)
    assert info["tune"].steps == 3
    # the kept parameters are those of the best validation, which beat the start's
    assert info["tune"].best_step > 0
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v, start[k])]
    assert changed


def test_the_rollouts_are_those_of_learned_lqg() -> None:
    # the nominal LQG (on the design model) with the excitation, seeded
    env, baseline, rollouts = baseline_rollouts(
        LINEAR, 3, steps=15, exploration_std=0.01, seed=5, env_kwargs=None
    )
    again = baseline_rollouts(LINEAR, 3, steps=15, exploration_std=0.01, seed=5, env_kwargs=None)
    assert rollouts.y.shape == (3, 15, env.nominal_model.n_y)
    torch.testing.assert_close(rollouts.u, again[2].u, rtol=0, atol=0)
    calm = baseline_rollouts(LINEAR, 3, steps=15, exploration_std=0.0, seed=5, env_kwargs=None)
    assert not torch.equal(rollouts.u, calm[2].u)
    torch.testing.assert_close(baseline.lqr.gain, calm[1].lqr.gain)


def test_a_policy_that_cannot_be_tuned_is_refused_before_fitting() -> None:
    env = linear_env()
    frozen = ConvexPolicy(env.nominal_model, env.cost, trainable=())
    with pytest.raises(TypeError, match="no trainable parameters"):
        tune_policy_on_env(LINEAR, frozen, **{**TINY, "simulator_fit_steps": 10**9})
    exact = MPC(env.nominal_model, env.cost, 5)
    with pytest.raises(TypeError, match="policy: expected a ConvexPolicy or an MPC"):
        tune_policy_on_env(LINEAR, exact, **{**TINY, "simulator_fit_steps": 10**9})
    full = ConvexPolicy(env.nominal_model, env.cost, full_state=True)
    with pytest.raises(ParameterError, match="full-state"):
        tune_policy_on_env(LINEAR, full, **{**TINY, "simulator_fit_steps": 10**9})
    other = ConvexPolicy(*random_system(3, 1, 1, seed=0))
    with pytest.raises(DimensionError, match="n_x = 2 differs from the policy's 3"):
        tune_policy_on_env(LINEAR, other, **{**TINY, "simulator_fit_steps": 10**9})
    policy = ConvexPolicy(env.nominal_model, env.cost)
    for key in ("episodes", "tune_steps", "simulator_fit_steps"):
        with pytest.raises(ParameterError, match=key):
            tune_policy_on_env(LINEAR, policy, **{**TINY, key: 0})
    with pytest.raises(ValueError, match="exploration_std"):
        tune_policy_on_env(LINEAR, policy, **{**TINY, "exploration_std": -1.0})
