"""The control methods of the compare runner: they build, run, train once and reload from the
cache with the same numbers, and apply to the right environments."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.bench import DEFAULT_METHODS, LocalExecutor, Method, Scenario, compare
from kalmannet_ctrl.bench.methods import (
    build_kalmannet_lqg,
    build_learned_noise_lqg,
    build_mpc_nominal,
    build_neural_mpc,
    build_ppo,
    get_method,
    has_inputs,
)

LINEAR = Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=30, name="linear-short")

TINY = [
    Method("mpc-test", build_mpc_nominal, config={"horizon": 10}),
    Method(
        "neural-mpc-test",
        build_neural_mpc,
        config={"horizon": 10, "rounds": 1, "episodes": 2, "steps": 20, "fit_steps": 5},
    ),
    Method(
        "kalmannet-lqg-test",
        build_kalmannet_lqg,
        config={
            "episodes": 4,
            "steps": 20,
            "fit_steps": 2,
            "closed_loop_steps": 1,
            "closed_loop_options": {"horizon": 10, "episodes": 4, "val_episodes": 2},
            "simulator_fit_steps": 5,
        },
    ),
    Method(
        "learned-noise-lqg-test",
        build_learned_noise_lqg,
        config={"episodes": 4, "steps": 20, "fit_steps": 2},
    ),
    Method("ppo-test", build_ppo, config={"observation": "estimate", "total_timesteps": 256}),
]


def test_control_methods_train_once_and_reload_from_the_cache(tmp_path: Path) -> None:
    kwargs = dict(episodes=3, seed=0, executor=LocalExecutor(1), progress=False)
    first = compare([LINEAR], TINY, output_dir=tmp_path, **kwargs)
    for method in TINY:
        cell = first.get(LINEAR.label, method.name)
        assert cell.episodes == 3 and cell.steps == 30
        trains = method.name != "mpc-test"
        assert (cell.train_env_steps > 0) == trains
    assert first.get(LINEAR.label, "neural-mpc-test").train_env_steps == 2 * 20
    assert first.get(LINEAR.label, "kalmannet-lqg-test").train_env_steps == 4 * 20
    assert first.get(LINEAR.label, "ppo-test").train_env_steps >= 256
    # the cells are cached: drop them, keep the trained artefacts, and rebuild from those
    for cell_file in (tmp_path / "cells").glob("*.json"):
        cell_file.unlink()
    again = compare([LINEAR], TINY, output_dir=tmp_path, **kwargs)
    for method in TINY:
        a, b = first.get(LINEAR.label, method.name), again.get(LINEAR.label, method.name)
        assert a.cost == pytest.approx(b.cost, rel=1e-9), method.name
        assert a.train_env_steps == b.train_env_steps


@pytest.mark.parametrize(
    ("env_id", "applies"),
    [
        ("kalmannet_ctrl/LinearSystem-v0", True),
        ("kalmannet_ctrl/CartPole-v0", True),
        ("kalmannet_ctrl/Pendulum-v0", True),
        ("kalmannet_ctrl/Lorenz-v0", False),  # an estimation task
    ],
)
def test_mpc_methods_apply_to_control_tasks(env_id: str, applies: bool) -> None:
    assert has_inputs(gym.make(env_id).unwrapped) is applies


def test_the_default_comparison_includes_the_learned_controllers() -> None:
    # every point of the spectrum, the data-centric one included (PPO on the quick budget)
    for name in ("mpc-nominal", "neural-mpc", "kalmannet-lqg", "learned-noise-lqg", "ppo"):
        assert name in DEFAULT_METHODS
        get_method(name)
    # registered, but too slow to train for the default run (the full preset has it)
    assert get_method("sac").name == "sac" and "sac" not in DEFAULT_METHODS
