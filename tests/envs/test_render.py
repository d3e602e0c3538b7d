"""Rendering of every registered environment: frames, Gymnasium's checker and video recorder,
Stable-Baselines3's ``make_vec_env``, the human window and the replay of recorded states."""

from __future__ import annotations

import re
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.wrappers import RecordVideo
from stable_baselines3.common.env_util import make_vec_env

from kalmannet_ctrl.envs import ENV_IDS, PartiallyKnownEnv
from kalmannet_ctrl.errors import (
    ComplexValueError,
    DimensionError,
    MissingDependencyError,
    ParameterError,
)

from .test_common import EXPECTED_WARNINGS

pytestmark = pytest.mark.parametrize("env_id", ENV_IDS)


def run(env: gym.Env, steps: int, seed: int = 0) -> list[np.ndarray]:
    """The true states of a zero-input run (reset included)."""
    _, info = env.reset(seed=seed)
    states = [info["state"]]
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(steps):
        _, _, _, _, info = env.step(zero)
        states.append(info["state"])
    return states


def test_check_env_passes_with_rgb_array(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array").unwrapped
    assert set(env.metadata["render_modes"]) == {"human", "rgb_array"}
    assert env.metadata["render_fps"] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(re.search(p, str(w.message)) for p in EXPECTED_WARNINGS)
    ]
    assert not unexpected


def test_frames_are_rgb_uint8_of_one_size_and_follow_the_state(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    run(env, 0)
    first = env.render()
    assert isinstance(first, np.ndarray) and first.dtype == np.uint8
    assert first.ndim == 3 and first.shape[2] == 3
    # something is drawn: more than one colour
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 2
    run(env, 30)
    later = env.render()
    assert later.shape == first.shape
    assert not np.array_equal(later, first)


def test_the_estimate_is_drawn_beside_the_true_state(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    states = run(env, 10)
    without = env.render()
    unwrapped = env.unwrapped
    unwrapped.estimate = states[-1] + 0.3
    np.testing.assert_allclose(unwrapped.estimate, states[-1] + 0.3)
    with_estimate = env.render()
    assert not np.array_equal(with_estimate, without)
    # the estimate's colour appears only with an estimate
    blue = np.array([31, 119, 180])
    assert (with_estimate == blue).all(-1).sum() > (without == blue).all(-1).sum()
    unwrapped.estimate = None
    assert unwrapped.estimate is None
    np.testing.assert_array_equal(env.render(), without)
    env.reset(seed=1)
    assert unwrapped.estimate is None


def test_render_frame_replays_what_render_draws(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    unwrapped = env.unwrapped
    y0, info = env.reset(seed=3)
    states, measurements = [info["state"]], [y0]
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for _ in range(12):
        y, _, _, _, info = env.step(zero)
        states.append(info["state"])
        measurements.append(y)
    unwrapped.estimate = states[-1] - 0.1
    live = env.render()
    estimates = np.full((13, len(states[0])), np.nan)
    estimates[-1] = states[-1] - 0.1
    # the env's measurements are float32 roundings of what it drew
    replay = gym.make(env_id).unwrapped.render_frame(
        np.array(states), np.array(measurements, dtype=np.float64), estimates
    )
    assert replay.shape == live.shape
    assert np.mean(replay != live) < 0.002  # at most a few pixels from float32 rounding


def test_render_frame_checks_its_arguments(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    n_x = env.true_model.n_x
    with pytest.raises(DimensionError, match=rf"states: expected shape \(T, {n_x}\)"):
        env.render_frame(np.zeros((3, n_x + 1)))
    with pytest.raises(DimensionError, match="estimates: expected 3 rows"):
        env.render_frame(np.zeros((3, n_x)), estimates=np.zeros((2, n_x)))
    with pytest.raises(ComplexValueError, match="states: expected real numbers"):
        env.render_frame(np.zeros((3, n_x), dtype=complex))
    with pytest.raises(ComplexValueError, match="estimate: expected real numbers"):
        env.reset(seed=0)
        env.estimate = np.zeros(n_x) + 1j


def test_record_video_writes_a_file(env_id: str, tmp_path) -> None:
    pytest.importorskip("moviepy", reason='RecordVideo needs moviepy ("kalmannet-ctrl[render]")')
    env = RecordVideo(
        gym.make(env_id, render_mode="rgb_array", max_episode_steps=20), str(tmp_path / "videos")
    )
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000


def test_sb3_make_vec_env(env_id: str) -> None:
    vec = make_vec_env(env_id, n_envs=2, seed=0)
    obs = vec.reset()
    assert obs.shape == (2, *vec.observation_space.shape)
    obs, reward, done, _ = vec.step(np.stack([vec.action_space.sample() for _ in range(2)]))
    assert obs.shape[0] == reward.shape[0] == done.shape[0] == 2
    frames = vec.get_images()
    assert len(frames) == 2 and all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
    vec.close()


def test_human_mode_opens_a_window(env_id: str, monkeypatch) -> None:
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    import pygame

    env = gym.make(env_id, render_mode="human")
    frame = gym.make(env_id).unwrapped.render_frame(np.zeros(env.unwrapped.true_model.n_x))
    env.unwrapped.metadata = {**env.unwrapped.metadata, "render_fps": 1000}  # no waiting
    env.reset(seed=0)  # human mode draws on reset and step
    assert env.render() is None
    surface = pygame.display.get_surface()
    assert surface is not None and surface.get_size() == (frame.shape[1], frame.shape[0])
    env.close()
    assert pygame.display.get_surface() is None


def test_bad_render_mode_and_render_before_reset(env_id: str) -> None:
    with pytest.raises(ParameterError, match=r"render_mode: expected None or one of \['human'"):
        gym.make(env_id, render_mode="ansi")
    with pytest.raises(RuntimeError, match=r"render: call reset\(\) before render\(\)"):
        gym.make(env_id, render_mode="rgb_array").unwrapped.render()
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="no render_mode"):
        assert env.render() is None


def test_without_pygame_the_error_gives_the_pip_command(env_id: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pygame", None)  # import pygame raises ImportError
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)  # stepping does not need pygame
    with pytest.raises(
        MissingDependencyError, match=re.escape('pip install "kalmannet-ctrl[render]"')
    ):
        env.render()


def test_vector_env_renders_each_copy_as_the_single_env(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=3, render_mode="rgb_array", max_episode_steps=8)
    obs, info = envs.reset(seed=0)
    states, measurements = [info["state"]], [obs]
    actions = np.zeros(envs.action_space.shape, dtype=np.float32)
    for _ in range(5):
        obs, _, _, _, info = envs.step(actions)
        states.append(info["state"])
        measurements.append(obs)
    frames = envs.render()
    assert isinstance(frames, tuple) and len(frames) == 3
    single: PartiallyKnownEnv = gym.make(env_id).unwrapped
    x, y = np.stack(states, 1), np.stack(measurements, 1).astype(np.float64)  # (3, 6, ·)
    for b in range(3):
        expected = single.render_frame(x[b], y[b])
        assert np.mean(frames[b] != expected) < 0.002  # float32 rounding of the measurements
        assert not np.array_equal(frames[b], single.render_frame(x[(b + 1) % 3], y[(b + 1) % 3]))
    envs.close()
