"""PolicyObservation: angle features (cos, sin), history rows, estimates, and their errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

sb3 = pytest.importorskip("stable_baselines3")

from kalmannet_ctrl.errors import DimensionError, ParameterError  # noqa: E402
from kalmannet_ctrl.rl import (  # noqa: E402
    PolicyObservation,
    RLController,
    angle_features,
    default_estimator,
)

from .policies import PENDULUM, controller, policy_actions, untrained  # noqa: E402


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
    np.testing.assert_allclose(policy_actions(ctrl, turned), policy_actions(ctrl, y), atol=1e-5)
    raw = controller(PENDULUM, "measurement", history=3, include_actions=True, angles=())
    assert raw.policy_input.size == 6
    assert not np.allclose(policy_actions(raw, turned), policy_actions(raw, y), atol=1e-3)


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
