"""Saving and loading RLController: round trips, learned estimators, the default estimator's
process covariance factor, old sidecars and corrupt files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO, SAC  # noqa: E402

from kalmannet_ctrl.errors import CheckpointError, ParameterError  # noqa: E402
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanNet  # noqa: E402
from kalmannet_ctrl.rl import RLController, default_estimator  # noqa: E402

from .policies import (  # noqa: E402
    CARTPOLE,
    LINEAR,
    PENDULUM,
    controller,
    policy_actions,
    untrained,
)


@pytest.mark.parametrize(
    ("env_id", "mode", "algo", "kwargs", "expected_angles"),
    [
        (PENDULUM, "estimate", SAC, {"include_covariance": True}, (0,)),
        (PENDULUM, "measurement", SAC, {"history": 2}, (0,)),
        (CARTPOLE, "measurement", PPO, {"history": 3, "include_actions": True}, ()),
    ],
)
def test_save_load_round_trip(
    tmp_path: Path,
    env_id: str,
    mode: str,
    algo: type,
    kwargs: Any,
    expected_angles: tuple[int, ...],
) -> None:
    ctrl = controller(env_id, mode, algo, **kwargs)
    ctrl.metadata["note"] = "round trip"
    path = ctrl.save(tmp_path / "policy")
    assert path == tmp_path / "policy.zip" and (tmp_path / "policy.json").is_file()
    loaded = RLController.load(tmp_path / "policy", gym.make(env_id))
    assert loaded.metadata["note"] == "round trip"
    assert loaded.policy_input.config() == ctrl.policy_input.config()
    assert loaded.policy_input.angles == ctrl.policy_input.angles == expected_angles
    assert json.loads((tmp_path / "policy.json").read_text())["angles"] == list(expected_angles)
    y = np.random.default_rng(0).standard_normal((3, 10, ctrl.n_y)).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(ctrl, y))


def test_save_is_atomic_and_load_takes_a_vector_env(tmp_path: Path) -> None:
    """Only the two files remain (no temporary ones), an overwrite replaces them, and the
    nominal model of an estimate policy may come from a native vector env too."""
    ctrl = controller(PENDULUM, "estimate")
    ctrl.save(tmp_path / "p")
    ctrl.metadata["run"] = 2
    ctrl.save(tmp_path / "p.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json", "p.zip"]
    assert (tmp_path / "p.zip").stat().st_mode & 0o777 == 0o644
    loaded = RLController.load(tmp_path / "p", gym.make_vec(PENDULUM, num_envs=2))
    assert loaded.metadata["run"] == 2 and loaded.default_estimator
    y = (np.pi + 0.1 * np.random.default_rng(4).standard_normal((2, 5, 1))).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(ctrl, y))
    with pytest.raises(TypeError, match="needs the nominal model"):
        RLController.load(tmp_path / "p", gym.make("Pendulum-v1"))


def test_save_load_with_a_learned_estimator_and_normalization(tmp_path: Path) -> None:
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    net = KalmanNet(nominal, generator=torch.Generator().manual_seed(0))
    model, _ = untrained(PENDULUM, "estimate", estimator=net)
    norm = {"mean": [0.0, 0.0, 0.0], "var": [1.0, 1.0, 4.0], "epsilon": 1e-8, "clip_obs": 5.0}
    ctrl = RLController(
        model, observation="estimate", estimator=net, angles=(0,), obs_normalization=norm
    )
    ctrl.save(tmp_path / "p.zip")
    assert json.loads((tmp_path / "p.json").read_text())["estimator"] == "KalmanNet"
    with pytest.raises(TypeError, match="trained with a KalmanNet; pass it"):
        RLController.load(tmp_path / "p.zip", nominal)
    loaded = RLController.load(tmp_path / "p.zip", estimator=net)
    y = (np.pi + 0.1 * np.random.default_rng(1).standard_normal((2, 8, 1))).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(ctrl, y))


def test_default_estimator_with_a_process_cov_scale_round_trips(tmp_path: Path) -> None:
    """The default estimator's process covariance factor is applied, saved and rebuilt."""
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    est = default_estimator(nominal, process_cov_scale=100.0)
    assert isinstance(est, ExtendedKalmanFilter)
    torch.testing.assert_close(est.model.process_cov, 100.0 * nominal.process_cov)
    assert default_estimator(nominal).model is nominal  # factor 1: the model itself
    model, _ = untrained(PENDULUM, "estimate")
    ctrl = RLController(
        model, observation="estimate", angles=(0,), nominal_model=nominal, process_cov_scale=100.0
    )
    torch.testing.assert_close(ctrl.estimator.model.process_cov, 100.0 * nominal.process_cov)
    ctrl.save(tmp_path / "p")
    assert json.loads((tmp_path / "p.json").read_text())["estimator_process_cov_scale"] == 100.0
    loaded = RLController.load(tmp_path / "p", nominal)
    assert loaded.process_cov_scale == 100.0
    torch.testing.assert_close(loaded.estimator.model.process_cov, 100.0 * nominal.process_cov)
    y = (np.pi + 0.1 * np.random.default_rng(3).standard_normal((2, 8, 1))).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(ctrl, y))
    # the factor changes the estimates the policy sees, hence (generally) the actions
    plain = RLController(model, observation="estimate", angles=(0,), nominal_model=nominal)
    assert not np.array_equal(policy_actions(plain, y), policy_actions(ctrl, y))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="process_cov_scale"):
            default_estimator(nominal, process_cov_scale=bad)
    sidecar = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps({**sidecar, "estimator_process_cov_scale": -2}))
    with pytest.raises(CheckpointError, match="estimator_process_cov_scale"):
        RLController.load(tmp_path / "p", nominal)


def test_sidecar_without_angles_loads_with_none(tmp_path: Path) -> None:
    """Sidecars written before the angle features: no angles (the policy saw raw values)."""
    raw = controller(PENDULUM, "measurement", history=2, angles=())
    raw.save(tmp_path / "old")
    sidecar = json.loads((tmp_path / "old.json").read_text())
    del sidecar["angles"]
    (tmp_path / "old.json").write_text(json.dumps(sidecar))
    loaded = RLController.load(tmp_path / "old")
    assert loaded.policy_input.angles == () and loaded.policy_input.size == 2
    y = np.random.default_rng(2).standard_normal((2, 6, 1)).astype(np.float32)
    np.testing.assert_array_equal(policy_actions(loaded, y), policy_actions(raw, y))
    # a policy trained on (cos, sin) does not fit a sidecar that says "no angles"
    cos_sin = controller(PENDULUM, "measurement", history=2)
    cos_sin.save(tmp_path / "new")
    (tmp_path / "new.json").write_text(json.dumps(sidecar))
    with pytest.raises(
        CheckpointError, match=r"expected n_y = 1, n_u = 1 \(sidecar\), found n_y = 2"
    ):
        RLController.load(tmp_path / "new")
    (tmp_path / "new.json").write_text(json.dumps({**sidecar, "angles": ["theta"]}))
    with pytest.raises(CheckpointError, match="invalid 'angles' entry"):
        RLController.load(tmp_path / "new")


def test_corrupt_or_missing_files_raise_checkpoint_error(tmp_path: Path) -> None:
    ctrl = controller(LINEAR, "measurement", history=2)
    ctrl.save(tmp_path / "good")
    zip_bytes = (tmp_path / "good.zip").read_bytes()
    sidecar = json.loads((tmp_path / "good.json").read_text())

    with pytest.raises(CheckpointError, match="no sidecar"):
        RLController.load(tmp_path / "absent")
    (tmp_path / "nozip.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="no policy file"):
        RLController.load(tmp_path / "nozip")

    (tmp_path / "trunc.zip").write_bytes(zip_bytes[: len(zip_bytes) // 2])
    (tmp_path / "trunc.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a readable Stable-Baselines3 SAC"):
        RLController.load(tmp_path / "trunc")

    (tmp_path / "junk.zip").write_bytes(b"not a zip file at all")
    (tmp_path / "junk.json").write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match="not a readable Stable-Baselines3"):
        RLController.load(tmp_path / "junk")

    (tmp_path / "badjson.zip").write_bytes(zip_bytes)
    (tmp_path / "badjson.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        RLController.load(tmp_path / "badjson")

    for name, change in [
        ("foreign", {"format": "something/else"}),
        ("algo", {"algo": "DQN9"}),
        ("mode", {"observation": "pixels"}),
        ("hist", {"history": "two"}),
    ]:
        (tmp_path / f"{name}.zip").write_bytes(zip_bytes)
        (tmp_path / f"{name}.json").write_text(json.dumps({**sidecar, **change}))
        with pytest.raises(CheckpointError):
            RLController.load(tmp_path / name)

    (tmp_path / "misfit.zip").write_bytes(zip_bytes)
    (tmp_path / "misfit.json").write_text(json.dumps({**sidecar, "history": 3}))
    with pytest.raises(CheckpointError, match="does not fit its sidecar"):
        RLController.load(tmp_path / "misfit")
