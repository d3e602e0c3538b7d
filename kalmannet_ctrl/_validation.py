"""Argument checks shared by every public boundary (internal module).

Each check raises a typed error from :mod:`kalmannet_ctrl.errors` whose message names the
argument, the expected and the found value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .errors import (
    BatchSizeError,
    ComplexValueError,
    DimensionError,
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSymmetricError,
    ParameterError,
)

ShapeSpec = Sequence["int | str | None"]


def as_tensor(
    value: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Convert ``value`` (tensor, NumPy array, number or nested list) to a floating tensor.

    A tensor keeps its dtype and device unless ``dtype``/``device`` are given; anything else
    becomes float64 (or ``dtype``). Gradients are preserved for tensors. Complex values raise
    :class:`~kalmannet_ctrl.errors.ComplexValueError` (a ``TypeError``) instead of losing their
    imaginary part.
    """
    if isinstance(value, Tensor):
        t = value
    else:
        try:
            arr = np.asarray(value)
        except Exception as exc:  # pragma: no cover - numpy accepts nearly everything
            raise TypeError(
                f"{name}: expected an array-like of numbers, found {type(value).__name__}"
            ) from exc
        if np.iscomplexobj(arr):
            raise ComplexValueError(
                f"{name}: expected real numbers, found {type(value).__name__} with dtype "
                f"{arr.dtype}"
            )
        if arr.dtype == object or not (
            np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
        ):
            raise TypeError(
                f"{name}: expected an array-like of numbers, found {type(value).__name__} "
                f"with dtype {arr.dtype}"
            )
        if not np.issubdtype(arr.dtype, np.floating):
            arr = arr.astype(np.float64)
        t = torch.as_tensor(arr)
        if dtype is None and t.dtype != torch.float32:
            t = t.to(torch.float64)
    if t.is_complex():
        raise ComplexValueError(f"{name}: expected a real floating tensor, found dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(dtype or torch.float64)
    if (dtype is not None and t.dtype != dtype) or (
        device is not None and t.device != torch.device(device)
    ):
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t


def shape_str(shape: Sequence[Any]) -> str:
    parts = [str(s) if s is not None else "?" for s in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def check_shape(t: Tensor, name: str, expected: ShapeSpec) -> None:
    """Check ``t.shape`` against ``expected``; ``None`` entries match any size.

    String entries are symbolic names used only in the message (they match any size too).
    """
    if tuple(t.shape) == tuple(expected):
        return
    ok = t.dim() == len(expected) and all(
        not isinstance(e, int) or e == s for e, s in zip(expected, t.shape, strict=False)
    )
    if not ok:
        raise DimensionError(
            f"{name}: expected shape {shape_str(expected)}, found {shape_str(tuple(t.shape))}"
        )


def check_finite(t: Tensor, name: str) -> None:
    """Raise :class:`NonFiniteError` if ``t`` holds NaN or inf."""
    # a finite sum implies finite entries (NaN and inf propagate); the exact test runs otherwise
    if t.numel() and math.isfinite(float(t.detach().sum())):
        return
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise NonFiniteError(f"{name}: expected finite values, found {n_bad} NaN/inf entries")


def check_square(t: Tensor, name: str, n: int | None = None) -> int:
    """Check that ``t`` is an (n, n) matrix and return n."""
    if t.dim() != 2 or t.shape[0] != t.shape[1] or (n is not None and t.shape[0] != n):
        want = f"({n}, {n})" if n is not None else "(n, n)"
        raise DimensionError(
            f"{name}: expected a square matrix of shape {want}, found {shape_str(tuple(t.shape))}"
        )
    return int(t.shape[0])


def check_covariance(
    t: Tensor,
    name: str,
    n: int | None = None,
    *,
    semidefinite: bool = False,
    batched: bool = False,
) -> None:
    """Check that ``t`` is a finite symmetric positive (semi-)definite matrix.

    Parameters
    ----------
    t : Tensor
        Shape (n, n), or (..., n, n) when ``batched``.
    semidefinite : bool
        Accept singular matrices (eigenvalues down to ``-1e-10 * max|eigenvalue|``).
    """
    if batched:
        if t.dim() < 2 or t.shape[-1] != t.shape[-2] or (n is not None and t.shape[-1] != n):
            want = f"(..., {n}, {n})" if n is not None else "(..., n, n)"
            raise DimensionError(
                f"{name}: expected shape {want}, found {shape_str(tuple(t.shape))}"
            )
    else:
        check_square(t, name, n)
    check_finite(t, name)
    td = t.detach()
    scale = td.abs().amax().clamp_min(torch.finfo(td.dtype).tiny)
    tol = 1e-8 if td.dtype == torch.float64 else 1e-5
    asym = (td - td.mT).abs().amax()
    if asym > tol * scale:
        raise NotSymmetricError(
            f"{name}: expected a symmetric matrix, found max |M - M^T| = {float(asym):.3g} "
            f"(relative {float(asym / scale):.3g})"
        )
    sym = 0.5 * (td + td.mT)
    if semidefinite:
        eig_min = torch.linalg.eigvalsh(sym).amin()
        eig_tol = -(1e-10 if td.dtype == torch.float64 else 1e-6) * float(scale)
        if eig_min < eig_tol:
            raise NotPositiveDefiniteError(
                f"{name}: expected a positive semi-definite matrix, found smallest eigenvalue "
                f"{float(eig_min):.3g}"
            )
    else:
        _, info = torch.linalg.cholesky_ex(sym)
        if bool((info != 0).any()):
            eig_min = torch.linalg.eigvalsh(sym).amin()
            raise NotPositiveDefiniteError(
                f"{name}: expected a positive definite matrix, found smallest eigenvalue "
                f"{float(eig_min):.3g}"
            )


def check_batch(name: str, found: int, expected: int) -> None:
    """Raise :class:`BatchSizeError` unless ``found == expected``."""
    if found != expected:
        raise BatchSizeError(f"{name}: expected batch size {expected}, found {found}")


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, raising if it is not an integer ``>= minimum``."""
    check_not_complex(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, found {type(value).__name__}")
    if value < minimum:
        raise ParameterError(f"{name}: expected an integer >= {minimum}, found {value}")
    return int(value)


def check_positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0; TypeError for non-numbers, ParameterError otherwise."""
    check_not_complex(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number > 0, found {type(value).__name__}")
    out = float(value)
    if not (math.isfinite(out) and out > 0):
        raise ParameterError(f"{name}: expected a finite number > 0, found {value}")
    return out


def check_nonnegative_float(value: Any, name: str) -> float:
    """``value`` as a finite float >= 0; TypeError for non-numbers, ParameterError otherwise."""
    check_not_complex(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number >= 0, found {type(value).__name__}")
    out = float(value)
    if not (math.isfinite(out) and out >= 0):
        raise ParameterError(f"{name}: expected a finite number >= 0, found {value}")
    return out


def check_not_complex(value: Any, name: str) -> None:
    """Raise :class:`ComplexValueError` for a complex number, array or tensor."""
    if isinstance(value, Tensor):
        complex_ = value.is_complex()
    elif isinstance(value, (complex, np.complexfloating)):
        complex_ = True
    else:
        complex_ = isinstance(value, np.ndarray) and np.iscomplexobj(value)
    if complex_:
        raise ComplexValueError(f"{name}: expected a real number, found {value!r}")
