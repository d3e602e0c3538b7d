"""LQR against python-control, closed forms and brute-force quadratic programs."""

from __future__ import annotations

import control
import numpy as np
import pytest
import torch

from kalmannet_ctrl.controllers import LQR, Controller
from kalmannet_ctrl.errors import (
    BatchSizeError,
    DimensionError,
    NonFiniteError,
    NotPositiveDefiniteError,
    RiccatiError,
)
from kalmannet_ctrl.models import LinearGaussianModel, NonlinearModel, QuadraticCost

from .systems import plant, plant_cost, random_system


def scalar_model(a: float, b: float) -> LinearGaussianModel:
    return LinearGaussianModel([[a]], [[b]], [[1.0]], [[1.0]], [[1.0]])


def brute_force_finite_horizon(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, Qf: np.ndarray, H: int
) -> tuple[np.ndarray, np.ndarray]:
    """(K_0, P_0) of the horizon-H problem as one quadratic program in (u_0, ..., u_{H-1}).

    Stacks x_t = A^t x_0 + Σ_{s<t} A^{t-1-s} B u_s for t = 0..H and minimizes the quadratic cost in
    closed form: u* = −(Γ'Q̄Γ + R̄)^{-1} Γ'Q̄Φ x_0.
    """
    n_x, n_u = B.shape
    Phi = np.vstack([np.linalg.matrix_power(A, t) for t in range(H + 1)])
    Gam = np.zeros(((H + 1) * n_x, H * n_u))
    for t in range(1, H + 1):
        for s in range(t):
            Gam[t * n_x : (t + 1) * n_x, s * n_u : (s + 1) * n_u] = (
                np.linalg.matrix_power(A, t - 1 - s) @ B
            )
    Qbar = np.zeros(((H + 1) * n_x, (H + 1) * n_x))
    for t in range(H):
        Qbar[t * n_x : (t + 1) * n_x, t * n_x : (t + 1) * n_x] = Q
    Qbar[H * n_x :, H * n_x :] = Qf
    Rbar = np.kron(np.eye(H), R)
    Hess = Gam.T @ Qbar @ Gam + Rbar
    lin = Gam.T @ Qbar @ Phi
    policy = np.linalg.solve(Hess, lin)  # u* = -policy x_0
    P0 = Phi.T @ Qbar @ Phi - lin.T @ policy
    return policy[:n_u], P0


# -- infinite horizon ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n_x", "n_u"), [(1, 1), (2, 1), (3, 2), (5, 2), (6, 3)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_infinite_horizon_matches_control_dlqr(n_x: int, n_u: int, seed: int) -> None:
    model, cost = random_system(n_x, n_u, 1, seed)
    m = model.numpy()
    Q, R = cost.numpy()
    K_ref, S_ref, _ = control.dlqr(m["A"], m["B"], Q, R)
    lqr = LQR(model, cost)
    assert lqr.gain.shape == (n_u, n_x)
    assert lqr.value_matrix.shape == (n_x, n_x)
    np.testing.assert_allclose(lqr.gain.numpy(), K_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lqr.value_matrix.numpy(), S_ref, rtol=1e-8, atol=1e-10)
    # the DARE residual, independent of any solver, and a stable closed loop
    A, Bm, P = m["A"], m["B"], lqr.value_matrix.numpy()
    resid = Q + A.T @ P @ A - A.T @ P @ Bm @ np.linalg.solve(R + Bm.T @ P @ Bm, Bm.T @ P @ A) - P
    assert np.abs(resid).max() < 1e-9 * np.abs(P).max()
    assert max(abs(np.linalg.eigvals(A - Bm @ lqr.gain.numpy()))) < 1.0


@pytest.mark.parametrize(("q", "r"), [(1.0, 1.0), (2.0, 0.1), (0.3, 5.0)])
def test_scalar_integrator_closed_form(q: float, r: float) -> None:
    # A = B = 1: P^2/(r + P) = q  =>  P = (q + sqrt(q^2 + 4 q r)) / 2,  K = P / (r + P)
    lqr = LQR(scalar_model(1.0, 1.0), QuadraticCost([[q]], [[r]]))
    P = (q + np.sqrt(q**2 + 4 * q * r)) / 2
    assert float(lqr.value_matrix[0, 0]) == pytest.approx(P, rel=1e-12)
    assert float(lqr.gain[0, 0]) == pytest.approx(P / (r + P), rel=1e-12)


def test_scalar_cheap_control_deadbeat() -> None:
    # As R -> 0 the optimal scalar gain tends to a/b (dead-beat) and P to q.
    lqr = LQR(scalar_model(2.0, 0.5), QuadraticCost([[1.0]], [[1e-10]]))
    assert float(lqr.gain[0, 0]) == pytest.approx(4.0, rel=1e-6)
    assert float(lqr.value_matrix[0, 0]) == pytest.approx(1.0, rel=1e-6)


# -- finite horizon ------------------------------------------------------------------------------


def test_long_horizon_converges_to_infinite_horizon() -> None:
    model, cost = random_system(3, 2, 1, seed=4)
    inf = LQR(model, cost)
    fin = LQR(model, cost, horizon=300)
    assert fin.gain.shape == (300, 2, 3)
    assert fin.value_matrix.shape == (301, 3, 3)
    np.testing.assert_allclose(fin.gain[0].numpy(), inf.gain.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(
        fin.value_matrix[0].numpy(), inf.value_matrix.numpy(), rtol=1e-8, atol=1e-10
    )


def test_one_step_gain() -> None:
    model, cost = random_system(3, 2, 1, seed=5)
    m = model.numpy()
    A, Bm = m["A"], m["B"]
    Q, R = cost.numpy()
    Qf = np.diag([3.0, 1.0, 0.5])
    K1 = np.linalg.solve(R + Bm.T @ Qf @ Bm, Bm.T @ Qf @ A)
    one = LQR(model, cost, horizon=1, terminal_weight=Qf)
    np.testing.assert_allclose(one.gain[0].numpy(), K1, rtol=1e-12)
    np.testing.assert_allclose(one.value_matrix[1].numpy(), Qf)
    # the last gain of any horizon is the one-step gain
    np.testing.assert_allclose(
        LQR(model, cost, horizon=7, terminal_weight=Qf).gain[-1].numpy(), K1, rtol=1e-12
    )
    # default terminal weight is Q
    K1_Q = np.linalg.solve(R + Bm.T @ Q @ Bm, Bm.T @ Q @ A)
    np.testing.assert_allclose(LQR(model, cost, horizon=1).gain[0].numpy(), K1_Q, rtol=1e-12)


@pytest.mark.parametrize("H", [1, 2, 5])
def test_finite_horizon_matches_brute_force(H: int) -> None:
    model, cost = random_system(2, 1, 1, seed=6)
    m = model.numpy()
    Q, R = cost.numpy()
    Qf = np.array([[2.0, 0.3], [0.3, 0.5]])
    lqr = LQR(model, cost, horizon=H, terminal_weight=Qf)
    for t in range(H):
        K_ref, P_ref = brute_force_finite_horizon(m["A"], m["B"], Q, R, Qf, H - t)
        np.testing.assert_allclose(lqr.gain[t].numpy(), K_ref, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lqr.value_matrix[t].numpy(), P_ref, rtol=1e-9, atol=1e-12)


def test_finite_horizon_rollout_cost_equals_value() -> None:
    # Noise-free closed loop driven through predict: realized cost = x_0' P_0 x_0.
    model, cost = random_system(3, 2, 1, seed=7)
    m = model.numpy()
    Q, R = cost.numpy()
    H = 6
    lqr = LQR(model, cost, horizon=H)
    x = np.random.default_rng(0).normal(size=(4, 3))
    expected = np.einsum("bi,ij,bj->b", x, lqr.value_matrix[0].numpy(), x)
    total = np.zeros(4)
    state = None
    for t in range(H):
        u, state = lqr.predict(x, state, episode_start=np.full(4, t == 0))
        np.testing.assert_array_equal(state, np.full(4, t + 1))
        total += np.einsum("bi,ij,bj->b", x, Q, x) + np.einsum("bi,ij,bj->b", u, R, u)
        x = x @ m["A"].T + u @ m["B"].T
    total += np.einsum("bi,ij,bj->b", x, Q, x)  # terminal weight defaults to Q
    np.testing.assert_allclose(total, expected, rtol=1e-10)


def test_finite_horizon_is_differentiable() -> None:
    Bm = torch.tensor([[0.0], [1.0]], dtype=torch.float64)

    def p0(A: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
        model = LinearGaussianModel(
            A, Bm, torch.eye(2, dtype=torch.float64), torch.eye(2), torch.eye(2)
        )
        return LQR(model, QuadraticCost(0.5 * (Q + Q.mT), [[0.3]]), horizon=3).value_matrix[0]

    A = torch.tensor([[1.1, 0.3], [-0.2, 0.9]], dtype=torch.float64, requires_grad=True)
    Q = torch.tensor([[1.0, 0.2], [0.2, 2.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(p0, (A, Q))


# -- action and predict --------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 10])
def test_action_shapes_and_dtypes(B: int) -> None:
    model, cost = random_system(3, 2, 1, seed=8)
    lqr = LQR(model, cost)
    x = np.random.default_rng(1).normal(size=(B, 3))
    u = lqr.action(x)
    assert u.shape == (B, 2) and u.dtype == torch.float64
    np.testing.assert_allclose(u.numpy(), -x @ lqr.gain.numpy().T, rtol=1e-14)
    u32 = lqr.action(torch.as_tensor(x, dtype=torch.float32))
    assert u32.dtype == torch.float32
    xg = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    lqr.action(xg).sum().backward()
    np.testing.assert_allclose(xg.grad.numpy(), np.tile(-lqr.gain.numpy().sum(0), (B, 1)))


@pytest.mark.parametrize("B", [1, 10])
def test_action_time_varying(B: int) -> None:
    model, cost = random_system(2, 1, 1, seed=9)
    lqr = LQR(model, cost, horizon=5)
    x = np.random.default_rng(2).normal(size=(B, 2))
    t = np.arange(B) % 5
    u = lqr.action(x, t).numpy()
    for b in range(B):
        np.testing.assert_allclose(u[b], -lqr.gain[t[b]].numpy() @ x[b], rtol=1e-14)
    np.testing.assert_allclose(lqr.action(x, 3).numpy(), -x @ lqr.gain[3].numpy().T, rtol=1e-14)


@pytest.mark.parametrize("B", [1, 10])
def test_predict_infinite_horizon(B: int) -> None:
    model, cost = random_system(3, 2, 1, seed=10)
    lqr = LQR(model, cost)
    assert isinstance(lqr, Controller)
    x = np.random.default_rng(3).normal(size=(B, 3)).astype(np.float32)
    u, state = lqr.predict(x)
    assert state is None
    assert u.shape == (B, 2) and u.dtype == np.float32
    np.testing.assert_allclose(u, -x.astype(np.float64) @ lqr.gain.numpy().T, rtol=1e-6)
    u1, _ = lqr.predict(x[0].astype(np.float64))
    assert u1.shape == (2,) and u1.dtype == np.float64
    u_t, _ = lqr.predict(torch.as_tensor(x))
    assert u_t.dtype == np.float64


def test_predict_finite_horizon_episode_start() -> None:
    model, cost = random_system(2, 1, 1, seed=11)
    lqr = LQR(model, cost, horizon=4)
    x = np.ones((3, 2))
    _, state = lqr.predict(x)
    _, state = lqr.predict(x, state)
    np.testing.assert_array_equal(state, [2, 2, 2])
    u, state = lqr.predict(x, state, episode_start=np.array([False, True, False]))
    np.testing.assert_array_equal(state, [3, 1, 3])
    np.testing.assert_allclose(u[1], -lqr.gain[0].numpy() @ x[1])
    np.testing.assert_allclose(u[0], -lqr.gain[2].numpy() @ x[0])
    _, state = lqr.predict(x, state)
    with pytest.raises(ValueError, match=r"state: expected time indices in \[0, 4\).*found 4"):
        lqr.predict(x, state)


# -- errors --------------------------------------------------------------------------------------


def test_nonlinear_model_is_rejected() -> None:
    nl = NonlinearModel(
        lambda x, u: torch.sin(x) + u,
        lambda x: x,
        n_x=1,
        n_y=1,
        n_u=1,
        process_cov=[[1.0]],
        measurement_cov=[[1.0]],
    )
    with pytest.raises(
        TypeError, match=r"model: .*NonlinearModel.*kalmannet_ctrl\.models\.linearize"
    ):
        LQR(nl, QuadraticCost([[1.0]], [[1.0]]))


def test_bad_cost() -> None:
    model = plant()
    with pytest.raises(TypeError, match="cost: expected a QuadraticCost"):
        LQR(model, (np.eye(2), np.eye(1)))
    with pytest.raises(DimensionError, match=r"cost: expected Q of shape \(2, 2\).*found \(3, 3\)"):
        LQR(model, QuadraticCost(np.eye(3), [[1.0]]))
    with pytest.raises(DimensionError, match=r"cost: expected R of shape \(1, 1\).*found \(2, 2\)"):
        LQR(model, QuadraticCost(np.eye(2), np.eye(2)))


def test_no_input() -> None:
    model = LinearGaussianModel(np.eye(2), None, np.eye(2), np.eye(2), np.eye(2))
    with pytest.raises(DimensionError, match=r"model: .*n_u >= 1.*found n_u = 0"):
        LQR(model, QuadraticCost(np.eye(2), np.zeros((0, 0))))


def test_unstabilizable_scipy_fails() -> None:
    # unstable mode 1.5 not reached by B
    model = LinearGaussianModel(
        np.diag([1.5, 0.5]), [[0.0], [1.0]], np.eye(2), np.eye(2), np.eye(2)
    )
    with pytest.raises(
        RiccatiError, match="model: the control Riccati equation has no stabilizing"
    ):
        LQR(model, QuadraticCost(np.eye(2), [[1.0]]))


def test_unstabilizable_on_unit_circle() -> None:
    # SciPy returns a solution here, but it does not stabilize the mode at 1 (B does not reach it)
    model = LinearGaussianModel(
        np.diag([1.0, 0.5]), [[0.0], [1.0]], np.eye(2), np.eye(2), np.eye(2)
    )
    with pytest.raises(RiccatiError, match=r"spectral radius 1 \(expected < 1\)"):
        LQR(model, QuadraticCost(np.diag([0.0, 1.0]), [[1.0]]))


def test_bad_horizon_and_terminal_weight() -> None:
    model, cost = plant(), plant_cost()
    with pytest.raises(ValueError, match="horizon: expected an integer >= 1, found 0"):
        LQR(model, cost, horizon=0)
    with pytest.raises(TypeError, match="horizon: expected an integer"):
        LQR(model, cost, horizon=2.5)
    with pytest.raises(ValueError, match="terminal_weight: only used with a finite horizon"):
        LQR(model, cost, terminal_weight=np.eye(2))
    with pytest.raises(DimensionError, match=r"terminal_weight: .*\(2, 2\).*found \(3, 3\)"):
        LQR(model, cost, horizon=3, terminal_weight=np.eye(3))
    with pytest.raises(NotPositiveDefiniteError, match="terminal_weight: expected a positive semi"):
        LQR(model, cost, horizon=3, terminal_weight=-np.eye(2))


def test_bad_action_arguments() -> None:
    model, cost = plant(), plant_cost()
    lqr = LQR(model, cost)
    with pytest.raises(DimensionError, match=r"x: expected shape \(B, 2\), found \(2,\)"):
        lqr.action(np.ones(2))
    with pytest.raises(DimensionError, match=r"x: expected shape \(B, 2\), found \(4, 3\)"):
        lqr.action(np.ones((4, 3)))
    fin = LQR(model, cost, horizon=3)
    with pytest.raises(ValueError, match=r"t: expected time indices in \[0, 3\).*found 3"):
        fin.action(np.ones((2, 2)), 3)
    with pytest.raises(ValueError, match=r"t: .*found -1"):
        fin.action(np.ones((2, 2)), np.array([0, -1]))
    with pytest.raises(DimensionError, match=r"t: expected shape \(\) or \(2,\), found \(3,\)"):
        fin.action(np.ones((2, 2)), np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="t: expected an integer time index"):
        fin.action(np.ones((2, 2)), 1.0)


def test_bad_predict_arguments() -> None:
    model, cost = plant(), plant_cost()
    lqr = LQR(model, cost)
    with pytest.raises(
        DimensionError, match=r"observation: expected shape \(2,\) or \(B, 2\).*\(3,\)"
    ):
        lqr.predict(np.ones(3))
    with pytest.raises(DimensionError, match=r"observation: .*found \(1, 2, 2\)"):
        lqr.predict(np.ones((1, 2, 2)))
    with pytest.raises(NonFiniteError, match="observation: expected finite values, found 1 NaN"):
        lqr.predict(np.array([np.nan, 1.0]))
    fin = LQR(model, cost, horizon=3)
    _, state = fin.predict(np.ones((4, 2)))
    with pytest.raises(BatchSizeError, match=r"observation: expected batch size 4 .*found 2"):
        fin.predict(np.ones((2, 2)), state)
    with pytest.raises(TypeError, match="state: expected the"):
        fin.predict(np.ones((4, 2)), state.astype(float))
    # a reset of every row starts a new batch
    _, state = fin.predict(np.ones((2, 2)), state, episode_start=np.ones(2, dtype=bool))
    np.testing.assert_array_equal(state, [1, 1])
