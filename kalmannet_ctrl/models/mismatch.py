"""Model mismatch: derive a "true" model from a nominal one, or a nominal model from a true one.

Each helper returns a new model and leaves its argument untouched:

- :func:`rotate_dynamics`, :func:`rotate_measurement` compose f or h with a rotation R_θ, the
  mismatch of the KalmanNet paper (Revach et al., IEEE TSP 2022, eq. (16) and Table VIII);
- :func:`scale_parameters`, :func:`set_parameters` rebuild a library model with some of its named
  physical parameters changed (e.g. a 1.5× pole length, or the Lorenz Taylor order J = 2);
- :func:`misstate_noise` scales the noise covariances (a designer's wrong noise levels).

:func:`rotation_matrix` (the Givens rotation these use) lives in :mod:`._geometry`, shared with the
Lorenz model of the library, and is re-exported here.

A rotated model is no longer built from named parameters alone: it has no ``factory`` (so apply
:func:`scale_parameters` before rotating), and its ``params`` keep the original parameters plus a
``"rotations"`` entry that records each rotation applied.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, Literal, cast

from torch import Tensor

from .._validation import check_not_complex
from ..errors import DimensionError, NonFiniteError, ParameterError
from ._geometry import rotation_matrix
from ._params import noise_parameter_kinds
from .base import NonlinearModel, SystemModel
from .linear import LinearGaussianModel

__all__ = [
    "misstate_noise",
    "rotate_dynamics",
    "rotate_measurement",
    "rotation_matrix",
    "scale_parameters",
    "set_parameters",
]

Side = Literal["left", "right"]


def rotate_dynamics(
    model: SystemModel,
    angle_deg: float | Tensor,
    plane: tuple[int, int] = (0, 1),
    *,
    side: Side = "left",
) -> SystemModel:
    """The model with its state transition composed with a rotation R = R_θ.

    ``side="left"`` (default, the KalmanNet paper's eq. (16), F' = R F): f'(x, u) = R f(x, u);
    for a :class:`LinearGaussianModel` A' = R A and B' = R B (the whole mean map is rotated, as
    in the nonlinear case). ``side="right"`` (what the paper's released code does, F' = F R):
    f'(x, u) = f(R x, u); for a linear model A' = A R, B' = B.

    Parameters
    ----------
    model : SystemModel
        Needs n_x >= 2.
    angle_deg : float or Tensor
        Rotation angle in degrees (see :func:`rotation_matrix`).
    plane : (int, int)
        Coordinate plane of the rotation, indices into the state.
    side : {"left", "right"}

    Returns
    -------
    SystemModel
        A :class:`LinearGaussianModel` for a linear model, otherwise a :class:`NonlinearModel`
        with the same h, noise, initial distribution and dt, exact Jacobians
        (R·df/dx, or df/dx(Rx)·R) and no factory.

    Shapes
    ------
    R : (n_x, n_x)
    """
    _check_model(model)
    side = _check_side(side)
    if model.n_x < 2:
        raise DimensionError(f"model: rotate_dynamics needs n_x >= 2, found n_x = {model.n_x}")
    R = rotation_matrix(model.n_x, angle_deg, plane, dtype=model.dtype, device=model.device)
    params = _record_rotation(model, "dynamics", angle_deg, plane, side)
    if isinstance(model, LinearGaussianModel):
        if side == "left":
            A, B = R @ model.A, R @ model.B
        else:
            A, B = model.A @ R, model.B
        return model.replace(A=A, B=B if model.n_u > 0 else None, params=params, factory=None)
    f, f_jac = _rotated(model.f, model.f_jacobian, R, side)
    return _nonlinear_copy(model, params, f=f, f_jacobian=f_jac)


def rotate_measurement(
    model: SystemModel,
    angle_deg: float | Tensor,
    plane: tuple[int, int] = (0, 1),
    *,
    side: Side = "left",
) -> SystemModel:
    """The model with its measurement function composed with a rotation R = R_θ.

    ``side="left"`` (default; the KalmanNet paper's Lorenz observation mismatch H' = R H):
    h'(x) = R h(x), C' = R C; needs n_y >= 2 and ``plane`` indexes the measurement.
    ``side="right"`` (the linear-canonical mismatch of the paper's released code, H' = H R):
    h'(x) = h(R x), C' = C R; needs n_x >= 2 and ``plane`` indexes the state.

    Parameters
    ----------
    model : SystemModel
    angle_deg : float or Tensor
        Rotation angle in degrees (see :func:`rotation_matrix`).
    plane : (int, int)
    side : {"left", "right"}

    Returns
    -------
    SystemModel
        A :class:`LinearGaussianModel` for a linear model, otherwise a :class:`NonlinearModel`
        with the same f, noise, initial distribution and dt, exact Jacobians and no factory.

    Shapes
    ------
    R : (n_y, n_y) for side="left", (n_x, n_x) for side="right"
    """
    _check_model(model)
    side = _check_side(side)
    if side == "left":
        if model.n_y < 2:
            raise DimensionError(
                f"model: rotate_measurement(side='left') needs n_y >= 2, found n_y = {model.n_y}; "
                "use side='right' to rotate the state seen by h"
            )
        n = model.n_y
    else:
        if model.n_x < 2:
            raise DimensionError(
                f"model: rotate_measurement(side='right') needs n_x >= 2, found n_x = {model.n_x}"
            )
        n = model.n_x
    R = rotation_matrix(n, angle_deg, plane, dtype=model.dtype, device=model.device)
    params = _record_rotation(model, "measurement", angle_deg, plane, side)
    if isinstance(model, LinearGaussianModel):
        C = R @ model.C if side == "left" else model.C @ R
        return model.replace(C=C, params=params, factory=None)
    h, h_jac = _rotated(model.h, model.h_jacobian, R, side)
    return _nonlinear_copy(model, params, h=h, h_jacobian=h_jac)


def scale_parameters(model: SystemModel, **factors: float) -> SystemModel:
    """Rebuild a model with some named parameters multiplied by factors.

    Example: ``scale_parameters(cartpole(), pole_length=1.5, pole_mass=0.8)``.

    Parameters
    ----------
    model : SystemModel
        A model built from named parameters (by a function of
        :mod:`kalmannet_ctrl.models.library`), i.e. one with a ``factory``.
    **factors : float
        Positive finite factors keyed by parameter name. An integer parameter (e.g. the Lorenz
        ``order``) must stay an integer.

    Raises
    ------
    ParameterError
        A name is not one of ``model.params``, a factor is not positive, a parameter is not
        numeric, or the model has no factory.
    NonFiniteError
        A factor is NaN or infinite.

    Shapes
    ------
    The result has the dimensions its factory gives (unchanged unless a dimension parameter such
    as ``n`` is scaled).
    """
    _check_model(model)
    _check_rebuildable(model, "scale_parameters", factors)
    new: dict[str, Any] = {}
    for name, factor in factors.items():
        check_not_complex(factor, f"scale_parameters: factor for {name!r}")
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
            raise ParameterError(
                f"scale_parameters: factor for {name!r}: expected a positive number, "
                f"found {type(factor).__name__}"
            )
        factor = float(factor)
        if not math.isfinite(factor):
            raise NonFiniteError(
                f"scale_parameters: factor for {name!r}: expected a finite number, found {factor}"
            )
        if factor <= 0:
            raise ParameterError(
                f"scale_parameters: factor for {name!r}: expected a positive number, found {factor}"
            )
        value = model.params[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ParameterError(
                f"scale_parameters: parameter {name!r} is not a number (found {value!r}); "
                "use set_parameters to change it"
            )
        scaled = value * factor
        if isinstance(value, numbers.Integral):
            if not float(scaled).is_integer():
                raise ParameterError(
                    f"scale_parameters: parameter {name!r} is an integer ({value}); factor "
                    f"{factor} gives {scaled}, which is not; use set_parameters"
                )
            scaled = round(scaled)
        new[name] = scaled
    return model.with_params(**new)


def set_parameters(model: SystemModel, **values: Any) -> SystemModel:
    """Rebuild a model with some named parameters set to new values.

    Example: ``set_parameters(lorenz(), order=2)`` (the KalmanNet paper's evolution mismatch).

    Parameters
    ----------
    model : SystemModel
        A model with a ``factory`` (built by :mod:`kalmannet_ctrl.models.library`).
    **values
        New values keyed by parameter name; validated by the model's factory.

    Raises
    ------
    ParameterError
        A name is not one of ``model.params``, or the model has no factory.

    Shapes
    ------
    The result has the dimensions its factory gives (e.g. ``n`` of :func:`linear_canonical`).
    """
    _check_model(model)
    _check_rebuildable(model, "set_parameters", values)
    return model.with_params(**values)


def misstate_noise(
    model: SystemModel,
    *,
    process_scale: float = 1.0,
    measurement_scale: float = 1.0,
) -> SystemModel:
    """The model with its noise covariances multiplied by scalars.

    ``process_cov' = process_scale · process_cov``,
    ``measurement_cov' = measurement_scale · measurement_cov``; everything else is unchanged.
    For a library model the named noise parameters in ``params`` are updated to match (variances
    by the scale, standard deviations by its square root), so the factory keeps working. For
    other models whose covariances change, the factory is dropped and ``params`` records the
    scales as ``process_noise_scale`` and ``measurement_noise_scale``.

    Parameters
    ----------
    model : SystemModel
    process_scale : float
        Finite, >= 0 (0 removes the process noise).
    measurement_scale : float
        Finite, > 0.

    Shapes
    ------
    process_cov : (n_x, n_x), measurement_cov : (n_y, n_y), unchanged.
    """
    _check_model(model)
    p = _scale_value(process_scale, "process_scale", allow_zero=True)
    r = _scale_value(measurement_scale, "measurement_scale", allow_zero=False)
    params = dict(model.params)
    factory = model.factory
    kinds = noise_parameter_kinds(factory) if factory is not None else None
    if kinds is not None and all(name in params for name in kinds):
        for name, (kind, power) in kinds.items():
            scale = p if kind == "process" else r
            params[name] = params[name] * scale**power
    elif p != 1.0 or r != 1.0:
        factory = None
        params["process_noise_scale"] = params.get("process_noise_scale", 1.0) * p
        params["measurement_noise_scale"] = params.get("measurement_noise_scale", 1.0) * r
    return model.replace(
        process_cov=p * model.process_cov,
        measurement_cov=r * model.measurement_cov,
        params=params,
        factory=factory,
    )


# -- helpers ---------------------------------------------------------------------------------------
def _check_model(model: Any) -> None:
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")


def _check_side(side: Any) -> Side:
    if side not in ("left", "right"):
        raise ValueError(f"side: expected 'left' or 'right', found {side!r}")
    return cast(Side, side)


def _scale_value(value: Any, name: str, *, allow_zero: bool) -> float:
    check_not_complex(value, name)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, found {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteError(f"{name}: expected a finite number, found {value}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ParameterError(f"{name}: expected a number {bound}, found {value}")
    return value


def _check_rebuildable(model: SystemModel, caller: str, names: dict[str, Any]) -> None:
    if model.factory is None:
        raise ParameterError(
            f"{caller}: model {model.name!r} has no factory to rebuild it from named parameters "
            "(rotated and linearized-without-factory models have none); build it with "
            "kalmannet_ctrl.models.library and apply this before any rotation"
        )
    model._check_param_names(names, caller)


def _record_rotation(
    model: SystemModel, target: str, angle_deg: Any, plane: tuple[int, int], side: str
) -> dict[str, Any]:
    angle = float(angle_deg.detach()) if isinstance(angle_deg, Tensor) else float(angle_deg)
    record = {
        "target": target,
        "angle_deg": angle,
        "plane": tuple(int(k) for k in plane),
        "side": side,
    }
    params = dict(model.params)
    params["rotations"] = (*params.get("rotations", ()), record)
    return params


def _rotated(
    fn: Callable[..., Tensor], jac: Callable[..., Tensor], R: Tensor, side: Side
) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """``fn`` (f or h) and its Jacobian ``jac`` composed with the rotation ``R``.

    Left: fn'(x, ...) = R fn(x, ...), jac' = R jac; right: fn'(x, ...) = fn(R x, ...),
    jac'(x, ...) = jac(R x, ...) R. The further arguments (f's u) are passed through.

    Shapes
    ------
    x : (B, n_x) -> fn' (B, n), jac' (B, n, n_x); R : (n, n) for side="left", (n_x, n_x) for
    side="right"
    """
    if side == "left":

        def rotated(x: Tensor, *rest: Tensor) -> Tensor:
            return fn(x, *rest) @ R.mT

        def rotated_jac(x: Tensor, *rest: Tensor) -> Tensor:
            return R @ jac(x, *rest)

    else:

        def rotated(x: Tensor, *rest: Tensor) -> Tensor:
            return fn(x @ R.mT, *rest)

        def rotated_jac(x: Tensor, *rest: Tensor) -> Tensor:
            return jac(x @ R.mT, *rest) @ R

    return rotated, rotated_jac


def _nonlinear_copy(
    model: SystemModel, params: dict[str, Any], **functions: Callable[..., Tensor]
) -> NonlinearModel:
    """A NonlinearModel with ``model``'s f, h, Jacobians, noise, x_0 distribution and dt, the
    ``functions`` given (f and f_jacobian, or h and h_jacobian) instead, ``params`` and no
    factory."""
    own = {
        "f": model.f,
        "f_jacobian": model.f_jacobian,
        "h": model.h,
        "h_jacobian": model.h_jacobian,
    }
    return NonlinearModel(**(own | functions), **model._system_args(params=params, factory=None))
