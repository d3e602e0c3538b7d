"""Checkpoints of trainable estimators: state_dict + JSON-able config, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_path
from ..errors import CheckpointError

__all__ = ["load_checkpoint", "save_checkpoint"]

_FORMAT = "kalmannet_ctrl.checkpoint/1"


def save_checkpoint(estimator: nn.Module, path: str | os.PathLike[str], **metadata: Any) -> Path:
    """Save ``estimator``'s weights and constructor config to ``path`` atomically.

    The file holds ``{"format", "class", "config", "state_dict", "metadata"}``; ``config`` comes
    from ``estimator.config()`` and ``metadata`` must be JSON-able (e.g. the training record).
    Whole objects are never pickled: :func:`load_checkpoint` reads it with ``weights_only=True``.
    """
    if not isinstance(estimator, nn.Module):
        raise TypeError(f"estimator: expected a torch.nn.Module, found {type(estimator).__name__}")
    config = estimator.config() if hasattr(estimator, "config") else {}
    try:
        json.dumps(config)
        json.dumps(metadata)
    except TypeError as exc:
        raise TypeError(f"estimator.config() and metadata must be JSON-able ({exc})") from exc
    payload = {
        "format": _FORMAT,
        "class": type(estimator).__name__,
        "config": json.dumps(config),
        "metadata": json.dumps(metadata),
        "state_dict": {k: v.detach().cpu() for k, v in estimator.state_dict().items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(
    path: str | os.PathLike[str], cls: type[nn.Module], *args: Any, **kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild ``cls(*args, **config, **kwargs)`` from a checkpoint and load its weights.

    ``args`` carries what is not saved (e.g. the nominal model). Returns the estimator (in
    evaluation mode) and the checkpoint's metadata.

    Raises
    ------
    CheckpointError
        For a missing, truncated or foreign file, another class, or weights that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"path: no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"path: {path} is not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"path: {path} is not a kalmannet_ctrl checkpoint")
    if payload.get("class") != cls.__name__:
        raise CheckpointError(
            f"cls: the checkpoint holds a {payload.get('class')}, found cls={cls.__name__}"
        )
    try:
        config = json.loads(payload["config"])
        metadata = json.loads(payload["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"path: {path} has an unreadable config ({exc})") from exc
    estimator = cls(*args, **{**config, **kwargs})
    try:
        estimator.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, RuntimeError) as exc:
        raise CheckpointError(
            f"path: the weights in {path} do not fit {cls.__name__} ({exc})"
        ) from exc
    estimator.eval()
    return estimator, metadata
