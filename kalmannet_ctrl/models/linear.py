"""Linear Gaussian state-space models and python-control interop."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._validation import as_tensor, check_finite, check_shape
from ..errors import DimensionError
from .base import SystemModel, _default_dtype

__all__ = ["LinearGaussianModel"]


class LinearGaussianModel(SystemModel):
    """x_{t+1} = A x_t + B u_t + w_t,  y_t = C x_t + v_t.

    Parameters
    ----------
    A : array-like, (n_x, n_x)
    B : array-like, (n_x, n_u), optional
        Input matrix; ``None`` for an autonomous system (n_u = 0).
    C : array-like, (n_y, n_x)
    process_cov : array-like, (n_x, n_x)
        Covariance of w_t (positive semi-definite).
    measurement_cov : array-like, (n_y, n_y)
        Covariance of v_t (positive definite).
    x0_mean : array-like, (n_x,), optional
        Default zeros.
    x0_cov : array-like, (n_x, n_x), optional
        Default zeros (a known initial state).
    dt : float, optional
        Sampling period, if the model was discretized from continuous time.
    dtype, device :
        Default float64 on the CPU, or those of ``A`` when it is a tensor.

    Notes
    -----
    Tensors passed in are used as they are, so a model built from tensors with
    ``requires_grad=True`` makes every filter and simulation differentiable with respect to them.
    The Jacobians are exact (A and C).

    Shapes
    ------
    A : (n_x, n_x), B : (n_x, n_u), C : (n_y, n_x);
    f : x (B, n_x), u (B, n_u) -> (B, n_x); h : x (B, n_x) -> (B, n_y)

    Examples
    --------
    >>> import numpy as np
    >>> m = LinearGaussianModel(A=[[1.0, 1.0], [0.0, 1.0]], B=[[0.0], [1.0]], C=[[1.0, 0.0]],
    ...                         process_cov=0.01 * np.eye(2), measurement_cov=[[1.0]])
    >>> m.n_x, m.n_u, m.n_y
    (2, 1, 1)
    """

    def __init__(
        self,
        A: Any,
        B: Any = None,
        C: Any = None,
        process_cov: Any = None,
        measurement_cov: Any = None,
        x0_mean: Any = None,
        x0_cov: Any = None,
        *,
        dt: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> None:
        dtype = _default_dtype(A, dtype)
        A = as_tensor(A, "A", dtype=dtype, device=device)
        device = A.device
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise DimensionError(
                f"A: expected a square matrix (n_x, n_x), found shape {tuple(A.shape)}"
            )
        n_x = A.shape[0]
        if C is None:
            raise TypeError("C: the measurement matrix (n_y, n_x) is required")
        C = as_tensor(C, "C", dtype=dtype, device=device)
        if C.dim() != 2:
            raise DimensionError(f"C: expected a matrix (n_y, {n_x}), found shape {tuple(C.shape)}")
        check_shape(C, "C", (None, n_x))
        if B is None:
            B = torch.zeros(n_x, 0, dtype=dtype, device=device)
        else:
            B = as_tensor(B, "B", dtype=dtype, device=device)
            if B.dim() == 1:
                raise DimensionError(
                    f"B: expected a matrix ({n_x}, n_u), found shape {tuple(B.shape)}"
                )
            check_shape(B, "B", (n_x, None))
        for name, M in (("A", A), ("B", B), ("C", C)):
            check_finite(M, name)
        if process_cov is None or measurement_cov is None:
            raise TypeError("process_cov and measurement_cov are required")
        self.A, self.B, self.C = A, B, C
        super().__init__(
            n_x=n_x,
            n_u=B.shape[1],
            n_y=C.shape[0],
            process_cov=process_cov,
            measurement_cov=measurement_cov,
            x0_mean=x0_mean,
            x0_cov=x0_cov,
            dt=dt,
            dtype=dtype,
            device=device,
            **kwargs,
        )

    @property
    def is_linear(self) -> bool:
        """True: f and h are the linear maps A x + B u and C x."""
        return True

    def f(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        out = x @ self.A.mT
        if u is not None and self.n_u > 0:
            out = out + u @ self.B.mT
        return out

    def h(self, x: Tensor) -> Tensor:
        return x @ self.C.mT

    def f_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        return self.A.expand(x.shape[0], self.n_x, self.n_x)

    def h_jacobian(self, x: Tensor) -> Tensor:
        return self.C.expand(x.shape[0], self.n_y, self.n_x)

    def input_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        return self.B.expand(x.shape[0], self.n_x, self.n_u)

    def _constructor_args(self) -> dict[str, Any]:
        return {
            "A": self.A,
            "B": self.B if self.n_u > 0 else None,
            "C": self.C,
            **super()._constructor_args(),
        }

    def numpy(self) -> dict[str, np.ndarray]:
        """The model's matrices as float64 NumPy arrays (keys A, B, C, process_cov, ...).

        Shapes
        ------
        -> {A (n_x, n_x), B (n_x, n_u), C (n_y, n_x), process_cov (n_x, n_x),
        measurement_cov (n_y, n_y), x0_mean (n_x,), x0_cov (n_x, n_x)}
        """
        return {
            k: getattr(self, k).detach().cpu().numpy().astype(np.float64)
            for k in ("A", "B", "C", "process_cov", "measurement_cov", "x0_mean", "x0_cov")
        }

    # -- python-control interop --------------------------------------------------------------------
    @classmethod
    def from_control(
        cls,
        sys: Any,
        process_cov: Any,
        measurement_cov: Any,
        dt: float | None = None,
        *,
        method: str = "zoh",
        **kwargs: Any,
    ) -> LinearGaussianModel:
        """Build a model from a python-control ``StateSpace`` (or ``TransferFunction``) system.

        Parameters
        ----------
        sys : control.StateSpace or control.TransferFunction
            A continuous-time system (then ``dt`` is required and the system is discretized with
            ``method``, zero-order hold by default) or a discrete-time one (``dt`` must be None or
            equal to ``sys.dt``). The feedthrough D must be zero.
        process_cov, measurement_cov : array-like
            Noise covariances of the discrete-time model, (n_x, n_x) and (n_y, n_y).
        dt : float, optional
            Sampling period for a continuous-time system.
        method : str
            Discretization method passed to ``control.sample_system``.
        **kwargs
            ``x0_mean``, ``x0_cov``, ``dtype`` ... as in the constructor.

        Shapes
        ------
        sys with A (n_x, n_x), B (n_x, n_u), C (n_y, n_x), process_cov (n_x, n_x),
        measurement_cov (n_y, n_y) -> model with the same n_x, n_u, n_y
        """
        import control

        if isinstance(sys, control.TransferFunction):
            sys = control.tf2ss(sys)
        if not isinstance(sys, control.StateSpace):
            raise TypeError(
                "sys: expected a control.StateSpace or TransferFunction, "
                f"found {type(sys).__name__}"
            )
        if sys.isctime(strict=True):
            if dt is None:
                raise ValueError(
                    "dt: sys is a continuous-time system; "
                    "pass the sampling period dt to discretize it"
                )
            sys = control.sample_system(sys, dt, method=method)
        else:
            sys_dt = sys.dt
            # dt=True (or None) means "discrete, period unspecified"; compare by identity since
            # 1 == True would otherwise treat a period of 1 as unspecified.
            dt_known = sys_dt is not None and sys_dt is not True
            if dt is not None and dt_known and not np.isclose(float(sys_dt), dt):
                raise ValueError(f"dt: sys is discrete-time with dt={sys_dt}, found dt={dt}")
            if dt is None and dt_known:
                dt = float(sys_dt)
        D = np.asarray(sys.D, dtype=float)
        if np.any(D != 0):
            raise ValueError(
                "sys: a nonzero feedthrough D is not supported (y = C x + v), "
                f"found D with max |D| = {np.abs(D).max():.3g}"
            )
        B = np.asarray(sys.B, dtype=float)
        return cls(
            A=np.asarray(sys.A, dtype=float),
            B=B if B.shape[1] > 0 else None,
            C=np.asarray(sys.C, dtype=float),
            process_cov=process_cov,
            measurement_cov=measurement_cov,
            dt=dt,
            **kwargs,
        )

    def to_control(self) -> Any:
        """The deterministic part as a discrete-time ``control.StateSpace`` (D = 0).

        Its ``dt`` is this model's sampling period, or ``True`` (unspecified) when unknown.

        Raises
        ------
        DimensionError
            For a model without inputs and with n_x = 1 or n_y = 1, which python-control cannot
            represent (it reads a (1, 0) matrix as (0, 0)).

        Shapes
        ------
        -> StateSpace with A (n_x, n_x), B (n_x, n_u), C (n_y, n_x), D (n_y, n_u) = 0
        (python-control's own layout; its simulations are time-last)
        """
        import control

        if self.n_u == 0 and (self.n_x == 1 or self.n_y == 1):
            raise DimensionError(
                "model: python-control cannot represent a system without inputs (n_u = 0) when "
                f"n_x = 1 or n_y = 1, found n_x = {self.n_x}, n_y = {self.n_y}; give the model "
                "an input matrix B of shape (n_x, 1), e.g. zeros"
            )
        m = self.numpy()
        D = np.zeros((self.n_y, self.n_u))
        return control.ss(m["A"], m["B"], m["C"], D, dt=self.dt if self.dt is not None else True)
