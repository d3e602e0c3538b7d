"""The hyperparameter table: read from the data files, valid Stable-Baselines3 arguments."""

from __future__ import annotations

import inspect
import re
from importlib.resources import files

import pytest
import yaml

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO, SAC  # noqa: E402

from kalmannet_ctrl.errors import ParameterError  # noqa: E402
from kalmannet_ctrl.rl import ALGOS, HYPERPARAMS, hyperparams_for  # noqa: E402
from kalmannet_ctrl.rl.hyperparams import (  # noqa: E402
    META_KEYS,
    SCHEDULE_KEYS,
    constructor_arguments,
)

FOLDER = files("kalmannet_ctrl.rl").joinpath("hyperparams")


def test_hyperparams_table_holds_valid_sb3_arguments() -> None:
    meta = {
        "n_envs",
        "n_timesteps",
        "normalize",
        "policy",
        "estimator_process_cov_scale",
        "eval_every",
        "eval_episodes",
        "vec_env",
        "rescale_actions",
        "discount_failure",
    }
    assert set(META_KEYS) == meta
    from sb3_contrib import RecurrentPPO

    for (env_name, algo), params in HYPERPARAMS.items():
        cls = {"ppo": PPO, "sac": SAC, "recurrentppo": RecurrentPPO}[algo]
        accepted = set(inspect.signature(cls.__init__).parameters)
        unknown = set(params) - accepted - meta
        assert not unknown, (env_name, algo, unknown)
        assert params.get("n_timesteps", 1) >= 1 and params.get("n_envs", 1) >= 1


def test_the_table_is_the_data_files() -> None:
    """One file per algorithm, one entry per env: the table holds exactly their entries."""
    read = {}
    for algo in ALGOS:
        entries = yaml.safe_load(FOLDER.joinpath(f"{algo}.yml").read_text(encoding="utf-8"))
        read.update({(name, algo): entry for name, entry in entries.items()})
    assert read == HYPERPARAMS
    assert {algo for _, algo in HYPERPARAMS} == set(ALGOS)
    assert all(("*", algo) in HYPERPARAMS for algo in ALGOS)  # every algorithm has a fallback


@pytest.mark.parametrize("algo", ALGOS)
def test_every_entry_names_its_source(algo: str) -> None:
    """As in rl-baselines3-zoo, each entry is traceable: a comment block right above it."""
    lines = FOLDER.joinpath(f"{algo}.yml").read_text(encoding="utf-8").splitlines()
    tops = [i for i, line in enumerate(lines) if re.match(r'^("\*"|\w+):\s*$', line)]
    assert len(tops) == len({name for name, a in HYPERPARAMS if a == algo})
    for i in tops:
        assert lines[i - 1].startswith("# "), lines[i]
        block = []
        for line in reversed(lines[:i]):
            if not line.startswith("#"):
                break
            block.append(line)
        text = " ".join(block)
        assert re.search(r"rl-zoo|rl-baselines3-zoo|Stable-Baselines3's defaults", text), lines[i]


def test_numbers_are_numbers() -> None:
    """YAML 1.1 reads 1e-3 as a string: every rate, factor and budget must be a number."""
    for key, params in HYPERPARAMS.items():
        for name, value in params.items():
            if name in ("ent_coef",) and value == "auto":
                continue
            if name in ("policy_kwargs", "policy", "vec_env"):
                continue
            if name in SCHEDULE_KEYS and isinstance(value, str):
                assert re.fullmatch(r"lin_\d[\d.e-]*", value), (key, name, value)
                continue
            assert isinstance(value, (int, float)), (key, name, value)
    assert HYPERPARAMS[("Pendulum", "sac")]["learning_rate"] == 1e-3
    assert HYPERPARAMS[("CartPole", "ppo")]["ent_coef"] == 1.37976e-7
    assert HYPERPARAMS[("CartPole", "sac")]["policy_kwargs"] == {
        "log_std_init": -3,
        "net_arch": [400, 300],
    }


def test_hyperparams_for_merges_fallback_entry_and_overrides() -> None:
    hp = hyperparams_for("kalmannet_ctrl/Pendulum-v0", "SAC", {"gamma": 0.9})
    assert hp["n_envs"] == 1 and hp["learning_rate"] == 1e-3 and hp["gamma"] == 0.9
    hp["policy_kwargs"]["net_arch"].append(8)  # a deep copy: the table is untouched
    assert HYPERPARAMS[("Pendulum", "sac")]["policy_kwargs"] == {"net_arch": [64, 64]}
    assert hyperparams_for("Pendulum-v1", "ppo") == {"n_envs": 4, "n_timesteps": 200_000}
    expected = r"algo: expected one of \['ppo', 'sac', 'recurrentppo'\]"
    with pytest.raises(ParameterError, match=expected):
        hyperparams_for("Pendulum-v1", "td3")
    with pytest.raises(TypeError, match="hyperparams: expected a mapping"):
        hyperparams_for("Pendulum-v1", "ppo", [("gamma", 0.9)])  # type: ignore[arg-type]


def test_constructor_arguments_read_zoos_schedules_and_activations() -> None:
    import torch

    args = constructor_arguments(
        {
            "learning_rate": "lin_1e-3",
            "clip_range": "lin_0.2",
            "gamma": 0.98,
            "policy_kwargs": {"activation_fn": "ReLU", "net_arch": [8]},
        }
    )
    # rl-zoo's lin_<v>: v at the start of training (progress_remaining 1), falling to 0
    for remaining in (1.0, 0.5, 0.1, 0.0):
        assert args["learning_rate"](remaining) == pytest.approx(1e-3 * remaining)
        assert args["clip_range"](remaining) == pytest.approx(0.2 * remaining)
    assert args["gamma"] == 0.98
    assert args["policy_kwargs"] == {"activation_fn": torch.nn.ReLU, "net_arch": [8]}
    table = {"learning_rate": 3e-4, "policy_kwargs": {"activation_fn": "Tanh"}}
    constructor_arguments(table)
    assert table["policy_kwargs"]["activation_fn"] == "Tanh"  # the table is not modified
    for bad in ("lin_", "lin_-1", "exp_1e-3", "lin_1e-3x"):
        with pytest.raises(ParameterError, match="learning_rate: expected a number or"):
            constructor_arguments({"learning_rate": bad})
    for bad in ("relu", "Linear2", "Module"):
        with pytest.raises(ParameterError, match="activation_fn"):
            constructor_arguments({"policy_kwargs": {"activation_fn": bad}})
