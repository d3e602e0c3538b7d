"""Checks that every registered environment passes, whatever its dynamics.

Parametrized over :data:`kalmannet_ctrl.envs.ENV_IDS`, so an environment registered later is
covered without editing this file: Gymnasium's and Stable-Baselines3's env checkers, seeding,
the native vector env (entry point, autoreset rules, same dynamics and statistics as the single
env) and the typed errors on bad input.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from kalmannet_ctrl.envs import ENV_IDS, PartiallyKnownEnv, PartiallyKnownVectorEnv
from kalmannet_ctrl.errors import DimensionError, NonFiniteError, ParameterError

pytestmark = pytest.mark.parametrize("env_id", ENV_IDS)

# The checkers' advice that does not apply here: measurements are unbounded, and the action
# spaces are physical actuator limits rather than [-1, 1].
EXPECTED_WARNINGS = (
    r"observation space (minimum|maximum) value is (-)?infinity",
    r"symmetric and normalized",
    # Gymnasium's registry on any id with a newer version (CartPole-v1)
    r"CartPole-v0 is out of date",
)


def make_single(env_id: str, **kwargs: Any) -> PartiallyKnownEnv:
    env = gym.make(env_id, **kwargs).unwrapped
    assert isinstance(env, PartiallyKnownEnv)
    return env


def make_native(env_id: str, num_envs: int, **kwargs: Any) -> PartiallyKnownVectorEnv:
    envs = gym.make_vec(env_id, num_envs=num_envs, **kwargs)
    assert isinstance(envs, PartiallyKnownVectorEnv)
    return envs


def sample_actions(space: gym.spaces.Box, steps: int, seed: int) -> np.ndarray:
    space = gym.spaces.Box(space.low, space.high, dtype=space.dtype)  # a copy, own RNG
    space.seed(seed)
    return np.stack([space.sample() for _ in range(steps)])


def mid_action(space: gym.spaces.Box) -> np.ndarray:
    return ((space.low.astype(np.float64) + space.high) / 2).astype(np.float32)


def rollout_single(env: gym.Env, seed: int, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Observations, rewards, flags and states of a run; resets (unseeded) after an episode."""
    obs, info = env.reset(seed=seed)
    out: dict[str, list[Any]] = {"obs": [obs], "state": [info["state"]], "reward": [], "done": []}
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out["reward"].append(reward)
        out["done"].append((terminated, truncated))
        if terminated or truncated:
            obs, info = env.reset()
        out["obs"].append(obs)
        out["state"].append(info["state"])
    return {k: np.asarray(v) for k, v in out.items()}


def rollout_vector(envs: gym.vector.VectorEnv, seed: int, actions: np.ndarray) -> dict[str, Any]:
    obs, info = envs.reset(seed=seed)
    out: dict[str, list[Any]] = {"obs": [obs], "state": [info["state"]], "reward": [], "done": []}
    for a in actions:
        obs, reward, terminated, truncated, info = envs.step(a)
        out["obs"].append(obs)
        out["state"].append(info["state"])
        out["reward"].append(reward)
        out["done"].append(np.stack([terminated, truncated]))
    return {k: np.asarray(v) for k, v in out.items()}


def assert_same_run(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in ("obs", "state", "done"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_allclose(a["reward"], b["reward"], rtol=1e-12, atol=0, err_msg="reward")


# -- checkers --------------------------------------------------------------------------------------
def test_gymnasium_and_sb3_env_checkers(env_id: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(gym.make(env_id).unwrapped)
        sb3_check_env(gym.make(env_id).unwrapped)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(re.search(p, str(w.message)) for p in EXPECTED_WARNINGS)
    ]
    assert not unexpected


# -- seeding ---------------------------------------------------------------------------------------
def test_same_seed_same_trajectory_single_env(env_id: str) -> None:
    actions = sample_actions(gym.make(env_id).action_space, 40, seed=0)
    first = rollout_single(gym.make(env_id), 3, actions)
    assert_same_run(first, rollout_single(gym.make(env_id), 3, actions))
    env = gym.make(env_id)
    rollout_single(env, 5, actions)
    assert_same_run(first, rollout_single(env, 3, actions))  # reseeding an env used before
    other = rollout_single(gym.make(env_id), 4, actions)
    assert not np.array_equal(first["obs"], other["obs"])


def test_same_seed_same_trajectory_vector_env(env_id: str) -> None:
    envs = make_native(env_id, 4)
    actions = sample_actions(envs.action_space, 40, seed=0)
    first = rollout_vector(envs, 3, actions)
    assert_same_run(first, rollout_vector(make_native(env_id, 4), 3, actions))
    assert_same_run(first, rollout_vector(envs, 3, actions))
    other = rollout_vector(make_native(env_id, 4), 4, actions)
    assert not np.array_equal(first["obs"], other["obs"])
    # the copies are not replicas of each other
    assert not np.array_equal(first["obs"][:, 0], first["obs"][:, 1])


# -- the native vector env -------------------------------------------------------------------------
def test_make_vec_uses_the_native_vector_entry_point(env_id: str) -> None:
    spec = gym.spec(env_id)
    envs = gym.make_vec(env_id, num_envs=3)
    module, name = spec.vector_entry_point.split(":")
    assert type(envs).__module__ == module and type(envs).__name__ == name
    assert isinstance(envs, PartiallyKnownVectorEnv)
    assert envs.num_envs == 3 and envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.max_episode_steps == spec.max_episode_steps
    assert envs.single_action_space == gym.make(env_id).action_space
    assert envs.single_observation_space == gym.make(env_id).observation_space
    sync = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    assert isinstance(sync, SyncVectorEnv)
    assert sync.single_action_space == envs.single_action_space


def check_autoreset_rules(
    envs: gym.vector.VectorEnv, env_id: str, max_steps: int, steps: int, seed: int
) -> np.ndarray:
    """Step ``envs`` with random actions and check Gymnasium's NEXT_STEP autoreset rules.

    After a copy's episode ends (terminated or truncated), its next step returns the first
    observation of a new episode (a state from the initial distribution) with reward 0 and both
    flags False; an episode is truncated exactly when it reaches ``max_steps`` steps. Returns the
    flags (steps, 2, num_envs).
    """
    model = make_single(env_id).true_model
    mean = model.x0_mean.numpy()
    std = np.sqrt(np.diag(model.x0_cov.numpy()))
    actions = sample_actions(envs.action_space, steps, seed=seed)
    envs.reset(seed=seed)
    length = np.zeros(envs.num_envs, dtype=int)
    prev_done = np.zeros(envs.num_envs, dtype=bool)
    flags = []
    for a in actions:
        _, reward, terminated, truncated, info = envs.step(a)
        for i in range(envs.num_envs):
            if prev_done[i]:
                assert reward[i] == 0.0 and not terminated[i] and not truncated[i]
                assert np.all(np.abs(info["state"][i] - mean) <= 6 * std + 1e-9)
                length[i] = 0
            else:
                length[i] += 1
                assert truncated[i] == (length[i] >= max_steps), (i, length[i])
        prev_done = terminated | truncated
        flags.append(np.stack([terminated, truncated]))
    return np.asarray(flags)


@pytest.mark.parametrize("max_steps", [None, 5])
def test_autoreset_follows_gymnasium_next_step_rules(env_id: str, max_steps: int | None) -> None:
    """Native and SyncVectorEnv copies both follow the rules, at the registered time limit and a
    short one; where no episode terminates, their flags agree step by step. (With random actions
    an env that can fail may never reach its registered limit; the short one is always reached.)
    """
    kwargs = {} if max_steps is None else {"max_episode_steps": max_steps}
    limit = gym.spec(env_id).max_episode_steps if max_steps is None else max_steps
    steps = limit + 12 if max_steps is None else 4 * limit + 3
    native = check_autoreset_rules(make_native(env_id, 3, **kwargs), env_id, limit, steps, seed=1)
    sync_envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", **kwargs)
    sync = check_autoreset_rules(sync_envs, env_id, limit, steps, seed=1)
    assert (native[:, 0] | native[:, 1]).any()  # at least one episode ended
    if max_steps is not None:
        assert native[:, 1].any() and sync[:, 1].any()  # truncation at the short limit
    if not native[:, 0].any() and not sync[:, 0].any():
        np.testing.assert_array_equal(native, sync)


def test_vector_env_with_one_copy_replays_the_single_env(env_id: str) -> None:
    """Same seed, same actions: the native vector env (one copy) and the single env draw the
    same noise in the same order, so the first episode agrees step by step."""
    single = make_single(env_id)
    envs = make_native(env_id, 1)
    actions = sample_actions(single.action_space, 60, seed=2)
    obs, info = single.reset(seed=11)
    obs_v, info_v = envs.reset(seed=11)
    np.testing.assert_array_equal(obs_v[0], obs)
    np.testing.assert_array_equal(info_v["state"][0], info["state"])
    for a in actions:
        obs, reward, terminated, _, info = single.step(a)
        obs_v, reward_v, terminated_v, _, info_v = envs.step(a[None])
        np.testing.assert_array_equal(obs_v[0], obs)
        np.testing.assert_array_equal(info_v["state"][0], info["state"])
        np.testing.assert_allclose(reward_v[0], reward, rtol=1e-12, atol=0)
        assert terminated_v[0] == terminated
        if terminated:
            break


def test_one_copy_replays_the_single_env_across_episodes(env_id: str) -> None:
    """With a short time limit, a one-copy native vector env equals a single env that is reset
    (unseeded) after each episode: the autoreset draws its noise in the single env's order."""
    single = gym.make(env_id, max_episode_steps=4)
    envs = make_native(env_id, 1, max_episode_steps=4)
    actions = sample_actions(single.action_space, 14, seed=3)
    obs, info = single.reset(seed=5)
    obs_v, info_v = envs.reset(seed=5)
    ended = False
    for a in actions:
        obs_v, reward_v, terminated_v, truncated_v, info_v = envs.step(a[None])
        if ended:  # the native env's autoreset step: the single env's reset
            obs, info = single.reset()
            assert reward_v[0] == 0.0 and not terminated_v[0] and not truncated_v[0]
        else:
            obs, reward, terminated, truncated, info = single.step(a)
            np.testing.assert_allclose(reward_v[0], reward, rtol=1e-12, atol=0)
            assert (terminated_v[0], truncated_v[0]) == (terminated, truncated)
        np.testing.assert_array_equal(obs_v[0], obs)
        np.testing.assert_array_equal(info_v["state"][0], info["state"])
        ended = bool(terminated_v[0] or truncated_v[0])


def test_vector_env_and_single_env_have_the_same_statistics(env_id: str) -> None:
    """Mean and variance of the state after k = 5 steps (constant mid-range action), over 1024
    copies of the native vector env and 1024 episodes of one single env, independently seeded.

    Each component's difference is bounded by 5 standard errors of the difference; the standard
    error of a sample variance is estimated from the sample fourth moment, sqrt((m4 - s⁴) / N),
    so no Gaussian assumption is made. The test is seeded, hence deterministic.
    """
    N, k = 1024, 5
    single = make_single(env_id)
    a = mid_action(single.action_space)
    envs = make_native(env_id, N)
    envs.reset(seed=100)
    for _ in range(k):
        _, _, terminated, _, info = envs.step(np.tile(a, (N, 1)))
        assert not terminated.any(), "an episode ended before step k: choose a smaller k"
    x_vec = info["state"]
    x_single = np.empty_like(x_vec)
    single.reset(seed=200)
    for i in range(N):
        single.reset()
        for _ in range(k):
            _, _, terminated, _, info = single.step(a)
            assert not terminated
        x_single[i] = info["state"]

    def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        mean, var = x.mean(0), x.var(0, ddof=1)
        m4 = ((x - mean) ** 4).mean(0)
        return mean, var / len(x), var, np.maximum(m4 - var**2, 0.0) / len(x)

    mean_v, se2_mean_v, var_v, se2_var_v = moments(x_vec)
    mean_s, se2_mean_s, var_s, se2_var_s = moments(x_single)
    assert np.all(np.abs(mean_v - mean_s) <= 5 * np.sqrt(se2_mean_v + se2_mean_s) + 1e-12)
    assert np.all(np.abs(var_v - var_s) <= 5 * np.sqrt(se2_var_v + se2_var_s) + 1e-12)


# -- bad input -------------------------------------------------------------------------------------
def test_unknown_mismatch_keys(env_id: str) -> None:
    bad = {"not_a_parameter": 1.0}
    with pytest.raises(ParameterError, match=r"mismatch: unknown key.*not_a_parameter"):
        gym.make(env_id, mismatch=bad)
    with pytest.raises(ParameterError, match=r"mismatch: unknown key.*not_a_parameter"):
        gym.make_vec(env_id, num_envs=2, mismatch=bad)
    with pytest.raises(TypeError, match="mismatch: expected a mapping"):
        gym.make(env_id, mismatch=[1.0])
    env, envs = make_single(env_id), make_native(env_id, 2)
    for target in (env, envs):
        with pytest.raises(ParameterError, match=r"options\['mismatch'\]: unknown key"):
            target.reset(seed=0, options={"mismatch": bad})


def test_bad_mismatch_values(env_id: str) -> None:
    env, envs = make_single(env_id), make_native(env_id, 2)
    before = dict(env.mismatch)
    for key, p in type(env).mismatch_spec.items():
        name = re.escape(f"mismatch[{key!r}]")
        for value in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ParameterError, match=rf"{name}: expected a finite number"):
                gym.make(env_id, mismatch={key: value})
            option = re.escape(f"options['mismatch'][{key!r}]")
            for target in (env, envs):
                with pytest.raises(ParameterError, match=rf"{option}: expected a finite number"):
                    target.reset(options={"mismatch": {key: value}})
        outside = (p.low - max(1.0, abs(p.low)), p.high + max(1.0, abs(p.high)))
        for value in outside:
            with pytest.raises(ParameterError, match=rf"{name}: expected a value in"):
                gym.make(env_id, mismatch={key: value})
        with pytest.raises(TypeError, match=rf"{name}: expected a number"):
            gym.make(env_id, mismatch={key: "1.0"})
        if p.integer:
            with pytest.raises(ParameterError, match=rf"{name}: expected an integer"):
                gym.make(env_id, mismatch={key: p.default + 0.5})
    assert env.mismatch == before  # a rejected reset leaves the env as it was


def test_step_before_reset(env_id: str) -> None:
    env, envs = make_single(env_id), make_native(env_id, 2)
    with pytest.raises(RuntimeError, match=r"step: call reset\(\) before step\(\)"):
        env.step(mid_action(env.action_space))
    with pytest.raises(RuntimeError, match=r"step: call reset\(\) before step\(\)"):
        envs.step(np.tile(mid_action(env.action_space), (2, 1)))


def test_bad_actions(env_id: str) -> None:
    env, envs = make_single(env_id), make_native(env_id, 2)
    env.reset(seed=0)
    envs.reset(seed=0)
    n_u = env.action_space.shape[0]
    a = mid_action(env.action_space)
    for value in (np.nan, np.inf):
        bad = a.copy()
        bad[0] = value
        with pytest.raises(NonFiniteError, match="action: expected finite values"):
            env.step(bad)
        with pytest.raises(NonFiniteError, match="actions: expected finite values"):
            envs.step(np.stack([a, bad]))
    for shape in ((n_u + 1,), (2, n_u), (1, 1, n_u)):
        with pytest.raises(DimensionError, match=rf"action: expected shape \({n_u},\)"):
            env.step(np.zeros(shape, dtype=np.float32))
    for shape in ((3, n_u), (2, n_u + 1), (2 * n_u + 1,)):
        with pytest.raises(DimensionError, match=rf"actions: expected shape \(2, {n_u}\)"):
            envs.step(np.zeros(shape, dtype=np.float32))
    with pytest.raises(TypeError, match="action: expected an array of numbers"):
        env.step("push")
    with pytest.raises(TypeError, match="seed: the native vector env takes one integer seed"):
        envs.reset(seed=[0, 1])
    # a rejected action leaves the episode as it was: stepping goes on normally
    env.step(a)
    envs.step(np.stack([a, a]))


def test_actions_outside_the_bounds_are_clipped(env_id: str) -> None:
    space = make_single(env_id).action_space
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    width = high - low
    outside = np.where(np.arange(len(low)) % 2 == 0, high + 10 * width, low - 10 * width)
    clipped = np.clip(outside, low, high)
    runs = []
    for action in (outside, clipped):
        env = make_single(env_id)
        _, info = env.reset(seed=5)
        obs, reward, terminated, _, info_next = env.step(action)
        runs.append((obs, reward, info_next["state"]))
        if not terminated:
            expected = float(env.cost(info["state"][None], clipped[None])[0])
            assert reward == pytest.approx(-expected, rel=1e-12)
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    vec_runs = []
    for action in (outside, clipped):
        envs = make_native(env_id, 2)
        envs.reset(seed=5)
        vec_runs.append(envs.step(np.stack([action, clipped])))
    np.testing.assert_array_equal(vec_runs[0][0], vec_runs[1][0])
    np.testing.assert_array_equal(vec_runs[0][1], vec_runs[1][1])
    np.testing.assert_array_equal(vec_runs[0][4]["state"], vec_runs[1][4]["state"])


def test_success_excludes_failed_episodes(env_id: str) -> None:
    """At rest at the origin (upright, for the pendulum) every env counts a run that did not
    fail as a success, and none counts a failed one."""
    env = gym.make(env_id).unwrapped
    states = np.zeros((3, 11, env.true_model.n_x))
    ok = env.succeeded(states, np.array([10, 4, 10]), np.array([False, True, False]))
    assert ok.tolist() == [True, False, True]


def test_vector_env_describes_its_task_like_the_single_env(env_id: str) -> None:
    """task, angle components, cost_state and succeeded of the native vector env are its copies':
    episodes run on a vector env are scored as the runner scores them (from the single env)."""
    single = make_single(env_id).unwrapped
    envs = make_native(env_id, 3).unwrapped
    for name in ("task", "angle_states", "angle_measurements"):
        assert getattr(envs, name) == getattr(single, name)
    n_x = single.nominal_model.n_x
    x = np.random.default_rng(0).uniform(-7.0, 7.0, size=(5, n_x))
    np.testing.assert_array_equal(envs.cost_state(x), single.cost_state(x))
    states = np.random.default_rng(1).normal(0.0, 0.3, size=(3, 11, n_x))
    states[1, :, 0] += np.pi  # a pendulum hanging down; another state elsewhere
    lengths, failed = np.array([10, 10, 6]), np.array([False, False, True])
    np.testing.assert_array_equal(
        envs.succeeded(states, lengths, failed), single.succeeded(states, lengths, failed)
    )

