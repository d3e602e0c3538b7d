"""Quadratic stage cost shared by controllers, environments and benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, check_covariance, check_square
from .base import _default_dtype

__all__ = ["QuadraticCost"]


class QuadraticCost:
    """Stage cost c(x, u) = x' Q x + u' R u.

    Parameters
    ----------
    Q : array-like, (n_x, n_x)
        State weight; symmetric positive semi-definite.
    R : array-like, (n_u, n_u)
        Input weight; symmetric positive definite (may be (0, 0) when n_u = 0).
    dtype, device :
        Default float64 on the CPU, or those of ``Q`` when it is a tensor.

    Shapes
    ------
    Q : (n_x, n_x), R : (n_u, n_u); cost(x (..., n_x), u (..., n_u) or None) -> (...)

    Examples
    --------
    >>> c = QuadraticCost(Q=[[1.0, 0.0], [0.0, 0.0]], R=[[0.1]])
    >>> float(c(torch.tensor([[2.0, 5.0]]), torch.tensor([[1.0]]))[0])
    4.1
    """

    def __init__(
        self,
        Q: Any,
        R: Any,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        dtype = _default_dtype(Q, dtype)
        self.Q = as_tensor(Q, "Q", dtype=dtype, device=device)
        self.R = as_tensor(R, "R", dtype=dtype, device=self.Q.device)
        self.n_x = check_square(self.Q, "Q")
        self.n_u = check_square(self.R, "R")
        check_covariance(self.Q, "Q", semidefinite=True)
        if self.n_u > 0:
            check_covariance(self.R, "R")

    def __call__(self, x: Any, u: Any = None) -> Tensor:
        """Stage cost of a batch.

        Shapes
        ------
        x : (..., n_x), u : (..., n_u) or None -> (...)
        """
        x = as_tensor(x, "x", dtype=self.Q.dtype, device=self.Q.device)
        c = torch.einsum("...i,ij,...j->...", x, self.Q, x)
        if u is not None and self.n_u > 0:
            u = as_tensor(u, "u", dtype=self.Q.dtype, device=self.Q.device)
            c = c + torch.einsum("...i,ij,...j->...", u, self.R, u)
        return c

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """(Q, R) as float64 NumPy arrays.

        Shapes
        ------
        -> (Q (n_x, n_x), R (n_u, n_u))
        """
        return (
            self.Q.detach().cpu().numpy().astype(np.float64),
            self.R.detach().cpu().numpy().astype(np.float64),
        )

    def __repr__(self) -> str:
        return f"QuadraticCost(n_x={self.n_x}, n_u={self.n_u})"
