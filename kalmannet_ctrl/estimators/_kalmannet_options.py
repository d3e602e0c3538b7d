"""The option checks of :class:`~kalmannet_ctrl.estimators.KalmanNet`'s constructor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import ParameterError
from ..models.base import SystemModel

_FEATURES = ("F1", "F2", "F3", "F4")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_GAIN_INITS = ("zero", "reference")


def _check_options(
    model: Any, architecture: Any, normalize_features: Any, generator: Any, gain_init: Any
) -> None:
    """The type and choice checks of :class:`KalmanNet`'s constructor, in its argument order."""
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    if isinstance(architecture, bool) or architecture not in (1, 2):
        raise ParameterError(f"architecture: expected 1 or 2, found {architecture!r}")
    if not isinstance(normalize_features, bool):
        raise TypeError(
            f"normalize_features: expected a bool, found {type(normalize_features).__name__}"
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator: expected a torch.Generator or None, found {type(generator).__name__}"
        )
    if gain_init not in _GAIN_INITS:
        raise ParameterError(
            f"gain_init: expected one of {list(_GAIN_INITS)}, found {gain_init!r}"
        )


def _check_architecture_options(
    architecture: int, *, arch1: dict[str, Any], arch2: dict[str, Any]
) -> None:
    """Reject options given for the other architecture (``arch1``/``arch2``: name -> value)."""
    other = arch2 if architecture == 1 else arch1
    given = sorted(k for k, v in other.items() if v is not None)
    if given:
        hint = (
            "in_mult and out_mult are for architecture 2"
            if architecture == 1
            else "features and the layer sizes are for architecture 1"
        )
        raise ParameterError(
            f"{', '.join(given)}: not an option of architecture {architecture} ({hint})"
        )


def _parse_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, str):
        if dtype.removeprefix("torch.") not in _DTYPES:
            raise ParameterError(f"dtype: expected 'float32' or 'float64', found {dtype!r}")
        return _DTYPES[dtype.removeprefix("torch.")]
    if dtype not in (torch.float32, torch.float64):
        raise ParameterError(f"dtype: expected torch.float32 or torch.float64, found {dtype!r}")
    return dtype


def _parse_features(features: Sequence[str] | None) -> tuple[str, ...]:
    if features is None:
        return _FEATURES
    if isinstance(features, str):
        features = [features]
    chosen = list(features)
    unknown = [f for f in chosen if f not in _FEATURES]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ParameterError(
            f"features: expected distinct names among {list(_FEATURES)}, found {chosen!r}"
        )
    return tuple(f for f in _FEATURES if f in chosen)
