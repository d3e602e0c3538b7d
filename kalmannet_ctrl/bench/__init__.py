"""The compare runner: every estimator and controller of the library on every scenario.

>>> from kalmannet_ctrl.bench import Scenario, compare, get_method
>>> results = compare([Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=50)],
...                   [get_method("lqg-oracle"), get_method("lqg-nominal")],
...                   episodes=20, progress=False)
>>> results.methods()
['lqg-oracle', 'lqg-nominal']
"""

from .cache import ArtifactCache
from .defaults import DEFAULT_METHODS, DEFAULT_SCENARIO_NAMES, DEFAULT_SCENARIOS, default_scenarios
from .executors import CellError, RayExecutor
from .methods import METHODS, BuildContext, Method, get_method, register_method
from .plots import (
    cost_figure,
    error_figure,
    gap_figure,
    mismatch_figure,
    trajectory_figure,
    write_plots,
)
from .presets import DEFAULT_PRESET, PRESETS, Preset, get_preset
from .results import CellResult, Results
from .runner import CellTask, LocalExecutor, compare, run_cell
from .scenario import Scenario
from .videos import write_videos

__all__ = [
    "DEFAULT_METHODS",
    "DEFAULT_PRESET",
    "DEFAULT_SCENARIOS",
    "DEFAULT_SCENARIO_NAMES",
    "METHODS",
    "PRESETS",
    "ArtifactCache",
    "BuildContext",
    "CellError",
    "CellResult",
    "CellTask",
    "LocalExecutor",
    "Method",
    "Preset",
    "RayExecutor",
    "Results",
    "Scenario",
    "compare",
    "cost_figure",
    "default_scenarios",
    "error_figure",
    "gap_figure",
    "get_method",
    "get_preset",
    "mismatch_figure",
    "register_method",
    "run_cell",
    "trajectory_figure",
    "write_plots",
    "write_videos",
]
