"""The optional dependencies of :mod:`kalmannet_ctrl.rl`, imported on use with an install hint."""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError

__all__ = ["CONTRIB_INSTALL_HINT", "INSTALL_HINT", "algorithm_class", "require_sb3"]

INSTALL_HINT = 'pip install "stable-baselines3>=2.3" (a dependency of kalmannet-ctrl)'
CONTRIB_INSTALL_HINT = 'pip install "kalmannet-ctrl[rl]" (or "sb3-contrib>=2.3")'

#: The algorithms of sb3-contrib that :func:`algorithm_class` knows (class names).
CONTRIB_ALGORITHMS: tuple[str, ...] = ("RecurrentPPO",)


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


def algorithm_class(name: str) -> Any:
    """The Stable-Baselines3 (or sb3-contrib) algorithm class called ``name`` ("PPO", "SAC",
    "RecurrentPPO", ...).

    Raises
    ------
    MissingDependencyError
        If the package that holds it is not installed; the message holds the pip command.
    AttributeError
        If neither package has an algorithm of that name.
    """
    if name in CONTRIB_ALGORITHMS:
        try:
            import sb3_contrib
        except ImportError as exc:
            raise MissingDependencyError(
                f"sb3_contrib is needed for {name} but is not installed: {CONTRIB_INSTALL_HINT}"
            ) from exc
        return getattr(sb3_contrib, name)
    return getattr(require_sb3(), name)
