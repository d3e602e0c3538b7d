"""Complex numbers where a real matrix, signal or number is expected raise ComplexValueError
(a TypeError naming the argument) at every public boundary, instead of losing their imaginary
part to a NumPy ComplexWarning."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl._validation import as_tensor, check_positive_float, check_positive_int
from kalmannet_ctrl.controllers import LQG, LQR, MPC, EstimationOnly, NeuralMPC, design_model
from kalmannet_ctrl.envs import ENV_IDS
from kalmannet_ctrl.envs.cartpole import CartPoleEnv
from kalmannet_ctrl.envs.linear_system import LinearSystemEnv
from kalmannet_ctrl.envs.lorenz import LorenzEnv
from kalmannet_ctrl.envs.pendulum import PendulumEnv
from kalmannet_ctrl.errors import ComplexValueError, KalmanNetCtrlError
from kalmannet_ctrl.estimators import (
    ExtendedKalmanFilter,
    KalmanFilter,
    KalmanNet,
    LearnedNoiseKalmanFilter,
    RNNEstimator,
    UnscentedKalmanFilter,
)
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    NonlinearModel,
    QuadraticCost,
    ResidualModel,
    cartpole,
    linear_canonical,
    linearize,
    lorenz,
    pendulum,
    rotate_dynamics,
    scale_parameters,
    set_parameters,
    synthetic_nonlinear,
)

MATCH = r"expected real|expected a real"


@pytest.fixture(autouse=True)
def _no_complex_warning():
    """A ComplexWarning would mean the imaginary part was dropped somewhere."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        yield


def raises_complex(name: str):
    return pytest.raises(ComplexValueError, match=rf"{name}: ({MATCH})")


def linear() -> LinearGaussianModel:
    return LinearGaussianModel(
        [[0.9, 0.1], [0.0, 0.8]], [[0.0], [1.0]], [[1.0, 0.0]], 0.1 * np.eye(2), [[0.2]]
    )


def cost() -> QuadraticCost:
    return QuadraticCost(np.eye(2), [[0.1]])


def test_the_error_is_a_typed_type_error():
    assert issubclass(ComplexValueError, TypeError)
    assert issubclass(ComplexValueError, KalmanNetCtrlError)


@pytest.mark.parametrize(
    "value",
    [
        np.array([[1.0 + 1e-9j]]),
        [[1.0, 2j]],
        1j,
        torch.zeros(2, dtype=torch.complex64),
        np.complex128(1.0),
    ],
    ids=["ndarray", "list", "scalar", "tensor", "numpy-scalar"],
)
def test_as_tensor(value):
    with raises_complex("arg"):
        as_tensor(value, "arg")


def test_scalar_checks():
    with raises_complex("horizon"):
        check_positive_int(np.complex64(2), "horizon")
    with raises_complex("dt"):
        check_positive_float(0.1 + 0j, "dt")


# -- models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["A", "B", "C", "process_cov", "measurement_cov", "x0_mean", "x0_cov"]
)
def test_linear_gaussian_model(name):
    m = linear()
    kwargs = {
        "A": m.A,
        "B": m.B,
        "C": m.C,
        "process_cov": m.process_cov,
        "measurement_cov": m.measurement_cov,
        "x0_mean": m.x0_mean,
        "x0_cov": m.x0_cov,
    }
    kwargs[name] = kwargs[name].numpy().astype(complex)
    with raises_complex(name):
        LinearGaussianModel(**kwargs)


@pytest.mark.parametrize("name", ["process_cov", "measurement_cov", "x0_mean", "x0_cov"])
def test_nonlinear_model(name):
    kwargs = {"process_cov": np.eye(2), "measurement_cov": np.eye(1)}
    kwargs[name] = (np.eye(2) if name != "measurement_cov" else np.eye(1)).astype(complex)
    if name == "x0_mean":
        kwargs[name] = np.zeros(2, dtype=complex)
    with raises_complex(name):
        NonlinearModel(lambda x, u: x, lambda x: x[:, :1], n_x=2, n_y=1, **kwargs)


@pytest.mark.parametrize("name", ["Q", "R"])
def test_quadratic_cost(name):
    kwargs = {"Q": np.eye(2), "R": np.eye(1)}
    kwargs[name] = kwargs[name].astype(complex)
    with raises_complex(name):
        QuadraticCost(**kwargs)


@pytest.mark.parametrize(
    ("factory", "name"),
    [
        (cartpole, "pole_length"),
        (pendulum, "mass"),
        (lorenz, "q2"),
        (linear_canonical, "r2"),
        (synthetic_nonlinear, "alpha"),
    ],
)
def test_library_systems(factory, name):
    with pytest.raises(ComplexValueError, match=name):
        factory(**{name: 1.0 + 1j})


def test_mismatch_helpers_and_linearize():
    with pytest.raises(ComplexValueError, match="angle_deg"):
        rotate_dynamics(linear(), 2j)
    with pytest.raises(ComplexValueError, match="pole_length"):
        scale_parameters(cartpole(), pole_length=1j)
    with pytest.raises(ComplexValueError, match="friction"):
        set_parameters(cartpole(), friction=0.5j)
    with raises_complex("x_eq"):
        linearize(cartpole(), np.zeros(4, dtype=complex))


def test_simulate_inputs():
    with raises_complex("u"):
        linear().simulate(5, 2, u=np.zeros((2, 5, 1), dtype=complex))


# -- estimators -----------------------------------------------------------------------------------
def estimators():
    m = linear()
    g = torch.Generator().manual_seed(0)
    return [
        KalmanFilter(m),
        KalmanFilter(m, steady_state=True),
        ExtendedKalmanFilter(m),
        UnscentedKalmanFilter(m),
        LearnedNoiseKalmanFilter(m),
        KalmanNet(m),
        RNNEstimator(m, hidden_size=8, generator=g),
    ]


@pytest.mark.parametrize("est", estimators(), ids=lambda e: type(e).__name__)
def test_estimator_filter_step_and_init(est):
    y = np.zeros((2, 5, 1))
    u = np.zeros((2, 5, 1))
    with raises_complex("y"):
        est.filter(y.astype(complex), u)
    with raises_complex("u"):
        est.filter(y, u.astype(complex))
    state = est.init(2)
    with raises_complex("y"):
        est.step(state, np.zeros((2, 1), dtype=complex))
    with raises_complex("u_prev"):
        est.step(state, np.zeros((2, 1)), np.zeros((2, 1), dtype=complex))
    if not isinstance(est, RNNEstimator):  # which ignores the prior (data-centric)
        with raises_complex("x0_mean"):
            est.init(2, x0_mean=np.zeros(2, dtype=complex))


def test_estimator_constructor_arguments():
    m = linear()
    with raises_complex("init_process_cov"):
        LearnedNoiseKalmanFilter(m, init_process_cov=np.eye(2, dtype=complex))
    with raises_complex("init_measurement_cov"):
        LearnedNoiseKalmanFilter(m, init_measurement_cov=np.eye(1, dtype=complex))
    with pytest.raises(ComplexValueError, match="alpha"):
        UnscentedKalmanFilter(m, alpha=1j)
    with pytest.raises(ComplexValueError, match="eps"):
        KalmanNet(m, eps=1e-12j)


# -- controllers ----------------------------------------------------------------------------------
def controllers():
    m, c = linear(), cost()
    bounds = (np.array([-2.0]), np.array([2.0]))
    nonlinear = cartpole()
    nl_cost = QuadraticCost(np.eye(4), [[0.01]])
    residual = ResidualModel(nonlinear, hidden=(8,), generator=torch.Generator().manual_seed(0))
    return [
        LQG(m, c, input_bounds=bounds),
        MPC(m, c, 5, input_bounds=bounds),
        EstimationOnly(m),
        NeuralMPC(residual, nl_cost, 3, input_bounds=(np.array([-10.0]), np.array([10.0]))),
        LQG(design_model(nonlinear), nl_cost),
    ]


@pytest.mark.parametrize("ctrl", controllers(), ids=lambda c: type(c).__name__)
def test_controller_predict(ctrl):
    n_y = ctrl.n_y if hasattr(ctrl, "n_y") else 1
    with raises_complex("observation"):
        ctrl.predict(np.zeros(n_y, dtype=complex))
    with raises_complex("observation"):
        ctrl.predict(np.zeros((3, n_y), dtype=np.complex64))


@pytest.mark.parametrize("name", ["low", "high"])
def test_controller_constructors(name):
    m, c = linear(), cost()
    low, high = np.array([-2.0]), np.array([2.0])
    bounds = (low.astype(complex), high) if name == "low" else (low, high.astype(complex))
    with pytest.raises(ComplexValueError, match="input_bounds"):
        LQG(m, c, input_bounds=bounds)
    with pytest.raises(ComplexValueError, match="input_bounds"):
        MPC(m, c, 5, input_bounds=bounds)
    with pytest.raises(ComplexValueError, match="input_bounds"):
        EstimationOnly(m, input_bounds=bounds)


def test_lqr_action_and_terminal_weight():
    m, c = linear(), cost()
    with raises_complex("x"):
        LQR(m, c).action(np.zeros((1, 2), dtype=complex))
    with raises_complex("terminal_weight"):
        LQR(m, c, horizon=5, terminal_weight=np.eye(2, dtype=complex))


# -- environments ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_actions_and_mismatch(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    with pytest.raises(ComplexValueError, match="action: expected real numbers"):
        env.step(np.zeros(env.action_space.shape, dtype=complex))
    key = next(iter(env.mismatch_spec))
    with pytest.raises(ComplexValueError, match=rf"mismatch\[{key!r}\]"):
        type(env)(mismatch={key: 1j})
    with pytest.raises(ComplexValueError, match=rf"options\['mismatch'\]\[{key!r}\]"):
        env.reset(options={"mismatch": {key: 1j}})
    envs = gym.make_vec(env_id, num_envs=2)
    envs.reset(seed=0)
    with pytest.raises(ComplexValueError, match="actions: expected real numbers"):
        envs.step(np.zeros(envs.action_space.shape, dtype=complex))


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [
        (CartPoleEnv, {"action_bound": 10j}),
        (CartPoleEnv, {"angle_limit": 0.5j}),
        (PendulumEnv, {"action_bound": 2j}),
        (LinearSystemEnv, {"action_bound": 1j}),
        (LorenzEnv, {"inv_r2_db": 20j}),
    ],
)
def test_env_constructor_numbers(cls, kwargs):
    with pytest.raises(ComplexValueError, match=next(iter(kwargs))):
        cls(**kwargs)
