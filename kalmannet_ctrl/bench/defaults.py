"""The embedded default comparison of ``kalmannet-ctrl compare``."""

from __future__ import annotations

from .presets import DEFAULT_PRESET, PRESETS
from .scenario import Scenario

__all__ = ["DEFAULT_METHODS", "DEFAULT_SCENARIOS", "DEFAULT_SCENARIO_NAMES", "default_scenarios"]

#: Named scenarios: the CLI accepts these names as well as plain environment ids.
DEFAULT_SCENARIOS: dict[str, dict] = {
    "linear": {"env_id": "kalmannet_ctrl/LinearSystem-v0", "name": "LinearSystem"},
    "cartpole": {"env_id": "kalmannet_ctrl/CartPole-v1", "name": "CartPole"},
    "cartpole-large": {
        "env_id": "kalmannet_ctrl/CartPole-v1",
        "name": "CartPole (large mismatch)",
        "mismatch": {"pole_length": 0.45, "pole_mass": 2.0, "cart_mass": 0.6, "friction": 1.0},
    },
    "lorenz": {
        "env_id": "kalmannet_ctrl/Lorenz-v0",
        "name": "Lorenz (estimation)",
        "max_steps": 200,
    },
    "pendulum": {"env_id": "kalmannet_ctrl/Pendulum-v0", "name": "Pendulum (swing-up)"},
}

#: The scenarios ``kalmannet-ctrl compare`` runs with no ``--scenarios``.
DEFAULT_SCENARIO_NAMES: tuple[str, ...] = ("linear", "cartpole", "cartpole-large", "lorenz")

#: The methods of the default comparison: those of the default preset (``"quick"``).
DEFAULT_METHODS: tuple[str, ...] = PRESETS[DEFAULT_PRESET].methods


def default_scenarios(names: list[str] | None = None) -> list[Scenario]:
    """The named scenarios ``names`` (default: :data:`DEFAULT_SCENARIO_NAMES`)."""
    names = list(DEFAULT_SCENARIO_NAMES) if names is None else names
    unknown = [n for n in names if n not in DEFAULT_SCENARIOS]
    if unknown:
        raise ValueError(
            f"scenarios: unknown scenario name(s) {unknown}; expected some of "
            f"{sorted(DEFAULT_SCENARIOS)} or a registered environment id"
        )
    return [Scenario(**DEFAULT_SCENARIOS[n]) for n in names]
