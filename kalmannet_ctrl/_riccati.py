"""The stabilizing solution of the discrete algebraic Riccati equation (internal module).

One solver serves the regulator (LQR) and, by duality, the stationary Kalman filter.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from .errors import RiccatiError

__all__ = ["solve_dare"]

_STABILITY_MARGIN = 1e-9


def solve_dare(
    A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray, *, kind: str, hint: str
) -> tuple[np.ndarray, np.ndarray]:
    """Stabilizing P = A'PA − A'PB (R + B'PB)^{-1} B'PA + Q and its gain K = (R + B'PB)^{-1} B'PA.

    SciPy's solver may return a non-stabilizing solution instead of failing (for instance with
    an unreachable mode on the unit circle), so the closed loop A − BK is checked as well.

    Parameters
    ----------
    A, B, Q, R : ndarray
        (n, n), (n, m), (n, n), (m, m), float64.
    kind : str
        "control" or "filter": which equation the messages name.
    hint : str
        What the error message says the caller should check.

    Raises
    ------
    RiccatiError
        If there is no stabilizing solution; the message names ``model`` and carries ``hint``.
    """
    try:
        P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise RiccatiError(
            f"model: the {kind} Riccati equation has no stabilizing solution ({exc}); {hint}"
        ) from exc
    if not np.all(np.isfinite(P)):
        raise RiccatiError(f"model: the {kind} Riccati equation returned non-finite values; {hint}")
    P = 0.5 * (P + P.T)
    K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
    rho = float(np.max(np.abs(np.linalg.eigvals(A - B @ K)))) if A.size else 0.0
    if rho >= 1.0 - _STABILITY_MARGIN:
        raise RiccatiError(
            f"model: the {kind} Riccati equation has no stabilizing solution: its closed loop has "
            f"spectral radius {rho:.6g} (expected < 1); {hint}"
        )
    return P, K
