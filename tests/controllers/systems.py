"""Systems shared by the controller tests."""

from __future__ import annotations

import numpy as np

from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost

# An open-loop unstable plant (|eig A| ≈ 1.025) seen through its first state only.
PLANT_A = np.array([[1.1, 0.3], [-0.2, 0.9]])
PLANT_B = np.array([[0.0], [1.0]])
PLANT_C = np.array([[1.0, 0.0]])
PLANT_W = 0.1 * np.eye(2)
PLANT_V = np.array([[0.5]])


def rotation(degrees: float) -> np.ndarray:
    """The 2-D rotation matrix by ``degrees``, written out by hand."""
    th = np.deg2rad(degrees)
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def plant(rotate_deg: float = 0.0, **kwargs) -> LinearGaussianModel:
    """The plant, or a nominal model of it whose A is rotated: A_nom = R(θ) A."""
    return LinearGaussianModel(
        rotation(rotate_deg) @ PLANT_A, PLANT_B, PLANT_C, PLANT_W, PLANT_V, **kwargs
    )


def plant_cost() -> QuadraticCost:
    return QuadraticCost(Q=np.eye(2), R=[[0.1]])


def random_system(
    n_x: int, n_u: int, n_y: int, seed: int
) -> tuple[LinearGaussianModel, QuadraticCost]:
    """A random open-loop unstable system (spectral radius 1.2), generically stabilizable and
    detectable, with random full noise covariances and cost weights."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= 1.2 / max(abs(np.linalg.eigvals(A)))
    B = rng.normal(size=(n_x, n_u))
    C = rng.normal(size=(n_y, n_x))
    Lw = rng.normal(size=(n_x, n_x)) * 0.3
    Lv = rng.normal(size=(n_y, n_y)) * 0.5
    model = LinearGaussianModel(
        A,
        B,
        C,
        process_cov=Lw @ Lw.T + 0.05 * np.eye(n_x),
        measurement_cov=Lv @ Lv.T + 0.1 * np.eye(n_y),
        x0_mean=rng.normal(size=n_x),
        x0_cov=np.eye(n_x),
    )
    Mq = rng.normal(size=(n_x, n_x))
    Mr = rng.normal(size=(n_u, n_u))
    cost = QuadraticCost(Q=Mq @ Mq.T + 0.1 * np.eye(n_x), R=Mr @ Mr.T + 0.1 * np.eye(n_u))
    return model, cost
