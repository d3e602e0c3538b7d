"""Givens rotations, shared by the model library and the mismatch helpers.

:func:`rotation_matrix` builds the Lorenz model's measurement rotation
(:func:`kalmannet_ctrl.models.lorenz`) and the rotation mismatches of
:mod:`kalmannet_ctrl.models.mismatch`; both import it from here, so neither imports the other.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

from .._validation import as_tensor, check_finite
from ..errors import DimensionError

__all__ = ["rotation_matrix"]


def rotation_matrix(
    n: int,
    angle_deg: float | Tensor,
    plane: tuple[int, int] = (0, 1),
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The Givens rotation by ``angle_deg`` degrees in the coordinate plane ``plane``.

    With ``(i, j) = plane``: ``R[i, i] = R[j, j] = cos θ``, ``R[i, j] = -sin θ``,
    ``R[j, i] = sin θ``, and the identity elsewhere. For n = 2 and the default plane this is the
    counter-clockwise rotation ``[[cos θ, -sin θ], [sin θ, cos θ]]`` of the KalmanNet paper.
    Swapping the plane's indices reverses the direction. R is orthogonal with determinant 1 and
    ``rotation_matrix(n, -a) == rotation_matrix(n, a).T``.

    Parameters
    ----------
    n : int
        Size of the matrix (>= 2).
    angle_deg : float or Tensor
        Angle in degrees. A 0-d tensor keeps its autograd graph (R is differentiable in it).
    plane : (int, int)
        Two distinct indices in ``[0, n)``.
    dtype, device :
        Default float64 on the CPU, or those of ``angle_deg`` when it is a floating tensor.

    Shapes
    ------
    -> (n, n)
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n: expected an integer >= 2, found {type(n).__name__}")
    if n < 2:
        raise DimensionError(f"n: a rotation needs a dimension >= 2, found n = {n}")
    i, j = _check_plane(plane, n, "plane")
    if isinstance(angle_deg, Tensor) and dtype is None:
        dtype = angle_deg.dtype if angle_deg.is_floating_point() else None
    angle = as_tensor(angle_deg, "angle_deg", dtype=dtype or torch.float64, device=device)
    if angle.dim() != 0:
        raise DimensionError(f"angle_deg: expected a scalar, found shape {tuple(angle.shape)}")
    check_finite(angle, "angle_deg")
    rad = angle * (math.pi / 180.0)
    c, s = torch.cos(rad), torch.sin(rad)
    eye = torch.eye(n, dtype=angle.dtype, device=angle.device)
    ei, ej = eye[i], eye[j]
    # identity + (c - 1)(e_i e_i' + e_j e_j') + s (e_j e_i' - e_i e_j'), built without in-place ops
    return (
        eye
        + (c - 1.0) * (torch.outer(ei, ei) + torch.outer(ej, ej))
        + s * (torch.outer(ej, ei) - torch.outer(ei, ej))
    )


def _check_plane(plane: Any, n: int, name: str) -> tuple[int, int]:
    try:
        i, j = plane
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair of indices (i, j), found {plane!r}") from None
    for k in (i, j):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"{name}: expected integer indices, found {plane!r}")
    if not (0 <= i < n and 0 <= j < n) or i == j:
        raise DimensionError(
            f"{name}: expected two distinct indices in [0, {n}), found {tuple(plane)!r}"
        )
    return int(i), int(j)
