"""EstimateObservation and MeasurementHistory: checkers, shapes, timing, resets, references."""

from __future__ import annotations

import re
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.wrappers import FrameStackObservation
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from kalmannet_ctrl.envs import ENV_IDS, PartiallyKnownEnv, PendulumEnv
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanFilter, KalmanNet
from kalmannet_ctrl.rl import EstimateObservation, MeasurementHistory, declared_angles

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
PENDULUM = "kalmannet_ctrl/Pendulum-v0"
CARTPOLE = "kalmannet_ctrl/CartPole-v0"

# The checkers' advice that does not apply here (see tests/envs/test_common.py), plus the note
# that a wrapped env is checked.
EXPECTED_WARNINGS = (
    r"observation space (minimum|maximum) value is (-)?infinity",
    r"symmetric and normalized",
    r"is different from the unwrapped version",
)


def _unexpected(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if not any(re.search(p, str(w.message)) for p in EXPECTED_WARNINGS)
    ]


def rollout(env: gym.Env, actions: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Observations, raw measurements, true states and clipped actions of one episode."""
    obs, info = env.reset(seed=seed)
    out: dict[str, list[Any]] = {"obs": [obs], "y": [info["measurement"]], "x": [info["state"]]}
    space = env.action_space
    for a in actions:
        obs, _, terminated, truncated, info = env.step(a)
        out["obs"].append(obs)
        out["y"].append(info["measurement"])
        out["x"].append(info["state"])
        if terminated or truncated:  # pragma: no cover - the tests use short episodes
            break
    result = {k: np.stack(v) for k, v in out.items()}
    result["u"] = np.clip(actions[: len(result["obs"]) - 1], space.low, space.high)
    return result


def wrappers() -> list[Any]:
    return [
        pytest.param(lambda e: EstimateObservation(e), id="estimate"),
        pytest.param(lambda e: EstimateObservation(e, include_covariance=True), id="estimate+cov"),
        pytest.param(lambda e: EstimateObservation(e, angles=()), id="estimate-raw"),
        pytest.param(lambda e: MeasurementHistory(e, 3), id="history"),
        pytest.param(lambda e: MeasurementHistory(e, 2, include_actions=True), id="history+u"),
        pytest.param(lambda e: MeasurementHistory(e, 2, angles=()), id="history-raw"),
    ]


@pytest.mark.parametrize("wrap", wrappers())
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers_pass(env_id: str, wrap: Any) -> None:
    env = wrap(gym.make(env_id))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gym_check_env(env)
        sb3_check_env(env, warn=True)
    assert not _unexpected(caught)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert "state" in info and "measurement" in info
    obs, _, _, _, info = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert info["state"].shape == env.unwrapped.true_model.x0_mean.shape


@pytest.mark.parametrize(
    ("wrap", "shape"),
    [
        (lambda e: EstimateObservation(e), (4,)),
        (lambda e: EstimateObservation(e, include_covariance=True), (8,)),
        (lambda e: MeasurementHistory(e, 5), (10,)),
        (lambda e: MeasurementHistory(e, 5, include_actions=True), (15,)),
    ],
)
def test_observation_space_shapes(wrap: Any, shape: tuple[int, ...]) -> None:
    env = wrap(gym.make(CARTPOLE))  # n_x = 4, n_y = 2, n_u = 1
    assert env.observation_space.shape == shape
    assert env.observation_space.dtype == np.float32
    assert env.action_space == env.unwrapped.action_space


@pytest.mark.parametrize(
    ("wrap", "shape"),
    [
        (lambda e: EstimateObservation(e), (3,)),  # cos θ̂, sin θ̂, θ̂̇
        (lambda e: EstimateObservation(e, include_covariance=True), (5,)),
        (lambda e: EstimateObservation(e, angles=()), (2,)),
        (lambda e: MeasurementHistory(e, 3), (6,)),  # 3 × (cos y, sin y)
        (lambda e: MeasurementHistory(e, 3, include_actions=True), (9,)),
        (lambda e: MeasurementHistory(e, 3, angles=()), (3,)),
    ],
)
def test_pendulum_observation_shapes_with_angles(wrap: Any, shape: tuple[int, ...]) -> None:
    env = wrap(gym.make(PENDULUM))
    assert env.observation_space.shape == shape == env.reset(seed=0)[0].shape


def test_angle_declarations() -> None:
    """The pendulum declares θ as an angle in its state and in its measurement (y = θ + noise,
    unwrapped); the other envs declare none."""
    assert PendulumEnv.angle_states == (0,) and PendulumEnv.angle_measurements == (0,)
    assert PartiallyKnownEnv.angle_states == () == PartiallyKnownEnv.angle_measurements
    for env_id in ENV_IDS:
        if env_id != PENDULUM:
            env = gym.make(env_id).unwrapped
            assert env.angle_states == () and env.angle_measurements == ()
    env = gym.make(PENDULUM)
    _, info = env.reset(seed=0)
    ys, thetas = [], []
    for _ in range(120):  # pumped over the top: the reading follows θ past ±π, unwrapped
        y, _, _, _, info = env.step(np.array([2.0], dtype=np.float32))
        ys.append(y[0])
        thetas.append(info["state"][0])
    err = np.asarray(ys) - np.asarray(thetas)
    assert np.abs(err).max() < 0.1 and np.abs(np.asarray(thetas)).max() > np.pi
    h = env.unwrapped.nominal_model.h(torch.tensor([[7.0, -3.0]], dtype=torch.float64))
    assert h.tolist() == [[7.0]]


def test_measurement_history_rows_are_cos_sin_of_the_readings() -> None:
    env = MeasurementHistory(gym.make(PENDULUM), 3, include_actions=True)
    actions = np.array([[1.0], [-5.0], [0.5]], dtype=np.float32)  # bound 2: -5 clipped
    run = rollout(env, actions, seed=2)
    y, u = run["y"][:, 0].astype(np.float64), run["u"][:, 0]

    def row(t: int) -> list[float]:
        return [np.cos(y[t]), np.sin(y[t]), u[t - 1] if t > 0 else 0.0]

    zero = [0.0, 0.0, 0.0]  # before the episode: zero rows, not (cos 0, sin 0) = upright
    expected = [zero + zero + row(0), zero + row(0) + row(1), row(0) + row(1) + row(2)]
    np.testing.assert_allclose(run["obs"][:3], np.asarray(expected), rtol=1e-6, atol=1e-7)


def test_policy_input_ignores_full_turns() -> None:
    """An episode that reads θ + 2π everywhere gives the same observations (fails if the
    angles were passed on raw)."""
    env = MeasurementHistory(gym.make(PENDULUM), 2)
    obs, info = env.reset(seed=0)
    p = env.policy_input
    y = torch.as_tensor(info["measurement"], dtype=torch.float64).reshape(1, 1)
    turned, _ = p.step(p.init(1), y + 2 * np.pi)
    np.testing.assert_allclose(turned[0], obs, atol=1e-6)
    raw = MeasurementHistory(gym.make(PENDULUM), 2, angles=()).policy_input
    assert not np.allclose(raw.step(raw.init(1), y + 2 * np.pi)[0], raw.step(raw.init(1), y)[0])


def test_default_estimator_is_kf_for_linear_and_ekf_otherwise() -> None:
    linear, pend = EstimateObservation(gym.make(LINEAR)), EstimateObservation(gym.make(PENDULUM))
    assert type(linear.estimator) is KalmanFilter
    assert type(pend.estimator) is ExtendedKalmanFilter
    assert linear.estimator.model is linear.unwrapped.nominal_model
    assert pend.estimator.model is pend.unwrapped.nominal_model


@pytest.mark.parametrize("env_id", [LINEAR, PENDULUM])
def test_estimate_equals_the_estimator_run_by_hand(env_id: str) -> None:
    """x̂_{t|t} from an independent batch filter on the recorded y and the *applied* u."""
    env = EstimateObservation(gym.make(env_id), include_covariance=True)
    rng = np.random.default_rng(0)
    high = env.action_space.high
    actions = rng.uniform(-2 * high, 2 * high, size=(30, *high.shape))  # half of them clipped
    run = rollout(env, actions.astype(np.float32), seed=3)
    assert np.any(run["u"] != actions)  # the clipping was exercised
    ref = env.estimator.filter(run["y"][None], np.concatenate([run["u"], run["u"][-1:]])[None])
    mean = ref.mean[0].numpy()
    cols: list[np.ndarray] = []
    for i in range(mean.shape[-1]):  # angles (the pendulum's θ) as cos, sin
        angle = i in env.unwrapped.angle_states
        cols.extend([np.cos(mean[:, i]), np.sin(mean[:, i])] if angle else [mean[:, i]])
    features = np.stack(cols, -1)
    n = features.shape[-1]
    assert n == mean.shape[-1] + (1 if env_id == PENDULUM else 0)
    np.testing.assert_allclose(run["obs"][:, :n], features, rtol=1e-5, atol=1e-6)
    diag = torch.diagonal(ref.cov[0], dim1=-2, dim2=-1).numpy()
    np.testing.assert_allclose(run["obs"][:, n:], diag, rtol=1e-5, atol=1e-8)


def test_estimate_with_unclipped_actions_would_differ() -> None:
    """Guard for the test above: feeding the raw (unclipped) actions gives other estimates."""
    env = EstimateObservation(gym.make(PENDULUM), angles=())
    actions = np.full((20, 1), 5.0, dtype=np.float32)  # bound 2
    run = rollout(env, actions, seed=0)
    wrong = env.estimator.filter(run["y"][None], np.concatenate([actions, actions[-1:]])[None])
    assert not np.allclose(run["obs"], wrong.mean[0].numpy(), atol=1e-3)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda e: EstimateObservation(e),
        lambda e: MeasurementHistory(e, 4, include_actions=True),
    ],
)
def test_reset_clears_the_state_across_episodes(wrap: Any) -> None:
    """The second episode of a wrapper equals the first episode of a fresh one."""
    rng = np.random.default_rng(1)
    actions = rng.uniform(-2.0, 2.0, size=(15, 1)).astype(np.float32)
    used = wrap(gym.make(PENDULUM))
    rollout(used, np.full((25, 1), 2.0, dtype=np.float32), seed=7)  # pump the pendulum first
    second = rollout(used, actions, seed=11)
    fresh = rollout(wrap(gym.make(PENDULUM)), actions, seed=11)
    np.testing.assert_array_equal(second["obs"], fresh["obs"])


def test_same_seed_same_observations() -> None:
    actions = np.random.default_rng(2).uniform(-1, 1, size=(10, 1)).astype(np.float32)
    a = rollout(EstimateObservation(gym.make(LINEAR)), actions, seed=5)
    b = rollout(EstimateObservation(gym.make(LINEAR)), actions, seed=5)
    c = rollout(EstimateObservation(gym.make(LINEAR)), actions, seed=6)
    np.testing.assert_array_equal(a["obs"], b["obs"])
    assert not np.array_equal(a["obs"], c["obs"])


def test_history_is_zero_padded_oldest_first() -> None:
    env = MeasurementHistory(gym.make(CARTPOLE), 3, include_actions=True)
    actions = np.array([[1.0], [-20.0], [3.0], [4.0]], dtype=np.float32)  # bound 10: -20 clipped
    run = rollout(env, actions, seed=0)
    y, u = run["y"], run["u"]
    zero_y, zero_u = np.zeros(2), np.zeros(1)

    def rows(*pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        return np.concatenate([np.concatenate(p) for p in pairs]).astype(np.float32)

    expected = [
        rows((zero_y, zero_u), (zero_y, zero_u), (y[0], zero_u)),
        rows((zero_y, zero_u), (y[0], zero_u), (y[1], u[0])),
        rows((y[0], zero_u), (y[1], u[0]), (y[2], u[1])),
        rows((y[1], u[0]), (y[2], u[1]), (y[3], u[2])),
        rows((y[2], u[1]), (y[3], u[2]), (y[4], u[3])),
    ]
    np.testing.assert_array_equal(run["obs"], np.stack(expected))
    assert u[1, 0] == -10.0


def test_history_equals_gymnasium_frame_stack_with_zero_padding() -> None:
    ours = MeasurementHistory(gym.make(CARTPOLE), 4)
    ref = FrameStackObservation(gym.make(CARTPOLE), 4, padding_type="zero")
    actions = np.random.default_rng(3).uniform(-5, 5, size=(12, 1)).astype(np.float32)
    for seed in (0, 1):  # two episodes: the reset clears both the same way
        a, _ = ours.reset(seed=seed)
        b, _ = ref.reset(seed=seed)
        np.testing.assert_array_equal(a, b.reshape(-1))
        for act in actions:
            a = ours.step(act)[0]
            b = ref.step(act)[0]
            np.testing.assert_array_equal(a, b.reshape(-1))


def test_kalmannet_estimator_float32() -> None:
    env0 = gym.make(PENDULUM)
    net = KalmanNet(env0.unwrapped.nominal_model, generator=torch.Generator().manual_seed(0))
    env = EstimateObservation(env0, net)
    actions = np.random.default_rng(4).uniform(-2, 2, size=(15, 1)).astype(np.float32)
    run = rollout(env, actions, seed=0)
    assert run["obs"].dtype == np.float32 and run["obs"].shape == (16, 3)
    with torch.no_grad():
        ref = net.filter(run["y"][None], np.concatenate([run["u"], run["u"][-1:]])[None])
    mean = ref.mean[0].numpy()
    features = np.stack([np.cos(mean[:, 0]), np.sin(mean[:, 0]), mean[:, 1]], -1)
    np.testing.assert_allclose(run["obs"], features, rtol=1e-5, atol=1e-5)


def test_mismatch_option_passes_through_reset() -> None:
    env = EstimateObservation(gym.make(PENDULUM))
    env.reset(seed=0, options={"mismatch": {"mass": 2.0}})
    assert env.unwrapped.mismatch["mass"] == 2.0


def test_envs_that_declare_nothing_get_no_angles() -> None:
    """The angles come from a PartiallyKnownEnv's declaration; any other env has none (here
    Gymnasium's Pendulum, whose observation (cos θ, sin θ, θ̇) needs none)."""
    foreign = gym.make("Pendulum-v1")
    assert not isinstance(foreign.unwrapped, PartiallyKnownEnv)
    assert declared_angles(foreign, "measurement") == () == declared_angles(foreign, "estimate")
    env = MeasurementHistory(foreign, 2)
    assert env.policy_input.angles == () and env.observation_space.shape == (6,)
    assert declared_angles(gym.make(PENDULUM), "estimate") == PendulumEnv.angle_states
    assert declared_angles(gym.make(PENDULUM), "measurement") == PendulumEnv.angle_measurements


# -- errors ----------------------------------------------------------------------------------------
def test_errors() -> None:
    with pytest.raises(ParameterError, match=r"length: expected an integer >= 1, found 0"):
        MeasurementHistory(gym.make(LINEAR), 0)
    with pytest.raises(TypeError, match="length: expected an integer"):
        MeasurementHistory(gym.make(LINEAR), 2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="flat Box action space"):
        EstimateObservation(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match=r"no unwrapped\.nominal_model"):
        EstimateObservation(gym.make("Pendulum-v1"))
    net = KalmanNet(gym.make(PENDULUM).unwrapped.nominal_model)
    with pytest.raises(ParameterError, match="include_covariance: the estimator propagates no"):
        EstimateObservation(gym.make(PENDULUM), net, include_covariance=True)
    cart = gym.make(CARTPOLE).unwrapped.nominal_model
    with pytest.raises(DimensionError, match="estimator: expected an estimator of n_y = 1"):
        EstimateObservation(gym.make(PENDULUM), ExtendedKalmanFilter(cart))
    with pytest.raises(TypeError, match="Estimator protocol"):
        EstimateObservation(gym.make(PENDULUM), object())  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"angles: expected indices in \[0, 2\)"):
        EstimateObservation(gym.make(PENDULUM), angles=(2,))
    with pytest.raises(ParameterError, match=r"angles: expected indices in \[0, 1\)"):
        MeasurementHistory(gym.make(PENDULUM), 2, angles=(1,))
    env = EstimateObservation(gym.make(LINEAR))
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\)"):
        env.step(np.zeros(1, dtype=np.float32))


def test_true_state_observation_is_the_state_with_angle_features() -> None:
    from kalmannet_ctrl.rl import TrueStateObservation

    env = TrueStateObservation(gym.make(CARTPOLE))
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (4,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs, info["state"], rtol=1e-6)
    obs, _, _, _, info = env.step(np.array([1.0], dtype=np.float32))
    np.testing.assert_allclose(obs, info["state"], rtol=1e-6)
    assert info["measurement"].shape == (2,)  # the raw measurement passes through
    pend = TrueStateObservation(gym.make(PENDULUM))  # θ declared an angle: (cos θ, sin θ, θ̇)
    obs, info = pend.reset(seed=1)
    theta, omega = info["state"]
    np.testing.assert_allclose(obs, [np.cos(theta), np.sin(theta), omega], rtol=1e-6)
    with pytest.raises(TypeError, match="holds no 'state'"):
        TrueStateObservation(gym.make("Pendulum-v1"))  # Gymnasium's own: no info["state"]
