"""``discount_failure``: the training copies charge the env's failure cost discounted at the
algorithm's gamma, while everything that judges the policy sees the env as made."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.rl import train_rl

from .policies import LINEAR

CARTPOLE_V1 = "kalmannet_ctrl/CartPole-v1"
TINY = {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "normalize": True}


class _TrainingDiscounts(BaseCallback):
    """Records the failure_discount of every training copy at the start of training."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def _on_training_start(self) -> None:
        venv: Any = self.training_env
        if isinstance(venv, VecNormalize):
            venv = venv.venv
        inner = getattr(venv, "venv", venv)  # VecMonitor around a NativeVecEnv
        native = getattr(inner, "venv", None)  # the NativeVecEnv's PartiallyKnownVectorEnv
        if native is not None and hasattr(native, "env"):
            self.seen = [native.env.failure_discount]
        else:
            self.seen = list(venv.get_attr("failure_discount"))

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("vec_env", ["dummy", "native"])
def test_training_copies_discount_at_gamma_and_the_judge_does_not(vec_env: str) -> None:
    probe = _TrainingDiscounts()
    ctrl, info = train_rl(
        CARTPOLE_V1,
        "ppo",
        64,
        observation="estimate",
        hyperparams={**TINY, "gamma": 0.9, "discount_failure": True},
        n_envs=2,
        vec_env=vec_env,
        callback=probe,
        curve_every=64,
        curve_episodes=2,
        eval_every=64,
        eval_episodes=2,
        progress=False,
    )
    assert probe.seen and all(g == pytest.approx(0.9) for g in probe.seen)
    # an untrained policy drops the pole within ~50 steps: judged on the env as made, the rest
    # of the 500 steps costs ~8.26 each (~3,700 in all, > 7 per step); discounted at 0.9 it
    # would be at most 82.6 (< 1 per step)
    assert info["learning_curve"][0]["cost"] > 5.0
    assert info["best_eval"]["mean_return"] < -1000.0
    assert ctrl.metadata["training_env_kwargs"] == {"failure_discount": 0.9}
    assert ctrl.metadata["env_kwargs"] == {}
    assert info["hyperparams"]["discount_failure"] is True


def test_without_gamma_the_algorithms_default_discount_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kalmannet_ctrl.rl.hyperparams import HYPERPARAMS

    entry = {k: v for k, v in HYPERPARAMS[("CartPole", "ppo")].items() if k != "gamma"}
    monkeypatch.setitem(HYPERPARAMS, ("CartPole", "ppo"), entry)
    probe = _TrainingDiscounts()
    train_rl(
        CARTPOLE_V1,
        "ppo",
        32,
        observation="estimate",
        hyperparams={**TINY, "discount_failure": True},
        n_envs=1,
        callback=probe,
        progress=False,
    )
    assert probe.seen == [pytest.approx(0.99)]  # Stable-Baselines3 PPO's default gamma
    probe = _TrainingDiscounts()
    train_rl(
        CARTPOLE_V1,
        "ppo",
        32,
        observation="estimate",
        hyperparams={**TINY, "discount_failure": False},
        callback=probe,
        n_envs=1,
        progress=False,
    )
    assert probe.seen == [1.0]  # switched off (the registered entry has it on): the env's charge


def test_discount_failure_bad_input() -> None:
    with pytest.raises(ParameterError, match="discount_failure: expected a bool"):
        train_rl(CARTPOLE_V1, "ppo", 32, hyperparams={"discount_failure": "yes"}, progress=False)
    with pytest.raises(ParameterError, match=r"discount_failure: .*LinearSystem"):
        train_rl(LINEAR, "ppo", 32, hyperparams={**TINY, "discount_failure": True}, progress=False)
