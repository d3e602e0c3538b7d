"""Figures of a comparison: costs with CIs, estimation error over time, sample trajectories,
and cost against the size of a model mismatch.

The builders return :class:`matplotlib.figure.Figure` objects made without ``pyplot`` (no global
figure registry, no display backend needed); :func:`write_plots` writes them as PNG files.
matplotlib is imported only when a figure is built (it comes with the ``bench`` extra).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_write
from ._figures import DPI, check_results, method_colours, new_figure, require_matplotlib
from .gap_figure import _closed_cells, gap_figure
from .results import CellResult, Results
from .trajectories import has_samples, trajectory_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "cost_figure",
    "error_figure",
    "gap_figure",
    "mismatch_figure",
    "trajectory_figure",
    "write_plots",
]

log = logging.getLogger(__name__)

_ORACLE_HATCH = "//"
_COST_LABEL = "average cost per step"
_MSE_LABEL = "estimation MSE [dB]"


def _spans_decades(values: Sequence[float], decades: float = 2.0) -> bool:
    """Whether positive ``values`` span more than ``decades`` powers of ten (log axis wanted)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if finite.size < 2 or (finite <= 0).any():
        return False
    return bool(np.log10(finite.max() / finite.min()) > decades)


def _short_env(env_id: str) -> str:
    return env_id.split("/")[-1].removesuffix("-v0")


# --------------------------------------------------------------------------------------- costs


def cost_figure(results: Results) -> Figure:
    """Bar chart of the average cost per step of every method, one panel per scenario.

    Each bar carries its 95 % confidence interval (``cost_ci95``) as error bar; the oracle's bar
    is hatched. A panel whose costs span more than two decades gets a log axis. A scenario whose
    methods are all estimation-only (``measure == "mse"``: zero input, so the same cost for
    every method) shows their estimation MSE in dB instead.

    Parameters
    ----------
    results : Results
        The cells of a comparison.

    Returns
    -------
    matplotlib.figure.Figure
        Panels titled with the scenario labels, in the order of ``results.scenarios()``; in each,
        one bar per method in the order of the cells.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    TypeError, ValueError
        When ``results`` is not a :class:`Results` or holds no cell.
    """
    require_matplotlib()
    from matplotlib.patches import Patch

    cells = check_results(results)
    colours = method_colours(results)
    scenarios = results.scenarios()
    fig, axes = new_figure(len(scenarios), ncols=3, width=4.6, height=3.8)
    any_oracle = False
    for ax, scenario in zip(axes, scenarios, strict=True):
        group = [c for c in cells if c.scenario == scenario]
        x = np.arange(len(group))
        estimation = all(c.measure == "mse" for c in group)
        if estimation:  # zero input: every method's cost is the same, the estimates differ
            costs = [float(c.mse_db) for c in group]
            errors = [math.nan] * len(group)
        else:
            costs = [float(c.cost) for c in group]
            errors = [float(c.cost_ci95) for c in group]
        bars = ax.bar(
            x,
            costs,
            yerr=errors,
            color=[colours[c.method] for c in group],
            edgecolor="black",
            linewidth=0.6,
            capsize=4,
            error_kw={"elinewidth": 1.0},
        )
        for patch, cell in zip(bars.patches, group, strict=True):
            patch.set_label(cell.method)
            if cell.oracle:
                patch.set_hatch(_ORACLE_HATCH)
                any_oracle = True
        ax.set_xticks(x, [c.method for c in group], rotation=30, ha="right", fontsize=8)
        ax.set_title(scenario, fontsize=10)
        ax.set_ylabel(_MSE_LABEL if estimation else _COST_LABEL)
        if not estimation and _spans_decades(costs):
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    if any_oracle:
        fig.legend(
            handles=[
                Patch(
                    facecolor="white",
                    edgecolor="black",
                    hatch=_ORACLE_HATCH,
                    label="oracle (true model)",
                )
            ],
            loc="outside upper right",
            fontsize=8,
        )
    fig.suptitle("Cost per step (± 95 % CI); MSE where the input is zero")
    return fig


# ------------------------------------------------------------------------------ error over time


def _has_curve(cell: CellResult) -> bool:
    curve = cell.mse_db_per_step
    return bool(curve) and any(math.isfinite(float(v)) for v in curve)


def _error_scenarios(results: Results) -> list[str]:
    return [
        s for s in results.scenarios() if any(_has_curve(c) for c in results if c.scenario == s)
    ]


def error_figure(results: Results) -> Figure:
    """Estimation MSE in dB over time, one panel per scenario and one line per method.

    Methods without an estimation-error curve (controllers without ``estimate``) are left out,
    and so are scenarios where no method has one.

    Parameters
    ----------
    results : Results

    Returns
    -------
    matplotlib.figure.Figure
        Panels titled with the scenario labels; each line's y data is a cell's
        ``mse_db_per_step`` (x: the time step 0, 1, …), labelled with the method's name.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    ValueError
        When no cell has an estimation-error curve.
    """
    require_matplotlib()
    cells = check_results(results)
    scenarios = _error_scenarios(results)
    if not scenarios:
        raise ValueError(
            "results: no cell has an estimation-error curve (mse_db_per_step); "
            "none of the methods exposes an estimate"
        )
    colours = method_colours(results)
    fig, axes = new_figure(len(scenarios), ncols=2, width=5.6, height=3.6)
    for ax, scenario in zip(axes, scenarios, strict=True):
        for cell in cells:
            if cell.scenario != scenario or not _has_curve(cell):
                continue
            curve = np.asarray(cell.mse_db_per_step, dtype=float)
            ax.plot(
                np.arange(curve.size),
                curve,
                color=colours[cell.method],
                linestyle="--" if cell.oracle else "-",
                linewidth=1.1,
                label=cell.method + (" (oracle)" if cell.oracle else ""),
            )
        ax.set_title(scenario, fontsize=10)
        ax.set_xlabel("time step")
        ax.set_ylabel("estimation MSE [dB]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Estimation error over time (mean over episodes)")
    return fig


# ------------------------------------------------------------------------------------ mismatch


def _mismatch(cell: CellResult) -> dict[str, Any]:
    spec = cell.scenario_spec or {}
    mm = spec.get("mismatch") or {}
    return dict(mm) if isinstance(mm, dict) else {}


def _value(cell: CellResult, parameter: str) -> float:
    value = _mismatch(cell)[parameter]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"parameter: the mismatch value {value!r} of {parameter!r} in scenario "
            f"{cell.scenario!r} is not a number"
        ) from None


def _has_parameter(results: Results, parameter: str) -> bool:
    return any(parameter in _mismatch(c) for c in results)


def mismatch_figure(results: Results, parameter: str) -> Figure:
    """Cost (with its 95 % CI) against the value of one mismatch parameter, a line per method.

    Uses the cells whose ``scenario_spec["mismatch"]`` sets ``parameter``: scenarios of the same
    environment that differ in it. Each sweep (one environment, the same other mismatch values,
    episode length and constructor arguments) gives a line per method; with several sweeps the
    labels name the environment and the rest of the sweep. Scenarios that set ``parameter`` but
    are alone in their sweep are left out when a sweep with two values or more exists.

    Parameters
    ----------
    results : Results
    parameter : str
        A key of the env's ``mismatch``, e.g. ``"pole_length"``.

    Returns
    -------
    matplotlib.figure.Figure
        One panel; each line (an errorbar plot labelled with the method) has x data the values
        of ``parameter`` in increasing order and y data the costs, with ``cost_ci95`` as error
        bars.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    TypeError
        When ``parameter`` is not a string.
    ValueError
        When no cell's scenario sets ``parameter`` in its mismatch.
    """
    require_matplotlib()
    cells = check_results(results)
    if not isinstance(parameter, str):
        raise TypeError(f"parameter: expected a str, found {type(parameter).__name__}")
    used = [c for c in cells if parameter in _mismatch(c)]
    if not used:
        present = sorted({k for c in cells for k in _mismatch(c)})
        raise ValueError(
            f"parameter: no cell's scenario sets the mismatch parameter {parameter!r}; the "
            f"mismatch parameters present are {present} (scenarios run with the env's default "
            "mismatch set none)"
        )
    # A sweep: the cells of one environment (same other mismatch values, episode length and
    # constructor arguments) that differ in ``parameter``; a line per sweep and method.
    sweeps: dict[tuple[str, str], dict[str, list[CellResult]]] = {}
    for c in used:
        env_id = str(c.scenario_spec.get("env_id", c.env_id))
        others = ", ".join(
            f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
            for k, v in sorted(_mismatch(c).items())
            if k != parameter
        )
        kwargs = c.scenario_spec.get("env_kwargs") or {}
        context = ", ".join(
            p for p in (others, f"T={c.steps}", ", ".join(f"{k}={kwargs[k]}" for k in kwargs)) if p
        )
        sweeps.setdefault((env_id, context), {}).setdefault(c.method, []).append(c)
    # Prefer real sweeps (two values or more) over isolated scenarios that happen to set it.
    real = {
        k: v
        for k, v in sweeps.items()
        if len({_value(c, parameter) for g in v.values() for c in g}) > 1
    }
    sweeps = real or sweeps
    colours = method_colours(results)
    styles = ["-", ":", "-.", (0, (5, 1))]
    fig, (ax,) = new_figure(1, ncols=1, width=6.8, height=4.4)
    all_costs: list[float] = []
    for s, ((env, context), by_method) in enumerate(sweeps.items()):
        for method, group in by_method.items():
            group = sorted(group, key=lambda c: _value(c, parameter))
            xs = np.array([_value(c, parameter) for c in group])
            ys = np.array([float(c.cost) for c in group])
            all_costs += ys.tolist()
            oracle = group[0].oracle
            label = method + (" (oracle)" if oracle else "")
            if len(sweeps) > 1:
                label += f" — {_short_env(env)} ({context})"
                style = styles[s % len(styles)]
            else:
                style = "--" if oracle else "-"
            ax.errorbar(
                xs,
                ys,
                yerr=np.array([float(c.cost_ci95) for c in group]),
                color=colours[method],
                linestyle=style,
                marker="o",
                markersize=4,
                capsize=3,
                label=label,
            )
    envs = sorted({env for env, _ in sweeps})
    ax.set_title(f"{', '.join(_short_env(e) for e in envs)}: cost against {parameter}", fontsize=10)
    ax.set_xlabel(f"mismatch {parameter}")
    ax.set_ylabel(_COST_LABEL)
    if _spans_decades(all_costs):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


# -------------------------------------------------------------------------------------- writer


def _save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically (temporary file in the same folder + rename)."""
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=DPI)


def write_plots(
    results: Results,
    folder: str | os.PathLike[str],
    *,
    mismatch_parameter: str | None = None,
) -> list[Path]:
    """Write the figures of a comparison as PNG files into ``folder``.

    Writes ``gap_closed.png`` (:func:`~kalmannet_ctrl.bench.gap_figure.gap_figure`, the headline
    figure), ``costs.png`` (:func:`cost_figure`), ``estimation_error.png`` (:func:`error_figure`)
    and ``trajectories.png`` (:func:`trajectory_figure`), plus ``mismatch.png``
    (:func:`mismatch_figure`) when ``mismatch_parameter`` is given and some scenario sets it.
    Figures that would be empty (no estimation curves, no samples) are skipped. Each file is
    written atomically; the folder is created if needed.

    Parameters
    ----------
    results : Results
    folder : path
        Output folder.
    mismatch_parameter : str, optional
        The mismatch parameter of a sweep, for ``mismatch.png``.

    Returns
    -------
    list of Path
        The files written, in the order above.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    TypeError, ValueError
        When ``results`` is not a :class:`Results` or holds no cell, or ``mismatch_parameter``
        is not a string.
    OSError
        When ``folder`` cannot be created or written (the message names it).
    """
    require_matplotlib()
    check_results(results)
    if mismatch_parameter is not None and not isinstance(mismatch_parameter, str):
        raise TypeError(
            f"mismatch_parameter: expected a str or None, found {type(mismatch_parameter).__name__}"
        )
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        kind = PermissionError if isinstance(exc, PermissionError) else OSError
        raise kind(
            f"folder: cannot create the plot folder {folder} ({exc.strerror or exc})"
        ) from exc
    jobs: list[tuple[str, Callable[[], Figure]]] = []
    if _closed_cells(results):
        jobs.append(("gap_closed.png", lambda: gap_figure(results)))
    jobs.append(("costs.png", lambda: cost_figure(results)))
    if _error_scenarios(results):
        jobs.append(("estimation_error.png", lambda: error_figure(results)))
    if any(has_samples(c) for c in results):
        jobs.append(("trajectories.png", lambda: trajectory_figure(results)))
    if mismatch_parameter is not None:
        if _has_parameter(results, mismatch_parameter):
            jobs.append(("mismatch.png", lambda: mismatch_figure(results, mismatch_parameter)))
        else:
            log.warning(
                "no scenario sets the mismatch parameter %r: mismatch.png is not written",
                mismatch_parameter,
            )
    written = []
    for name, build in jobs:
        fig = build()
        path = folder / name
        try:
            _save_png(fig, path)
        except OSError as exc:
            kind = PermissionError if isinstance(exc, PermissionError) else OSError
            raise kind(f"folder: cannot write {path} ({exc.strerror or exc})") from exc
        finally:
            fig.clear()
        written.append(path)
    return written
