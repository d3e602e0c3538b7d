"""QuadraticCost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kalmannet_ctrl.errors import DimensionError, NotPositiveDefiniteError, NotSymmetricError
from kalmannet_ctrl.models import QuadraticCost


def test_matches_hand_computation():
    c = QuadraticCost(Q=[[2.0, 0.5], [0.5, 1.0]], R=[[0.1]])
    x = torch.tensor([[1.0, -2.0], [0.0, 3.0]], dtype=torch.float64)
    u = torch.tensor([[4.0], [-1.0]], dtype=torch.float64)
    # x'Qx = 2 x1^2 + 2*0.5 x1 x2 + x2^2 ; u'Ru = 0.1 u^2
    expected = [2 * 1 + 1 * (1 * -2) + 4 + 0.1 * 16, 0 + 0 + 9 + 0.1 * 1]
    torch.testing.assert_close(c(x, u), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(c(x), torch.tensor([4.0, 9.0], dtype=torch.float64))


def test_arbitrary_leading_dims_and_numpy_inputs():
    rng = np.random.default_rng(0)
    Q = np.diag([1.0, 2.0, 3.0])
    R = np.array([[1.0, 0.2], [0.2, 0.5]])
    c = QuadraticCost(Q, R)
    x = rng.normal(size=(4, 5, 3))
    u = rng.normal(size=(4, 5, 2))
    out = c(x, u)
    assert out.shape == (4, 5)
    ref = np.einsum("...i,ij,...j->...", x, Q, x) + np.einsum("...i,ij,...j->...", u, R, u)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-13)
    Qn, Rn = c.numpy()
    np.testing.assert_array_equal(Qn, Q)
    np.testing.assert_array_equal(Rn, R)
    assert repr(c) == "QuadraticCost(n_x=3, n_u=2)"


def test_no_input_and_semidefinite_state_weight():
    c = QuadraticCost(Q=[[1.0, 0.0], [0.0, 0.0]], R=np.zeros((0, 0)))
    assert c.n_u == 0
    torch.testing.assert_close(c([[3.0, 7.0]]), torch.tensor([9.0], dtype=torch.float64))


def test_dtype_follows_Q():
    c = QuadraticCost(Q=torch.eye(2, dtype=torch.float32), R=[[1.0]])
    assert c.R.dtype == torch.float32
    assert c(torch.ones(1, 2), torch.ones(1, 1)).dtype == torch.float32


@pytest.mark.parametrize(
    ("Q", "R", "exc", "match"),
    [
        (
            [[1.0, 0.0], [0.0, -1.0]],
            [[1.0]],
            NotPositiveDefiniteError,
            "Q: expected a positive semi-definite",
        ),
        ([[1.0, 0.3], [0.0, 1.0]], [[1.0]], NotSymmetricError, "Q: expected a symmetric"),
        (
            [[1.0, 0.0]],
            [[1.0]],
            DimensionError,
            r"Q: expected a square matrix of shape \(n, n\), found \(1, 2\)",
        ),
        (np.eye(2), [[0.0]], NotPositiveDefiniteError, "R: expected a positive definite"),
        (np.eye(2), [[1.0, 2.0], [3.0, 1.0]], NotSymmetricError, "R: expected a symmetric"),
        (np.eye(2), [1.0], DimensionError, "R: expected a square matrix"),
    ],
)
def test_errors(Q, R, exc, match):
    with pytest.raises(exc, match=match):
        QuadraticCost(Q, R)
