"""The optional dependencies of :mod:`kalmannet_ctrl.rl`, imported on use with an install hint."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError

__all__ = ["INSTALL_HINT", "require_sb3"]

INSTALL_HINT = 'pip install "stable-baselines3>=2.3" (a dependency of kalmannet-ctrl)'


def require_sb3() -> Any:
    """Import and return ``stable_baselines3``.

    Raises
    ------
    MissingDependencyError
        If Stable-Baselines3 is not installed; the message holds the pip command.
    """
    try:
        import stable_baselines3
    except ImportError as exc:
        raise MissingDependencyError(
            f"stable_baselines3 is needed for RL policies but is not installed: {INSTALL_HINT}"
        ) from exc
    return stable_baselines3
