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
from kalmannet_ctrl.rl.hyperparams import META_KEYS  # noqa: E402

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
            if name in ("policy_kwargs", "policy"):
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
