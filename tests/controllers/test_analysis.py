"""analytic_average_cost against the closed-form LQG optimum and Monte Carlo simulation."""

from __future__ import annotations

import math

import control
import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQG, LQR, analytic_average_cost
from kalmannet_ctrl.errors import DimensionError
from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel, QuadraticCost

from .systems import (
    PLANT_A,
    PLANT_B,
    PLANT_C,
    PLANT_V,
    PLANT_W,
    plant,
    plant_cost,
    random_system,
    rotation,
)
from .test_lqg import MeasurementInversion


def closed_form_lqg_optimum(model: LinearGaussianModel, cost: QuadraticCost) -> float:
    """J* = tr(S W) + tr(P_post L'(R + B'SB)L), from python-control's Riccati solutions."""
    m = model.numpy()
    A, B, C, W, V = m["A"], m["B"], m["C"], m["process_cov"], m["measurement_cov"]
    Q, R = cost.numpy()
    L, S, _ = control.dlqr(A, B, Q, R)
    _, P_pred, _ = control.dlqe(A, np.eye(A.shape[0]), C, W, V)
    P_post = P_pred - P_pred @ C.T @ np.linalg.solve(C @ P_pred @ C.T + V, C @ P_pred)
    return float(np.trace(S @ W) + np.trace(P_post @ L.T @ (R + B.T @ S @ B) @ L))


SYSTEMS = [("plant", None), ((2, 1, 1), 0), ((3, 2, 2), 1), ((4, 1, 2), 2), ((5, 2, 3), 3)]


def get_system(spec, seed):
    if spec == "plant":
        return plant(x0_cov=np.eye(2)), plant_cost()
    return random_system(*spec, seed=seed)


@pytest.mark.parametrize(("spec", "seed"), SYSTEMS)
@pytest.mark.parametrize("steady_state", [False, True])
def test_oracle_lqg_equals_closed_form(spec, seed, steady_state: bool) -> None:
    model, cost = get_system(spec, seed)
    ctrl = LQG(model, cost, KalmanFilter(model, steady_state=steady_state))
    got = analytic_average_cost(model, ctrl, cost)
    assert got == pytest.approx(closed_form_lqg_optimum(model, cost), rel=1e-8)


@pytest.mark.parametrize(("spec", "seed"), SYSTEMS)
def test_full_state_lqr_equals_trace_SW(spec, seed) -> None:
    model, cost = get_system(spec, seed)
    m = model.numpy()
    Q, R = cost.numpy()
    _, S, _ = control.dlqr(m["A"], m["B"], Q, R)
    got = analytic_average_cost(model, LQR(model, cost), cost)
    assert got == pytest.approx(float(np.trace(S @ m["process_cov"])), rel=1e-8)


@pytest.mark.parametrize(("spec", "seed"), SYSTEMS)
def test_oracle_is_the_minimum(spec, seed) -> None:
    """Any other linear design (wrong noise levels, wrong weights) costs more than the oracle."""
    model, cost = get_system(spec, seed)
    J_star = analytic_average_cost(model, LQG(model, cost), cost)
    Q, R = cost.numpy()
    others = [
        LQG(model, cost, KalmanFilter(model.replace(process_cov=10 * model.process_cov))),
        LQG(model, cost, KalmanFilter(model.replace(measurement_cov=0.1 * model.measurement_cov))),
        LQG(model, QuadraticCost(Q, 10 * R)),
        LQG(model, QuadraticCost(Q, 0.1 * R)),
    ]
    for ctrl in others:
        J = analytic_average_cost(model, ctrl, cost)
        assert J_star * (1 + 1e-6) < J


@pytest.mark.parametrize("deg", [-5.0, 5.0, 10.0])
def test_mismatched_model_costs_more(deg: float) -> None:
    true, cost = plant(), plant_cost()
    nominal = plant(rotate_deg=deg)
    J_star = analytic_average_cost(true, LQG(true, cost), cost)
    J = analytic_average_cost(true, LQG(nominal, cost), cost)
    assert math.isfinite(J) and 1.2 * J_star < J


def test_nearly_perfect_measurements_approach_full_state_lqr() -> None:
    """With C = I and V → 0 the Kalman estimate is the state: LQG cost → LQR cost, even with a
    mismatched nominal model (an independent check of the mismatched-loop formula)."""

    def model(deg: float) -> LinearGaussianModel:
        return LinearGaussianModel(
            rotation(deg) @ PLANT_A, PLANT_B, np.eye(2), 0.1 * np.eye(2), 1e-10 * np.eye(2)
        )

    cost = plant_cost()
    for deg in (0.0, 5.0, 10.0):
        J_lqg = analytic_average_cost(model(0.0), LQG(model(deg), cost), cost)
        J_lqr = analytic_average_cost(model(0.0), LQR(model(deg), cost), cost)
        assert J_lqg == pytest.approx(J_lqr, rel=1e-6)


def test_nearly_perfect_measurements_with_wrong_C() -> None:
    """With V → 0 a nominal Kalman filter inverts its own Ĉ: x̂_{t|t} = Ĉ^{-1} y_t = Ĉ^{-1} C x_t,
    so the loop is full-state feedback with gain L Ĉ^{-1} C (L: LQR gain of the nominal Â, B̂)."""
    V = 1e-10 * np.eye(2)
    true = LinearGaussianModel(PLANT_A, PLANT_B, np.eye(2), PLANT_W, V)
    C_nom = np.array([[0.8, 0.1], [0.0, 1.2]])
    nominal = LinearGaussianModel(rotation(5.0) @ PLANT_A, 1.2 * PLANT_B, C_nom, 2 * PLANT_W, V)
    cost = plant_cost()
    Q, R = cost.numpy()
    L, _, _ = control.dlqr(rotation(5.0) @ PLANT_A, 1.2 * PLANT_B, Q, R)
    K = L @ np.linalg.solve(C_nom, np.eye(2))
    Sigma = control.dlyap(PLANT_A - PLANT_B @ K, PLANT_W)
    expected = float(np.trace((Q + K.T @ R @ K) @ Sigma))
    got = analytic_average_cost(true, LQG(nominal, cost), cost)
    assert got == pytest.approx(expected, rel=1e-6)
    assert abs(expected - analytic_average_cost(true, LQR(nominal, cost), cost)) > 0.1 * expected


def test_estimator_model_differs_from_design_model() -> None:
    """The KF's model (not the LQR's) enters the estimator dynamics; with the KF on the true
    model and the gain on a nominal one, the cost lies between the two pure designs here."""
    true, cost = plant(), plant_cost()
    nominal = plant(rotate_deg=5.0)
    J_star = analytic_average_cost(true, LQG(true, cost), cost)
    J_nom = analytic_average_cost(true, LQG(nominal, cost), cost)
    J_mixed = analytic_average_cost(true, LQG(nominal, cost, KalmanFilter(true)), cost)
    J_mixed2 = analytic_average_cost(true, LQG(true, cost, KalmanFilter(nominal)), cost)
    assert J_star < J_mixed and J_star < J_mixed2
    assert len({round(J, 8) for J in (J_nom, J_mixed, J_mixed2)}) == 3


def test_unstable_closed_loop_is_inf() -> None:
    true, cost = plant(), plant_cost()
    assert analytic_average_cost(true, LQG(plant(rotate_deg=20.0), cost), cost) == math.inf
    assert analytic_average_cost(true, LQR(plant(rotate_deg=20.0), cost), cost) == math.inf


def test_input_bounds_are_ignored() -> None:
    true, cost = plant(), plant_cost()
    J = analytic_average_cost(true, LQG(true, cost), cost)
    assert analytic_average_cost(true, LQG(true, cost, input_bounds=(-0.1, 0.1)), cost) == J


def test_other_evaluation_cost() -> None:
    # evaluation with another cost than the design cost: full-state loop, tr((Q + K'RK) Σ)
    true = plant()
    lqr = LQR(true, plant_cost())
    Q2, R2 = np.diag([2.0, 0.0]), np.array([[3.0]])
    K = lqr.gain.numpy()
    A_cl = PLANT_A - PLANT_B @ K
    Sigma = control.dlyap(A_cl, true.process_cov.numpy())
    expected = np.trace((Q2 + K.T @ R2 @ K) @ Sigma)
    assert analytic_average_cost(true, lqr, QuadraticCost(Q2, R2)) == pytest.approx(
        expected, rel=1e-9
    )


# -- Monte Carlo ---------------------------------------------------------------------------------

MC_BATCH, MC_T, MC_BURN = 1000, 600, 100


def simulated_cost(true: LinearGaussianModel, ctrl, cost: QuadraticCost, seed: int):
    """Mean over trajectories of the time-averaged stage cost for t >= burn-in, and its
    standard error (from the independent per-trajectory averages)."""
    # Many tiny steps: one intra-op thread avoids the large slowdowns that thread hand-offs
    # cause on a shared or busy CPU (restored afterwards).
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        traj = true.simulate(
            MC_T, MC_BATCH, policy=ctrl, generator=torch.Generator().manual_seed(seed)
        )
    finally:
        torch.set_num_threads(n_threads)
    per_traj = cost(traj.x, traj.u)[:, MC_BURN:].mean(1).numpy()
    return per_traj.mean(), per_traj.std(ddof=1) / np.sqrt(MC_BATCH)


# nominal models: (rotation of A in degrees, scale of B, of C, of process_cov, of measurement_cov)
MC_NOMINAL = {
    "oracle": (0.0, 1.0, 1.0, 1.0, 1.0),
    "rotated": (5.0, 1.0, 1.0, 1.0, 1.0),
    "all-wrong": (5.0, 1.3, 0.6, 2.0, 0.5),
}


@pytest.mark.parametrize("steady_state", [False, True])
@pytest.mark.parametrize(
    ("nominal_name", "seed"), [("oracle", 10), ("rotated", 11), ("all-wrong", 12)]
)
def test_monte_carlo_lqg(nominal_name: str, seed: int, steady_state: bool) -> None:
    """Simulated average cost on the true system within 5 standard errors of the analytic one.

    The closed loops here have spectral radius <= 0.85, so after the 100-step burn-in the
    transient (x_0 ~ N(0, I), time-varying gain) is negligible (0.85^200 < 1e-14); the
    per-trajectory averages over 500 steps are independent across the 1000 trajectories, so
    5 standard errors cannot be exceeded by chance (p < 1e-6).
    """
    true, cost = plant(x0_cov=np.eye(2)), plant_cost()
    deg, b, c, w, v = MC_NOMINAL[nominal_name]
    nominal = LinearGaussianModel(
        rotation(deg) @ PLANT_A,
        b * PLANT_B,
        c * PLANT_C,
        w * PLANT_W,
        v * PLANT_V,
        x0_cov=np.eye(2),
    )
    ctrl = LQG(nominal, cost, KalmanFilter(nominal, steady_state=steady_state))
    J = analytic_average_cost(true, ctrl, cost)
    mean, se = simulated_cost(true, ctrl, cost, seed)
    assert abs(mean - J) < 5 * se, (J, mean, se)
    assert se < 0.005 * J  # the bound is tight: 5 SE is a few percent of J
    if nominal_name != "oracle":  # the test can tell the mismatched design from the oracle
        J_star = analytic_average_cost(true, LQG(true, cost), cost)
        assert abs(J - J_star) > 20 * se


def test_monte_carlo_full_state_lqr() -> None:
    """A mismatched full-state LQR, fed the state through nearly noise-free measurements."""

    def model(deg: float) -> LinearGaussianModel:
        return LinearGaussianModel(
            rotation(deg) @ PLANT_A, PLANT_B, np.eye(2), 0.1 * np.eye(2), 1e-14 * np.eye(2)
        )

    true, cost = model(0.0), plant_cost()
    ctrl = LQR(model(10.0), cost)
    J = analytic_average_cost(true, ctrl, cost)
    mean, se = simulated_cost(true, ctrl, cost, seed=12)
    assert abs(mean - J) < 5 * se, (J, mean, se)
    assert abs(J - analytic_average_cost(true, LQR(true, cost), cost)) > 20 * se


# -- errors --------------------------------------------------------------------------------------


def test_errors() -> None:
    true, cost = plant(), plant_cost()
    with pytest.raises(
        TypeError, match=r"controller: analytic_average_cost supports LQR .*found object"
    ):
        analytic_average_cost(true, object(), cost)
    inv = LQG(
        true.replace(C=np.eye(2), measurement_cov=np.eye(2)), cost, MeasurementInversion(np.eye(2))
    )
    with pytest.raises(
        TypeError,
        match=r"controller: .*KalmanFilter estimator, found an LQG with MeasurementInversion",
    ):
        analytic_average_cost(true.replace(C=np.eye(2), measurement_cov=np.eye(2)), inv, cost)
    with pytest.raises(
        ValueError, match=r"controller: expected an infinite-horizon LQR.*horizon=5"
    ):
        analytic_average_cost(true, LQR(true, cost, horizon=5), cost)
    big, big_cost = random_system(3, 1, 1, seed=0)
    with pytest.raises(
        DimensionError,
        match="controller: expected a model with n_x = 3 like true_model, found n_x = 2",
    ):
        analytic_average_cost(big, LQG(true, cost), big_cost)
    with pytest.raises(DimensionError, match="controller: expected a model with n_x = 3"):
        analytic_average_cost(big, LQR(true, cost), big_cost)
    two_y = true.replace(C=np.eye(2), measurement_cov=np.eye(2))
    with pytest.raises(
        DimensionError,
        match="controller: expected a model with n_y = 2 like true_model, found n_y = 1",
    ):
        analytic_average_cost(two_y, LQG(true, cost), cost)
    with pytest.raises(
        DimensionError, match=r"cost: expected Q \(2, 2\) and R \(1, 1\).*found Q \(3, 3\)"
    ):
        analytic_average_cost(true, LQG(true, cost), big_cost)
    with pytest.raises(TypeError, match="cost: expected a QuadraticCost"):
        analytic_average_cost(true, LQG(true, cost), (np.eye(2), np.eye(1)))
    nl = NonlinearModel(
        lambda x, u: x,
        lambda x: x[:, :1],
        n_x=2,
        n_y=1,
        n_u=1,
        process_cov=np.eye(2),
        measurement_cov=[[1.0]],
    )
    with pytest.raises(
        TypeError, match="true_model: expected a LinearGaussianModel, found NonlinearModel"
    ):
        analytic_average_cost(nl, LQG(true, cost), cost)
