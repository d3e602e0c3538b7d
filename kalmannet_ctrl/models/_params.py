"""Helpers shared by the model library and the mismatch helpers: parameter checks and records.

- :func:`_real`, :func:`_int` validate a library factory's scalar arguments (a
  :class:`~kalmannet_ctrl.errors.ParameterError` that names the argument);
- :func:`_freeze` records an array-like argument in a model's JSON-friendly ``params``;
- :func:`_factory` binds a library function's ``dtype`` and ``device`` (a model's ``factory``);
- :func:`_noise_parameters` (a decorator on each library function) and
  :func:`noise_parameter_kinds` say which named parameters set a model's noise covariances, so
  that :func:`~kalmannet_ctrl.models.misstate_noise` can keep a library model rebuildable;
- :func:`_selector` and ``_RESET_VAR`` are shared by the mechanical systems.

The library (:mod:`kalmannet_ctrl.models.library`) and :mod:`kalmannet_ctrl.models.mismatch`
both import this module and neither imports the other.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..errors import ParameterError

if TYPE_CHECKING:
    from .base import SystemModel

__all__ = ["noise_parameter_kinds"]

Dtype = torch.dtype
Device = torch.device | str | None
NoiseKinds = dict[str, tuple[str, float]]
_F = TypeVar("_F", bound=Callable[..., Any])

_RESET_VAR = 0.05**2 / 3.0  # variance of U(-0.05, 0.05)


# -- noise parameters ------------------------------------------------------------------------------
# Which entries of ``params`` set the noise covariances, per library function: name -> (kind,
# power), where kind is "process" or "measurement" and multiplying that covariance by s multiplies
# the parameter by s**power (power 1 for variances, 0.5 for standard deviations). Filled by
# ``_noise_parameters`` when each library module is imported, i.e. before any of its models exists.
_NOISE_PARAMETERS: dict[Callable[..., SystemModel], NoiseKinds] = {}


def _noise_parameters(**kinds: tuple[str, float]) -> Callable[[_F], _F]:
    """Decorator: record ``kinds`` (name -> (kind, power)) for a library function, unchanged."""

    def register(func: _F) -> _F:
        _NOISE_PARAMETERS[func] = kinds
        return func

    return register


def noise_parameter_kinds(factory: Callable[..., Any]) -> dict[str, tuple[str, float]] | None:
    """The noise parameters of a library factory (see ``_NOISE_PARAMETERS``), or None.

    Parameters
    ----------
    factory : callable
        A model's ``factory``: a library function, or a :func:`functools.partial` of one.

    Returns
    -------
    dict or None
        ``{name: (kind, power)}`` with kind ``"process"`` or ``"measurement"``; None for a
        function that is not a library function.

    Shapes
    ------
    factory -> {name: (kind, power)} or None (scalars: names of ``model.params`` entries)
    """
    func = factory.func if isinstance(factory, functools.partial) else factory
    return _NOISE_PARAMETERS.get(func)


# -- parameters and factories ----------------------------------------------------------------------
def _factory(
    func: Callable[..., SystemModel], dtype: Dtype, device: Device
) -> Callable[..., SystemModel]:
    return functools.partial(func, dtype=dtype, device=device)


def _selector(rows: tuple[int, ...], n: int, x: Tensor) -> Tensor:
    """The (B, len(rows), n) Jacobian of x -> x[..., rows], for x (B, n)."""
    S = torch.eye(n, dtype=x.dtype, device=x.device)[list(rows)]
    return S.expand(*x.shape[:-1], len(rows), n)


def _real(value: Any, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float, optionally ``> minimum`` (strict) or ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name}: expected a real number, found {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ParameterError(f"{name}: expected a finite number, found {value}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ParameterError(f"{name}: expected a number {bound}, found {value:g}")
    return value


def _int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name}: expected an integer >= {minimum}, found {value!r}")
    if value < minimum:
        raise ParameterError(f"{name}: expected an integer >= {minimum}, found {value}")
    return int(value)


def _freeze(value: Any) -> Any:
    """A JSON-friendly copy (nested tuples of floats) of an array-like, or None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return _tuples(np.asarray(value, dtype=np.float64).tolist())


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
