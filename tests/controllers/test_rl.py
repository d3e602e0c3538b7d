"""RLController and train_rl: protocol, parity with the training wrappers, batching, resets,
save/load, Stable-Baselines3 evaluation, seeded training, resume and errors."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO, SAC  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

from kalmannet_ctrl.controllers import Controller, RLController, RLState  # noqa: E402
from kalmannet_ctrl.controllers.rl import (  # noqa: E402
    PolicyObservation,
    angle_features,
    default_estimator,
    require_sb3,
)
from kalmannet_ctrl.envs import EstimateObservation, MeasurementHistory  # noqa: E402
from kalmannet_ctrl.errors import (  # noqa: E402
    BatchSizeError,
    CheckpointError,
    DimensionError,
    MissingDependencyError,
    NonFiniteError,
    ParameterError,
)
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanNet  # noqa: E402
from kalmannet_ctrl.training import HYPERPARAMS, load_rl, train_rl  # noqa: E402

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
PENDULUM = "kalmannet_ctrl/Pendulum-v0"
CARTPOLE = "kalmannet_ctrl/CartPole-v0"


def wrapped(env_id: str, mode: str, **kwargs: Any) -> gym.Env:
    env = gym.make(env_id)
    if mode == "estimate":
        return EstimateObservation(
            env,
            kwargs.get("estimator"),
            **_pick(kwargs, "include_covariance"),
            **_pick(kwargs, "angles"),
        )
    return MeasurementHistory(
        env, kwargs.get("history", 1), **_pick(kwargs, "include_actions"), **_pick(kwargs, "angles")
    )


def _pick(kwargs: dict[str, Any], key: str) -> dict[str, Any]:
    return {key: kwargs[key]} if key in kwargs else {}


def untrained(env_id: str, mode: str, algo: type = SAC, **kwargs: Any) -> tuple[Any, gym.Env]:
    """An SB3 model (random weights, seeded) built on the wrapped env, and that env."""
    env = wrapped(env_id, mode, **kwargs)
    extra = {"n_steps": 64, "batch_size": 64} if algo is PPO else {"buffer_size": 1000}
    return algo("MlpPolicy", env, seed=0, device="cpu", **extra), env


def controller(env_id: str, mode: str, algo: type = SAC, **kwargs: Any) -> RLController:
    model, env = untrained(env_id, mode, algo, **kwargs)
    ctrl_kwargs = {k: v for k, v in kwargs.items() if k != "estimator"}
    ctrl_kwargs.setdefault("angles", env.policy_input.angles)  # as the wrapper saw them
    if mode == "estimate":
        if kwargs.get("estimator") is not None:
            ctrl_kwargs["estimator"] = kwargs["estimator"]
        else:
            ctrl_kwargs["nominal_model"] = env.unwrapped.nominal_model
    return RLController(model, observation=mode, **ctrl_kwargs)


CASES = [
    pytest.param(LINEAR, "estimate", {}, id="linear-estimate"),
    pytest.param(PENDULUM, "estimate", {"include_covariance": True}, id="pendulum-estimate+cov"),
    pytest.param(CARTPOLE, "measurement", {"history": 3, "include_actions": True}, id="cart-hist"),
    pytest.param(LINEAR, "measurement", {}, id="linear-raw"),
    pytest.param(PENDULUM, "measurement", {"history": 3, "include_actions": True}, id="pend-hist"),
]


# -- protocol and parity with the wrappers ---------------------------------------------------------
@pytest.mark.parametrize(("env_id", "mode", "kwargs"), CASES)
def test_controller_on_raw_measurements_replays_the_wrapped_policy(
    env_id: str, mode: str, kwargs: dict[str, Any]
) -> None:
    """What the policy did on the wrapped env (training's view), the controller does on the raw
    measurements (evaluation's view): same observations, same actions."""
    model, env = untrained(env_id, mode, **kwargs)
    ctrl = controller(env_id, mode, **kwargs)
    assert isinstance(ctrl, Controller)
    obs, info = env.reset(seed=4)
    state, start = None, True
    for _ in range(40):
        expected, _ = model.predict(obs, deterministic=True)
        features, _ = ctrl.policy_observation(info["measurement"], state, start)
        np.testing.assert_array_equal(features[0], obs)
        action, state = ctrl.predict(info["measurement"], state, start)
        assert action.shape == env.action_space.shape and action.dtype == np.float32
        np.testing.assert_allclose(action, expected, rtol=1e-6, atol=1e-6)
        obs, _, terminated, truncated, info = env.step(action)
        start = False
        if terminated or truncated:
            break


def test_actions_stay_in_bounds_and_feed_back_clipped() -> None:
    ctrl = controller(PENDULUM, "estimate")
    y = np.full((5, 1), np.pi, dtype=np.float32)
    action, state = ctrl.predict(y, None, np.ones(5, dtype=bool), deterministic=False)
    assert np.all(np.abs(action) <= 2.0)
    np.testing.assert_array_equal(state.u_prev.numpy(), action.astype(np.float64))


def test_batched_predict_equals_per_row_predict() -> None:
    ctrl = controller(PENDULUM, "estimate", include_covariance=True)
    rng = np.random.default_rng(0)
    B, T = 3, 12
    y = (np.pi + 0.1 * rng.standard_normal((B, T, 1))).astype(np.float32)
    starts = np.zeros((B, T), dtype=bool)
    starts[:, 0] = True
    starts[1, 5] = starts[2, 8] = True  # rows restart at different times
    batch_actions, state = [], None
    for t in range(T):
        a, state = ctrl.predict(y[:, t], state, starts[:, t])
        batch_actions.append(a)
    for b in range(B):
        row_state = None
        for t in range(T):
            a, row_state = ctrl.predict(y[b, t], row_state, starts[b, t])
            np.testing.assert_allclose(a, batch_actions[t][b], rtol=1e-5, atol=1e-6)


def test_episode_start_resets_only_the_flagged_rows() -> None:
    ctrl = controller(CARTPOLE, "measurement", history=4, include_actions=True)
    rng = np.random.default_rng(1)
    y = rng.standard_normal((6, 2, 2)).astype(np.float32) * 0.05
    state = None
    for t in range(6):
        _, state = ctrl.predict(y[t], state, np.full(2, t == 0))
    fresh, _ = ctrl.predict(y[0, :1], None)
    a, state = ctrl.predict(y[0], state, np.array([True, False]))
    np.testing.assert_allclose(a[0], fresh[0], rtol=1e-6, atol=1e-6)
    assert state.history is not None and torch.all(state.history[0, :3] == 0)
    assert torch.any(state.history[1, :3] != 0)


def test_batch_size_change_needs_a_full_reset() -> None:
    ctrl = controller(LINEAR, "estimate")
    y = np.zeros((4, 1), dtype=np.float32)
    _, state = ctrl.predict(y, None)
    with pytest.raises(BatchSizeError, match="expected batch size 4 \\(from state\\), found 2"):
        ctrl.predict(y[:2], state)
    _, state = ctrl.predict(y[:2], state, np.ones(2, dtype=bool))
    assert state.u_prev.shape == (2, 1)


def test_deterministic_flag() -> None:
    ctrl = controller(LINEAR, "measurement", history=2)
    y = np.full((8, 1), 0.3, dtype=np.float32)
    a1, _ = ctrl.predict(y, None, deterministic=True)
    a2, _ = ctrl.predict(y, None, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    torch.manual_seed(0)
    s1, _ = ctrl.predict(y, None, deterministic=False)
    assert not np.allclose(s1, a1)  # a stochastic policy samples around the mean


def test_estimate_exposed_only_in_estimate_mode() -> None:
    est_ctrl = controller(PENDULUM, "estimate")
    _, state = est_ctrl.predict(np.array([[3.1], [3.2]], dtype=np.float32), None)
    assert isinstance(state, RLState)
    xhat = est_ctrl.estimate(state)
    assert xhat.shape == (2, 2)
    np.testing.assert_allclose(xhat[:, 0].numpy(), [3.1, 3.2], atol=0.05)
    meas_ctrl = controller(PENDULUM, "measurement", history=2)
    assert not hasattr(meas_ctrl, "estimate")  # the bench runner then skips the MSE
    assert getattr(meas_ctrl, "estimate", None) is None


def test_missing_measurements_estimate_mode_only() -> None:
    est_ctrl = controller(LINEAR, "estimate")
    y = np.array([[0.1], [np.nan]], dtype=np.float32)
    a, state = est_ctrl.predict(y, None)
    assert np.all(np.isfinite(a)) and torch.isfinite(est_ctrl.estimate(state)).all()
    with pytest.raises(NonFiniteError, match="observation: expected finite values"):
        controller(LINEAR, "measurement").predict(y, None)


def test_observation_normalization_is_applied() -> None:
    model, _ = untrained(LINEAR, "estimate")
    nominal = gym.make(LINEAR).unwrapped.nominal_model
    norm = {"mean": [1.0, -1.0], "var": [4.0, 0.25], "epsilon": 1e-8, "clip_obs": 10.0}
    plain = RLController(model, observation="estimate", nominal_model=nominal)
    normed = RLController(
        model, observation="estimate", nominal_model=nominal, obs_normalization=norm
    )
    y = np.array([[0.5]], dtype=np.float32)
    raw, _ = plain.policy_observation(y)
    feats, _ = normed.policy_observation(y)
    expected = (raw - np.array([1.0, -1.0])) / np.sqrt(np.array([4.0, 0.25]) + 1e-8)
    np.testing.assert_allclose(feats, expected, rtol=1e-6)
    action, _ = normed.predict(y)
    np.testing.assert_allclose(action, model.predict(feats, deterministic=True)[0], atol=1e-6)


# -- angles as (cos, sin) -------------------------------------------------------------------------
def test_angle_features_replace_the_named_components_in_place() -> None:
    v = torch.tensor([[0.3, -1.0, 2.5], [4.0, 0.5, -7.0]], dtype=torch.float64)
    out = angle_features(v, (0, 2))
    a = v.numpy()
    expected = np.stack(
        [np.cos(a[:, 0]), np.sin(a[:, 0]), a[:, 1], np.cos(a[:, 2]), np.sin(a[:, 2])], -1
    )
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-15)
    assert angle_features(v, ()) is v


def test_measurement_rows_show_the_angle_as_cos_sin_and_pad_with_zeros() -> None:
    p = PolicyObservation("measurement", n_y=2, n_u=1, history=2, include_actions=True, angles=[1])
    assert p.angles == (1,) and p.row_size == 4 and p.size == 8
    assert p.config()["angles"] == [1]
    y0 = torch.tensor([[0.1, 3.0]], dtype=torch.float64)
    obs, state = p.step(p.init(1), y0)
    # the row before the episode is zero (not cos 0 = 1): "no measurement yet", not "upright"
    np.testing.assert_allclose(obs[0], [0, 0, 0, 0, 0.1, np.cos(3.0), np.sin(3.0), 0], atol=1e-7)
    y1 = torch.tensor([[-0.2, -1.0]], dtype=torch.float64)
    obs, _ = p.step(state._replace(u_prev=torch.tensor([[0.7]], dtype=torch.float64)), y1)
    expected = [0.1, np.cos(3.0), np.sin(3.0), 0, -0.2, np.cos(-1.0), np.sin(-1.0), 0.7]
    np.testing.assert_allclose(obs[0], expected, atol=1e-7)


def test_estimate_shows_the_angle_states_as_cos_sin() -> None:
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    p = PolicyObservation(
        "estimate",
        n_y=1,
        n_u=1,
        estimator=default_estimator(nominal),
        include_covariance=True,
        angles=(0,),
    )
    assert p.size == 2 + 1 + 2
    y = torch.tensor([[3.0], [-0.4]], dtype=torch.float64)
    obs, state = p.step(p.init(2), y)
    xhat, cov = state.estimator_state.mean, state.estimator_state.cov
    diag = torch.diagonal(cov, dim1=-2, dim2=-1).expand(2, -1)
    expected = torch.stack(
        [torch.cos(xhat[:, 0]), torch.sin(xhat[:, 0]), xhat[:, 1], diag[:, 0], diag[:, 1]], -1
    )
    np.testing.assert_allclose(obs, expected.numpy(), rtol=1e-6, atol=1e-7)


def test_controller_sees_theta_and_theta_plus_two_pi_alike() -> None:
    """Upright is θ = 0, ±2π, …: with the angle features the policy cannot tell the turns
    apart (fails if the angles were ignored: the raw readings differ by 2π)."""
    ctrl = controller(PENDULUM, "measurement", history=3, include_actions=True)
    assert ctrl.policy_input.angles == (0,)  # the pendulum's declaration, via the wrapper
    rng = np.random.default_rng(5)
    y = (0.3 * rng.standard_normal((2, 12, 1))).astype(np.float64)
    turned = y + 2 * np.pi * np.array([1.0, -3.0])[:, None, None]
    feats = [ctrl.policy_observation(v[:, 0])[0] for v in (y, turned)]
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-5)
    np.testing.assert_allclose(_actions(ctrl, turned), _actions(ctrl, y), atol=1e-5)
    raw = controller(PENDULUM, "measurement", history=3, include_actions=True, angles=())
    assert raw.policy_input.size == 6
    assert not np.allclose(_actions(raw, turned), _actions(raw, y), atol=1e-3)


def test_angle_errors() -> None:
    with pytest.raises(ParameterError, match=r"angles: expected indices in \[0, 2\).*found 2"):
        PolicyObservation("measurement", n_y=2, n_u=1, angles=(2,))
    with pytest.raises(ParameterError, match=r"angles: expected distinct indices, found \[0, 0\]"):
        PolicyObservation("measurement", n_y=2, n_u=1, angles=(0, 0))
    with pytest.raises(TypeError, match=r"angles: expected integer indices, found 0\.5"):
        PolicyObservation("measurement", n_y=2, n_u=1, angles=(0.5,))
    with pytest.raises(TypeError, match="angles: expected a sequence of component indices"):
        PolicyObservation("measurement", n_y=2, n_u=1, angles=1)
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    with pytest.raises(ParameterError, match=r"angles: expected indices in \[0, 2\)"):
        PolicyObservation(
            "estimate", n_y=1, n_u=1, estimator=default_estimator(nominal), angles=(-1,)
        )
    model, _ = untrained(PENDULUM, "estimate")  # trained on (cos θ, sin θ, θ̇)
    with pytest.raises(DimensionError, match=r"observation space of shape \(2,\)"):
        RLController(model, observation="estimate", nominal_model=nominal)


# -- Stable-Baselines3's evaluation on the unwrapped envs ------------------------------------------
@pytest.mark.parametrize(
    ("env_id", "mode", "kwargs"),
    [
        (LINEAR, "measurement", {"history": 4}),
        (LINEAR, "estimate", {}),
        (PENDULUM, "estimate", {}),
        (PENDULUM, "measurement", {"history": 2, "include_actions": True}),
    ],
)
def test_evaluate_policy_on_the_unwrapped_env(env_id: str, mode: str, kwargs: Any) -> None:
    ctrl = controller(env_id, mode, PPO, **kwargs)
    env = Monitor(gym.make(env_id))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. no "not wrapped with a Monitor" warning
        mean, std = evaluate_policy(ctrl, env, n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std) and mean < 0


# -- save / load -----------------------------------------------------------------------------------
def _actions(ctrl: RLController, y: np.ndarray) -> np.ndarray:
    state, out = None, []
    for t in range(y.shape[1]):
        a, state = ctrl.predict(y[:, t], state, np.full(y.shape[0], t == 0))
        out.append(a)
    return np.stack(out, 1)


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
    np.testing.assert_array_equal(_actions(loaded, y), _actions(ctrl, y))


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
    np.testing.assert_array_equal(_actions(loaded, y), _actions(ctrl, y))


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
    np.testing.assert_array_equal(_actions(loaded, y), _actions(ctrl, y))
    # the factor changes the estimates the policy sees, hence (generally) the actions
    plain = RLController(model, observation="estimate", angles=(0,), nominal_model=nominal)
    assert not np.array_equal(_actions(plain, y), _actions(ctrl, y))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ParameterError, match="process_cov_scale"):
            default_estimator(nominal, process_cov_scale=bad)
    sidecar = json.loads((tmp_path / "p.json").read_text())
    (tmp_path / "p.json").write_text(json.dumps({**sidecar, "estimator_process_cov_scale": -2}))
    with pytest.raises(CheckpointError, match="estimator_process_cov_scale"):
        RLController.load(tmp_path / "p", nominal)


def test_train_rl_applies_the_tables_estimator_process_cov_scale() -> None:
    ctrl, info = train_rl(
        PENDULUM,
        "sac",
        70,
        observation="estimate",
        hyperparams={**TINY["sac"], "estimator_process_cov_scale": 30.0},
        progress=False,
    )
    nominal = gym.make(PENDULUM).unwrapped.nominal_model
    assert ctrl.default_estimator and ctrl.process_cov_scale == 30.0
    torch.testing.assert_close(ctrl.estimator.model.process_cov, 30.0 * nominal.process_cov)
    assert info["hyperparams"]["estimator_process_cov_scale"] == 30.0


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
    np.testing.assert_array_equal(_actions(loaded, y), _actions(raw, y))
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


# -- train_rl --------------------------------------------------------------------------------------
TINY = {
    "ppo": {"n_steps": 64, "batch_size": 64, "n_epochs": 2},
    "sac": {"learning_starts": 64, "buffer_size": 1000, "policy_kwargs": {"net_arch": [32, 32]}},
}


def _weights(ctrl: RLController) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in ctrl.model.policy.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("algo", "mode"), [("ppo", "measurement"), ("sac", "estimate")])
def test_train_rl_tiny_budget_is_seeded_and_reproducible(algo: str, mode: str) -> None:
    kwargs = dict(
        observation=mode, hyperparams=TINY[algo], n_envs=2 if algo == "ppo" else 1, progress=False
    )
    ctrl, info = train_rl(LINEAR, algo, 256, seed=3, **kwargs)
    again, _ = train_rl(LINEAR, algo, 256, seed=3, **kwargs)
    other, _ = train_rl(LINEAR, algo, 256, seed=4, **kwargs)
    assert _same(_weights(ctrl), _weights(again))
    assert not _same(_weights(ctrl), _weights(other))
    assert isinstance(ctrl, RLController) and ctrl.observation == mode
    assert type(ctrl.model).__name__ == algo.upper()
    assert info["env_steps"] == 256 and info["wall_s"] > 0 and info["resumed_from"] is None
    assert info["hyperparams"]["n_envs"] == kwargs["n_envs"]
    assert (
        info["hyperparams"]["learning_rate"] == HYPERPARAMS[("LinearSystem", algo)]["learning_rate"]
    )
    if mode == "measurement":
        assert ctrl.policy_input.history == 4  # train_rl's default
    env = Monitor(gym.make(LINEAR))
    mean, _ = evaluate_policy(ctrl, env, n_eval_episodes=1)
    assert np.isfinite(mean)


@pytest.mark.parametrize(
    ("mode", "angles", "size"),
    [("measurement", None, 4 * 2), ("measurement", (), 4), ("estimate", None, 3)],
)
def test_train_rl_takes_the_angles_the_env_declares(
    mode: str, angles: tuple[int, ...] | None, size: int
) -> None:
    ctrl, _ = train_rl(
        PENDULUM,
        "sac",
        70,
        observation=mode,
        angles=angles,
        hyperparams=TINY["sac"],
        progress=False,
    )
    assert ctrl.policy_input.angles == ((0,) if angles is None else ())
    assert ctrl.model.observation_space.shape == (size,) == (ctrl.policy_input.size,)


def test_train_rl_normalization_checkpoints_resume_and_load_rl(tmp_path: Path) -> None:
    hp = {**TINY["ppo"], "normalize": True}
    ctrl, _ = train_rl(
        CARTPOLE,
        "ppo",
        128,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
        checkpoint_every=64,
    )
    assert ctrl.obs_normalization is not None
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.zip")) == [
        "rl_model_128_steps.zip",
        "rl_model_64_steps.zip",
    ]
    assert (tmp_path / "checkpoints" / "rl_model_vecnormalize_128_steps.pkl").is_file()
    loaded = load_rl(tmp_path / "final")  # env id and nominal model from the sidecar
    assert loaded.metadata["env_id"] == CARTPOLE
    y = np.random.default_rng(0).normal(0, 0.05, (2, 6, 2)).astype(np.float32)
    np.testing.assert_array_equal(_actions(loaded, y), _actions(ctrl, y))

    resumed, info2 = train_rl(
        CARTPOLE,
        "ppo",
        256,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        log_dir=tmp_path,
        checkpoint_every=64,
        resume=True,
    )
    assert info2["resumed_from"].endswith("rl_model_128_steps.zip")
    assert info2["env_steps"] == 256
    assert (tmp_path / "checkpoints" / "rl_model_256_steps.zip").is_file()
    assert resumed.obs_normalization is not None


def test_train_rl_keeps_the_policy_of_the_best_evaluation() -> None:
    """With eval_every, the returned policy (and its observation normalization) is the one of
    the best evaluation, not the last: compared with snapshots taken at each evaluation."""
    from stable_baselines3.common.callbacks import BaseCallback

    snapshots: dict[int, tuple[dict[str, torch.Tensor], np.ndarray]] = {}

    class Record(BaseCallback):  # runs before the evaluation of the same step
        def _on_step(self) -> bool:
            if self.num_timesteps % 128 == 0:
                state = {k: v.clone() for k, v in self.model.policy.state_dict().items()}
                snapshots[self.num_timesteps] = (state, self.training_env.obs_rms.mean.copy())
            return True

    hp = {**TINY["ppo"], "normalize": True}
    ctrl, info = train_rl(
        CARTPOLE,
        "ppo",
        640,
        observation="estimate",
        hyperparams=hp,
        n_envs=1,
        progress=False,
        callback=Record(),
        eval_every=128,
        eval_episodes=2,
        seed=1,  # its best evaluation is an early one (128 steps)
    )
    best = info["best_eval"]
    assert best is not None and best["env_steps"] in snapshots
    assert best["env_steps"] < 640
    assert ctrl.metadata["best_eval"] == best  # saved with the policy
    assert np.isfinite(best["mean_return"])
    weights, obs_mean = snapshots[best["env_steps"]]
    for key, value in ctrl.model.policy.state_dict().items():
        assert torch.equal(value, weights[key]), key
    np.testing.assert_array_equal(ctrl.obs_normalization["mean"], obs_mean)
    last = snapshots[640][0]  # the last policy differs from the one returned
    assert any(not torch.equal(v, last[k]) for k, v in ctrl.model.policy.state_dict().items())
    with pytest.raises(ParameterError, match="eval_every"):
        train_rl(CARTPOLE, "ppo", 64, eval_every=0)


def test_hyperparams_table_holds_valid_sb3_arguments() -> None:
    meta = {
        "n_envs",
        "n_timesteps",
        "normalize",
        "policy",
        "estimator_process_cov_scale",
        "eval_every",
        "eval_episodes",
    }
    for (env_name, algo), params in HYPERPARAMS.items():
        cls = {"ppo": PPO, "sac": SAC}[algo]
        accepted = set(inspect.signature(cls.__init__).parameters)
        unknown = set(params) - accepted - meta
        assert not unknown, (env_name, algo, unknown)
        assert params.get("n_timesteps", 1) >= 1 and params.get("n_envs", 1) >= 1


# -- errors ----------------------------------------------------------------------------------------
def test_train_rl_bad_inputs() -> None:
    with pytest.raises(
        ParameterError, match=r"algo: expected one of \['ppo', 'sac'\], found 'dqn'"
    ):
        train_rl(LINEAR, "dqn", 64)
    with pytest.raises(ParameterError, match="observation: expected one of"):
        train_rl(LINEAR, "sac", 64, observation="pixels")
    with pytest.raises(ParameterError, match="history: expected an integer >= 1, found 0"):
        train_rl(LINEAR, "sac", 64, history=0)
    with pytest.raises(ParameterError, match="total_timesteps: expected an integer >= 1"):
        train_rl(LINEAR, "sac", 0)
    with pytest.raises(ParameterError, match="log_dir: checkpoint_every and resume need"):
        train_rl(LINEAR, "sac", 64, checkpoint_every=32)
    with pytest.raises(TypeError, match="hyperparams: expected a mapping"):
        train_rl(LINEAR, "sac", 64, hyperparams=[("gamma", 0.9)])  # type: ignore[arg-type]


def test_controller_bad_inputs() -> None:
    model, env = untrained(LINEAR, "estimate")
    nominal = env.unwrapped.nominal_model
    with pytest.raises(TypeError, match="model: expected a trained Stable-Baselines3 algorithm"):
        RLController(object(), observation="estimate", nominal_model=nominal)
    with pytest.raises(ParameterError, match="observation: expected one of"):
        RLController(model, observation="state")
    with pytest.raises(TypeError, match="needs an estimator or the nominal_model"):
        RLController(model, observation="estimate")
    with pytest.raises(ParameterError, match="history: expected an integer >= 1, found 0"):
        RLController(model, observation="measurement", history=0)
    with pytest.raises(ParameterError, match="history: a measurement history"):
        RLController(model, observation="estimate", nominal_model=nominal, history=3)
    with pytest.raises(DimensionError, match=r"observation space of shape \(4,\)"):
        RLController(model, observation="estimate", nominal_model=nominal, include_covariance=True)
    with pytest.raises(DimensionError, match="expected an observation of history = 3 rows"):
        RLController(model, observation="measurement", history=3)
    with pytest.raises(DimensionError, match=r"obs_normalization\['mean'\]: expected shape"):
        RLController(
            model,
            observation="estimate",
            nominal_model=nominal,
            obs_normalization={"mean": [0.0], "var": [1.0], "epsilon": 1e-8, "clip_obs": 10.0},
        )
    ctrl = RLController(model, observation="estimate", nominal_model=nominal)
    with pytest.raises(DimensionError, match=r"observation: expected shape \(1,\) or \(B, 1\)"):
        ctrl.predict(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="state: expected the RLState"):
        ctrl.predict(np.zeros(1, dtype=np.float32), state=(1, 2))
    with pytest.raises(ParameterError, match="estimator: only used with observation='estimate'"):
        PolicyObservation("measurement", n_y=1, n_u=1, estimator=ctrl.estimator)


def test_missing_stable_baselines3_raises_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, _ = untrained(LINEAR, "measurement")
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    with pytest.raises(MissingDependencyError, match=r"pip install \"kalmannet-ctrl\[rl\]\""):
        require_sb3()
    with pytest.raises(MissingDependencyError, match="stable_baselines3 is needed"):
        RLController(model)
    with pytest.raises(MissingDependencyError):
        train_rl(LINEAR, "sac", 64)
    assert issubclass(MissingDependencyError, ImportError)


def test_importing_the_package_does_not_import_stable_baselines3() -> None:
    code = (
        "import sys, kalmannet_ctrl, kalmannet_ctrl.controllers, kalmannet_ctrl.training, "
        "kalmannet_ctrl.envs; assert 'stable_baselines3' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
