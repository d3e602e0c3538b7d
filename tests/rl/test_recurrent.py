"""RecurrentPPO (sb3-contrib) on the controller base: the LSTM state carried in the controller
state, its reset at ``episode_start``, training through ``train_rl`` and save/load."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")

from kalmannet_ctrl.errors import MissingDependencyError  # noqa: E402
from kalmannet_ctrl.rl import RLController, hyperparams_for, train_rl  # noqa: E402
from kalmannet_ctrl.rl._deps import algorithm_class  # noqa: E402

from .policies import LINEAR, policy_actions, wrapped  # noqa: E402

#: A small LSTM, so that an untrained policy's actions still depend on its past inputs.
_POLICY_KWARGS = {"lstm_hidden_size": 8, "net_arch": {"pi": [8], "vf": [8]}}


@pytest.fixture(scope="module")
def recurrent() -> RLController:
    """An untrained (seeded) RecurrentPPO policy on LinearSystem-v0's raw measurements."""
    env = wrapped(LINEAR, "measurement")
    model = sb3_contrib.RecurrentPPO(
        "MlpLstmPolicy",
        env,
        seed=0,
        device="cpu",
        n_steps=16,
        batch_size=16,
        policy_kwargs=_POLICY_KWARGS,
    )
    return RLController(model, observation="measurement")


def _reference(ctrl: RLController, y: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """sb3-contrib's own predict loop (its documented use), clipped to the action space."""
    state, out = None, []
    for t in range(y.shape[1]):
        action, state = ctrl.model.predict(
            y[:, t], state=state, episode_start=starts[:, t], deterministic=True
        )
        out.append(np.clip(action, ctrl.action_low, ctrl.action_high))
    return np.stack(out, 1)


def _measurements(B: int = 3, T: int = 12) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((B, T, 1)).astype(np.float32)


def test_recurrent_policy_matches_sb3_contrib_predict(recurrent: RLController) -> None:
    assert recurrent.recurrent
    y = _measurements()
    starts = np.zeros(y.shape[:2], dtype=bool)
    starts[:, 0] = True
    starts[1, 5] = True  # one row starts a new episode mid-sequence
    state, out = None, []
    for t in range(y.shape[1]):
        a, state = recurrent.predict(y[:, t], state, starts[:, t])
        out.append(a)
    np.testing.assert_allclose(np.stack(out, 1), _reference(recurrent, y, starts), atol=1e-6)
    h, c = state.policy_state
    assert h.shape == c.shape == (1, y.shape[0], 8)


def test_episode_start_resets_the_lstm_state(recurrent: RLController) -> None:
    y = _measurements()
    fresh = policy_actions(recurrent, y)  # every row from the LSTM's zero state
    # the same measurements after 7 steps of other ones: restarted by episode_start
    before = _measurements(3, 7) + 3.0
    state = None
    for t in range(before.shape[1]):
        _, state = recurrent.predict(before[:, t], state, np.full(3, t == 0))
    restart = np.array([True, False, True])
    a0, state = recurrent.predict(y[:, 0], state, restart)
    np.testing.assert_allclose(a0[restart], fresh[restart, 0], atol=1e-6)
    # the row that carried its memory acts differently from a fresh start (the LSTM state
    # matters, so the reset above is not vacuous)
    assert abs(float(a0[1, 0]) - float(fresh[1, 0, 0])) > 1e-6


def test_feed_forward_policy_has_no_lstm_state() -> None:
    from .policies import controller

    ctrl = controller(LINEAR, "measurement")
    assert not ctrl.recurrent
    _, state = ctrl.predict(np.zeros((2, 1), np.float32), None, np.ones(2, bool))
    assert state.policy_state is None


def test_save_load_round_trip(recurrent: RLController, tmp_path: Path) -> None:
    path = recurrent.save(tmp_path / "lstm")
    loaded = RLController.load(path, gym.make(LINEAR))
    assert isinstance(loaded.model, sb3_contrib.RecurrentPPO) and loaded.recurrent
    y = _measurements()
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(recurrent, y))


def test_train_rl_trains_recurrent_ppo_on_measurements() -> None:
    ctrl, info = train_rl(
        LINEAR,
        "recurrentppo",
        64,
        observation="measurement",
        history=1,
        seed=0,
        progress=False,
        hyperparams={
            "n_envs": 2,
            "n_steps": 32,
            "batch_size": 32,
            "n_epochs": 1,
            "policy_kwargs": _POLICY_KWARGS,
        },
    )
    assert isinstance(ctrl.model, sb3_contrib.RecurrentPPO) and ctrl.recurrent
    assert info["env_steps"] == 64
    u, state = ctrl.predict(np.zeros((4, 1), np.float32), None, np.ones(4, bool))
    assert u.shape == (4, 1) and state.policy_state[0].shape == (1, 4, 8)


def test_hyperparams_table_has_the_lstm_policy() -> None:
    entry = hyperparams_for("kalmannet_ctrl/CartPole-v0", "recurrentppo")
    assert entry["policy"] == "MlpLstmPolicy" and entry["n_envs"] == 8
    assert hyperparams_for("SomethingElse-v0", "recurrentppo")["policy"] == "MlpLstmPolicy"


def test_missing_sb3_contrib_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import fails
    with pytest.raises(MissingDependencyError, match="sb3-contrib"):
        algorithm_class("RecurrentPPO")
    assert algorithm_class("PPO").__name__ == "PPO"
