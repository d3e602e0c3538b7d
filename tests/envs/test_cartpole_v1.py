"""CartPole-v1: failing is charged for the rest of the episode, so it never pays to fall."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQR
from kalmannet_ctrl.envs import CartPoleEnv
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.training.lqg_pipeline import design_model

V0, V1 = "kalmannet_ctrl/CartPole-v0", "kalmannet_ctrl/CartPole-v1"


def _sweep_rewards(env_id: str, alphas: list[float], episodes: int) -> dict[float, np.ndarray]:
    """Per α, the rewards (E, T) of u = −α K_LQR x on the true state (LQR of the true model
    linearized at the origin), E seeded episodes in the native vector env, zero after the end."""
    out = {}
    for alpha in alphas:
        envs = gym.make_vec(env_id, num_envs=episodes)
        u = envs.unwrapped
        K = np.asarray(LQR(design_model(u.true_model), u.cost).gain)
        _, info = envs.reset(seed=0)
        x, T = info["state"], u.max_episode_steps
        running = np.ones(episodes, dtype=bool)
        rewards = np.zeros((episodes, T))
        for t in range(T):
            a = np.clip(-alpha * x @ K.T, -10.0, 10.0).astype(np.float32)
            _, r, term, trunc, info = envs.step(a)
            rewards[:, t] = np.where(running, r, 0.0)
            running &= ~(term | trunc)
            x = info["state"]
        envs.close()
        out[alpha] = rewards
    return out


def _discounted(rewards: np.ndarray, gamma: float) -> np.ndarray:
    return rewards @ gamma ** np.arange(rewards.shape[1])


def test_the_return_rises_monotonically_from_zero_force_to_lqr() -> None:
    """The issue's α-sweep: on v0 holding the pole longer (α = 0.1, 0.2) scores worse than
    letting it fall (α = 0); on v1 the return rises with α for every discount factor used in
    training. 40 episodes per α: the means differ by hundreds (v1) against a spread of the
    mean of a few units, so the order cannot flip by chance."""
    alphas = [0.0, 0.1, 0.2, 0.3, 1.0]
    v0 = _sweep_rewards(V0, alphas, 40)
    means0 = [v0[a].sum(1).mean() for a in alphas]
    assert means0[1] < means0[0] and means0[2] < means0[0]  # v0's flaw, as documented
    v1 = _sweep_rewards(V1, alphas, 40)
    for gamma in (1.0, 0.999, 0.99, 0.98):
        means = [_discounted(v1[a], gamma).mean() for a in alphas]
        assert all(np.diff(means) > 0), (gamma, means)
    # α = 0.3 and LQR keep the pole up: no failure cost, the same rewards on both versions
    for a in (0.3, 1.0):
        np.testing.assert_allclose(v1[a], v0[a])


def _push_over(env: gym.Env) -> tuple[float, float, int]:
    """Push with the full force until the pole falls: (the failing step's reward, the charge
    the Rewards section gives it without the horizon factor's H, the step count t)."""
    unwrapped = env.unwrapped
    Q, R = unwrapped.cost.numpy()
    corner = np.array([2.4, 0.0, 0.5, 0.0])
    assert corner @ Q @ corner == pytest.approx(8.26)
    _, info = env.reset(seed=3)
    t = 0
    while True:
        x = info["state"]
        _, reward, terminated, truncated, info = env.step(np.array([10.0], np.float32))
        t += 1
        if terminated:
            break
        assert not truncated
    s = info["state"]
    stage = x @ Q @ x + 10.0 * R[0, 0] * 10.0
    return reward, stage, max(s @ Q @ s, corner @ Q @ corner), t


def test_the_failure_cost_by_hand() -> None:
    """Pushing the pole over: the failing step's reward is −(stage + (H − t) max(s'Qs, corner))
    with H = 500 (the registration's episode length) and the corner (2.4, 0, 0.5, 0)."""
    reward, stage, per_step, t = _push_over(gym.make(V1))
    assert 0 < t < 500
    assert reward == pytest.approx(-(stage + (500 - t) * per_step), rel=1e-9)
    reward0, stage0, _, t0 = _push_over(gym.make(V0))
    assert t0 == t and reward0 == pytest.approx(-(stage0 + 100.0), rel=1e-9)


def test_single_and_vector_env_charge_the_same() -> None:
    """The native vector env charges what the single env does (same seeds per copy are not
    shared, so compare each failing step's charge against the formula on its own state)."""
    envs = gym.make_vec(V1, num_envs=4)
    u = envs.unwrapped
    Q = u.cost.numpy()[0]
    corner = np.array([2.4, 0.0, 0.5, 0.0])
    _, info = envs.reset(seed=1)
    steps = np.zeros(4, dtype=int)
    seen = 0
    for _ in range(200):
        x = info["state"]
        a = np.full((4, 1), 10.0, np.float32)
        _, r, term, trunc, info = envs.step(a)
        steps += 1
        stage = np.einsum("bi,ij,bj->b", x, Q, x) + 10.0 * u.cost.numpy()[1][0, 0] * 10.0
        for b in np.flatnonzero(term):
            s = info["state"][b]
            penalty = (500 - steps[b]) * max(s @ Q @ s, corner @ Q @ corner)
            assert r[b] == pytest.approx(-(stage[b] + penalty), rel=1e-9)
            seen += 1
        steps[term | trunc] = -1  # the next step restarts the copy (NEXT_STEP autoreset)
    assert seen >= 4


def test_v0_keeps_its_fixed_penalty_and_bad_failure_rule_is_typed() -> None:
    env = gym.make(V0)
    assert env.unwrapped.failure == "penalty"
    assert gym.make(V1).unwrapped.failure == "rest_of_horizon"
    charge = env.unwrapped.failure_cost(np.zeros((2, 4)), np.array([5, 9]))
    np.testing.assert_array_equal(charge, 100.0)
    with pytest.raises(ParameterError, match="failure: expected one of"):
        CartPoleEnv(failure="never")
    with pytest.raises(ParameterError, match="horizon"):
        CartPoleEnv(horizon=0)


def test_without_a_registration_the_horizon_argument_counts() -> None:
    reward, stage, per_step, t = _push_over(CartPoleEnv(failure="rest_of_horizon", horizon=50))
    assert t < 50
    assert reward == pytest.approx(-(stage + (50 - t) * per_step), rel=1e-9)


def test_the_discounted_failure_cost_is_the_discounted_rest_of_the_episode() -> None:
    """failure_discount γ: the charge is c · Σ_{k < n} γ^k (summed term by term here) for n
    steps left, γ = 1 is v1's n · c, and the native vector env charges the same."""
    gamma = 0.98
    reward, stage, per_step, t = _push_over(gym.make(V1, failure_discount=gamma))
    rest = sum(gamma**k for k in range(500 - t))
    assert reward == pytest.approx(-(stage + rest * per_step), rel=1e-9)
    assert rest * per_step < per_step / (1 - gamma) < (500 - t) * per_step
    single = CartPoleEnv(failure="rest_of_horizon", failure_discount=1.0)
    x = np.array([[0.1, 0.0, 0.6, 0.2], [2.5, 1.0, 0.1, 0.0]])
    left = np.array([1, 480])
    np.testing.assert_allclose(
        single.failure_cost(x, left), left * single.failure_cost(x, np.ones(2)), rtol=1e-12
    )
    # the native vector env (one copy, the same seed and actions) charges the same
    envs = gym.make_vec(V1, num_envs=1, failure_discount=gamma)
    envs.reset(seed=3)
    steps = 0
    while True:
        _, r, term, _, _ = envs.step(np.full((1, 1), 10.0, np.float32))
        steps += 1
        if term[0]:
            break
    assert steps == t and r[0] == pytest.approx(reward, rel=1e-9)
    envs.close()


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan")])
def test_bad_failure_discount_is_typed(value: float) -> None:
    with pytest.raises(ParameterError, match="failure_discount"):
        CartPoleEnv(failure_discount=value)
