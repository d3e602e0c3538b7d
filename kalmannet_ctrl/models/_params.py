"""Helpers shared by the model library and the mismatch helpers: parameter checks and records.

- :func:`_library_function`, the decorator of every library function: it checks the function's
  named parameters (with :func:`_real`, :func:`_int` and the checks built on them, each raising a
  :class:`~kalmannet_ctrl.errors.ParameterError` that names the argument), records them in the
  model's JSON-friendly ``params`` (:func:`_freeze` for the array-likes), binds the function's
  ``dtype`` and ``device`` as the model's ``factory`` (:func:`_factory`) and records which named
  parameters set the noise covariances (:func:`noise_parameter_kinds`), so that
  :func:`~kalmannet_ctrl.models.misstate_noise` can keep a library model rebuildable;
- :func:`_selector` and ``_RESET_VAR`` are shared by the mechanical systems.

The library (:mod:`kalmannet_ctrl.models.library`) and :mod:`kalmannet_ctrl.models.mismatch`
both import this module and neither imports the other.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import numpy as np
import torch
from torch import Tensor

from .._validation import check_not_complex
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
class _Noise(NamedTuple):
    """The named parameters of a library function that set its model's noise covariances.

    ``process`` and ``measurement`` name those of process_cov and measurement_cov; multiplying a
    covariance by s multiplies its parameters by s**power (``power`` 1 for variances, 0.5 for
    standard deviations). A process-noise parameter is checked >= 0 (0: no process noise), a
    measurement-noise one > 0 (measurement_cov is positive definite).
    """

    process: tuple[str, ...]
    measurement: tuple[str, ...]
    power: float

    def kinds(self) -> NoiseKinds:
        """name -> (kind, power), kind "process" or "measurement"."""
        kinds = {name: ("process", self.power) for name in self.process}
        return kinds | {name: ("measurement", self.power) for name in self.measurement}


# The noise parameters of each library function (see _Noise.kinds). Filled by
# ``_library_function`` when each library module is imported, i.e. before any of its models exists.
_NOISE_PARAMETERS: dict[Callable[..., SystemModel], NoiseKinds] = {}

# the arguments of every library function that are not checked: recorded (the initial
# distribution, by _freeze) or bound in the factory (dtype and device)
_RECORDED = ("x0_mean", "x0_cov")
_BOUND = ("dtype", "device")


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


# -- library functions -----------------------------------------------------------------------------
def _library_function(
    *,
    noise: _Noise,
    real: tuple[str, ...] = (),
    positive: tuple[str, ...] = (),
    nonnegative: tuple[str, ...] = (),
    count: tuple[str, ...] = (),
    choices: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[_F], _F]:
    """Decorator of a library function: checks and records its named parameters.

    Every argument but x0_mean, x0_cov, dtype and device is named once, in ``noise`` (checked as
    :class:`_Noise` says) or in one check: ``real`` (a finite number), ``positive`` (> 0),
    ``nonnegative`` (>= 0), ``count`` (an integer >= 1) or ``choices`` (name -> the strings
    allowed). The decorated function checks them in the order of its signature, calls the
    function with the checked values (floats, ints), and gives the model it returns ``params``
    (every argument but dtype and device, x0_mean and x0_cov through :func:`_freeze`),
    ``factory`` (the decorated function with the model's dtype and device bound) and ``name``
    (the function's). ``noise`` is recorded for :func:`noise_parameter_kinds`.
    """
    checks: dict[str, Callable[[Any, str], Any]] = {
        **dict.fromkeys(real, _real),
        **dict.fromkeys((*positive, *noise.measurement), _positive),
        **dict.fromkeys((*nonnegative, *noise.process), _nonnegative),
        **dict.fromkeys(count, _count),
        **{name: _one_of(*allowed) for name, allowed in (choices or {}).items()},
    }

    def decorate(func: _F) -> _F:
        signature = inspect.signature(func)
        assert sorted(checks) == sorted(set(signature.parameters) - {*_RECORDED, *_BOUND}), func

        @functools.wraps(func)
        def build(*args: Any, **kwargs: Any) -> SystemModel:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return func(*args, **kwargs)  # a wrong call: Python's own error
            bound.apply_defaults()
            values = {
                name: checks[name](value, name) if name in checks else value
                for name, value in bound.arguments.items()
            }
            model = func(**values)
            model.params = {
                name: _freeze(value) if name in _RECORDED else value
                for name, value in values.items()
                if name not in _BOUND
            }
            model.factory = _factory(build, values["dtype"], values["device"])
            model.name = func.__name__
            return model

        _NOISE_PARAMETERS[build] = noise.kinds()
        return cast(_F, build)

    return decorate


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
    check_not_complex(value, name)
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


def _positive(value: Any, name: str) -> float:
    return _real(value, name, minimum=0.0, strict=True)


def _nonnegative(value: Any, name: str) -> float:
    return _real(value, name, minimum=0.0)


def _count(value: Any, name: str) -> int:
    return _int(value, name, minimum=1)


def _one_of(*allowed: str) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if value not in allowed:
            expected = " or ".join(repr(a) for a in allowed)
            raise ParameterError(f"{name}: expected {expected}, found {value!r}")
        return cast(str, value)

    return check


def _freeze(value: Any) -> Any:
    """A JSON-friendly copy (nested tuples of floats) of an array-like, or None."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return _tuples(np.asarray(value, dtype=np.float64).tolist())


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
