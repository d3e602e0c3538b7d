"""Learning curves of train_rl: points of the policy of the moment, judged as the comparison
judges a controller; CSV and PNG, resume, and bad input."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from kalmannet_ctrl.errors import ParameterError
from kalmannet_ctrl.rl import CURVE_COLUMNS, read_learning_curve, train_rl
from kalmannet_ctrl.training.rollout import run_episodes

CARTPOLE_V1 = "kalmannet_ctrl/CartPole-v1"
HP = {"n_steps": 64, "batch_size": 64, "n_epochs": 2, "normalize": True}
EPISODES = 4  # per point: the test compares exact values, not statistics
STEPS = 500  # CartPole's time limit


def _train(tmp_path: Path, total: int, **kw):
    return train_rl(
        CARTPOLE_V1,
        "ppo",
        total,
        observation="estimate",
        hyperparams=HP,
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
        curve_every=128,
        curve_episodes=EPISODES,
        seed=2,
        **kw,
    )


def _judged(ctrl) -> tuple[float, float]:
    """Mean cost per step and success rate of ``ctrl`` on the curve's seeded episodes,
    computed here from the rewards and the env's own rule."""
    envs = gym.make_vec(CARTPOLE_V1, num_envs=EPISODES)
    try:
        roll = run_episodes(envs, ctrl, STEPS, seed=2 + 20_000)
    finally:
        envs.close()
    cost = -(roll.reward * roll.running).sum(1) / STEPS  # failures charged, per asked step
    failed = (roll.terminated & roll.running).any(1)
    judge = gym.make(CARTPOLE_V1).unwrapped
    success = judge.succeeded(roll.x, roll.running.sum(1), failed)
    return float(cost.mean()), float(np.mean(success))


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    """Equal rows (to the CSV's round trip of floats)."""
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-12) for k in x)
        for x, y in zip(a, b, strict=True)
    )


def test_learning_curve_points_csv_png_and_resume(tmp_path: Path) -> None:
    ctrl, info = _train(tmp_path, 256, checkpoint_every=128)
    rows = info["learning_curve"]
    assert [r["env_steps"] for r in rows] == [0, 128, 256]
    assert all(set(r) == set(CURVE_COLUMNS) for r in rows)
    # the last point is the policy returned, after its last update
    cost, success = _judged(ctrl)
    assert rows[-1]["cost"] == pytest.approx(cost, rel=1e-12)
    assert rows[-1]["success"] == success
    assert rows[0]["cost"] != rows[-1]["cost"]  # the updates changed the policy
    train_s = [r["train_s"] for r in rows]
    assert train_s == sorted(train_s) and train_s[-1] <= info["train_s"] + 1e-6
    assert all(0 < r["episode_length"] <= STEPS for r in rows)
    # written beside the run: the same rows, and the figure
    assert _same_rows(read_learning_curve(tmp_path / "learning_curve.csv"), rows)
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000

    # a resumed run keeps the points up to its checkpoint and goes on from there
    resumed, info2 = _train(tmp_path, 384, checkpoint_every=128, resume=True)
    rows2 = info2["learning_curve"]
    assert [r["env_steps"] for r in rows2] == [0, 128, 256, 384]
    assert _same_rows(rows2[:3], rows)
    assert rows2[-1]["cost"] == pytest.approx(_judged(resumed)[0], rel=1e-12)
    assert rows2[-1]["train_s"] > rows[-1]["train_s"]


def test_learning_curve_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="curve_every: expected an integer >= 1, found 0"):
        train_rl(CARTPOLE_V1, "ppo", 64, curve_every=0)
    with pytest.raises(ParameterError, match="curve_episodes: expected an integer >= 1"):
        train_rl(CARTPOLE_V1, "ppo", 64, curve_every=32, curve_episodes=0)
    bad = tmp_path / "curve.csv"
    bad.write_text("env_steps,cost\n1,2\n")
    with pytest.raises(ValueError, match=r"curve\.csv lacks the learning-curve columns"):
        read_learning_curve(bad)
    bad.write_text(",".join(CURVE_COLUMNS) + "\n" + ",".join(["x"] * len(CURVE_COLUMNS)) + "\n")
    with pytest.raises(ValueError, match=r"curve\.csv holds a value that is not a number"):
        read_learning_curve(bad)
