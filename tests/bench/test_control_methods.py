"""The control methods of the compare runner: they build, run, train once and reload from the
cache with the same numbers, and apply to the right environments."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.bench import DEFAULT_METHODS, LocalExecutor, Method, Scenario, compare
from kalmannet_ctrl.bench.methods import (
    build_kalmannet_lqg,
    build_learned_noise_lqg,
    build_mpc_nominal,
    build_neural_mpc,
    build_ppo,
    build_recurrent_ppo,
    get_method,
    has_inputs,
    regulates_the_origin,
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
    Method(
        "ppo-test",
        build_ppo,
        config={
            "observation": "estimate",
            "total_timesteps": 256,
            "hyperparams": {"n_steps": 128, "batch_size": 64, "n_epochs": 1, "n_envs": 1},
            "curve_every": 128,
            "curve_episodes": 2,
        },
    ),
    Method(
        "recurrentppo-test",
        build_recurrent_ppo,
        config={
            "observation": "measurement",
            "history": 1,
            "total_timesteps": 128,
            "hyperparams": {"n_steps": 32, "batch_size": 64, "n_epochs": 1, "n_envs": 2},
        },
    ),
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
    ppo = first.get(LINEAR.label, "ppo-test")
    assert ppo.train_env_steps == 256
    # the RL cell carries its learning curve (points at 0, 128, 256 env steps); others none
    assert [r["env_steps"] for r in ppo.learning_curve] == [0, 128, 256]
    assert not first.get(LINEAR.label, "kalmannet-lqg-test").learning_curve
    # the cells are cached: drop them, keep the trained artefacts, and rebuild from those
    for cell_file in (tmp_path / "cells").glob("*.json"):
        cell_file.unlink()
    again = compare([LINEAR], TINY, output_dir=tmp_path, **kwargs)
    for method in TINY:
        a, b = first.get(LINEAR.label, method.name), again.get(LINEAR.label, method.name)
        assert a.cost == pytest.approx(b.cost, rel=1e-9), method.name
        assert a.train_env_steps == b.train_env_steps
        assert a.learning_curve == b.learning_curve  # restored with the trained artefact


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
    names = ("mpc-nominal", "neural-mpc", "kalmannet-lqg", "learned-noise-lqg", "ppo")
    for name in (*names, "cocp", "unfolded-mpc"):
        assert name in DEFAULT_METHODS
        get_method(name)
    # registered, but too slow to train for the default run (the full preset has it)
    assert get_method("sac").name == "sac" and "sac" not in DEFAULT_METHODS


#: A tiny budget of the tuned policies (keywords of tune_policy_on_env; the simulated
#: episodes' sizes replace those of the method's tune_options, its learning rate stays).
TINY_TUNING = {"episodes": 4, "steps": 20, "tune_steps": 3, "simulator_fit_steps": 100}
TINY_EPISODES = {"horizon": 10, "episodes": 8, "val_episodes": 4, "val_every": 1}


def _untrained(name: str, env):
    """The policy of method ``name`` before tuning."""
    from kalmannet_ctrl.controllers import MPC, ConvexPolicy, Unfolded, design_model

    design, bounds = design_model(env.nominal_model), (env.action_space.low, env.action_space.high)
    if name == "cocp":
        return ConvexPolicy(design, env.cost, input_bounds=bounds)
    return MPC(design, env.cost, 20, input_bounds=bounds, solver=Unfolded(K=5, learn_qp=True))


def _actions(controller, observations):
    state, out = None, []
    for t, y in enumerate(observations):
        action, state = controller.predict(y, state, episode_start=np.full(len(y), t == 0))
        out.append(action)
    return np.stack(out)


@pytest.mark.parametrize(
    ("name", "family"), [("cocp", "learned optimization"), ("unfolded-mpc", "deep unfolding")]
)
def test_tuned_policies_train_on_their_budget_and_reload_the_same_parameters(
    tmp_path: Path, name: str, family: str
) -> None:
    from dataclasses import replace

    from kalmannet_ctrl.bench import BuildContext
    from kalmannet_ctrl.bench.cache import ArtifactCache

    registered = get_method(name)
    assert registered.family == family and registered.applies is regulates_the_origin
    tune_options = {**registered.config["tune_options"], **TINY_EPISODES}
    config = {**registered.config, **TINY_TUNING, "tune_options": tune_options}
    method = replace(registered, config=config)
    env = LINEAR.make().unwrapped
    ys = np.random.default_rng(0).normal(size=(6, 3, env.nominal_model.n_y)).astype(np.float32)

    def build():
        # seed 1: the tiny tuning beats the start, so a reload that kept the start would show
        ctx = BuildContext(LINEAR, env, 1, ArtifactCache(tmp_path), method=method)
        return method.build(ctx), ctx.train_info

    tuned, info = build()
    assert info["env_steps"] == 4 * 20 and not info["loaded"] and info["train_s"] > 0
    first = _actions(tuned, ys)
    assert first.shape == (6, 3, env.nominal_model.n_u) and first.dtype == np.float32
    assert not np.allclose(first, _actions(_untrained(name, env), ys))  # tuning changed it
    again, info_again = build()
    assert info_again["loaded"] and info_again["env_steps"] == 4 * 20
    assert again is not tuned
    np.testing.assert_array_equal(_actions(again, ys), first)


def test_train_seed_changes_the_training_not_the_evaluation_episodes() -> None:
    """A method's ``train_seed`` seeds its training only: equal to the comparison's seed it
    changes nothing; another one trains another policy, evaluated on the same episodes (an
    untrained controller with a train_seed costs exactly what it costs without)."""
    from dataclasses import replace

    from kalmannet_ctrl.errors import ParameterError

    ppo, mpc = TINY[4], TINY[0]
    assert ppo.name == "ppo-test" and mpc.name == "mpc-test"
    cfg = {k: v for k, v in ppo.config.items() if not k.startswith("curve")}
    methods = [
        replace(ppo, name="ppo", config=cfg),
        replace(ppo, name="ppo-seed0", config={**cfg, "train_seed": 0}),
        replace(ppo, name="ppo-seed5", config={**cfg, "train_seed": 5}),
        mpc,
        replace(mpc, name="mpc-seed5", config={**mpc.config, "train_seed": 5}),
    ]
    res = compare([LINEAR], methods, episodes=3, seed=0, executor=LocalExecutor(1), progress=False)
    cost = {m.name: res.get(LINEAR.label, m.name).cost for m in methods}
    assert cost["ppo-seed0"] == cost["ppo"]
    assert cost["ppo-seed5"] != cost["ppo"]
    assert cost["mpc-seed5"] == cost["mpc-test"]
    with pytest.raises(ParameterError, match="train_seed '1'; expected an integer"):
        Method("bad", build_ppo, config={"train_seed": "1"})
