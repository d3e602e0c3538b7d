"""The figure of sample trajectories: each method's estimate against the true state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import DimensionError
from ._figures import check_results, method_colours, new_figure, require_matplotlib
from .results import CellResult, Results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["trajectory_figure"]


def has_samples(cell: CellResult) -> bool:
    samples = cell.samples or {}
    return bool(samples.get("estimate")) and bool(samples.get("state"))


def _sample_array(cell: CellResult, key: str) -> np.ndarray:
    arr = np.asarray(cell.samples[key], dtype=float)
    if arr.ndim != 3:
        raise DimensionError(
            f"results: samples[{key!r}] of cell ({cell.scenario!r}, {cell.method!r}) must have "
            f"shape (T, episodes, n_x), found shape {arr.shape}"
        )
    return arr


def _episode_length(cell: CellResult, episode: int) -> int | None:
    """Steps the sample episode ran (``samples["length"][episode]``), None when not recorded."""
    lengths = (cell.samples or {}).get("length")
    if lengths is None:
        return None
    try:
        return int(lengths[episode])
    except (IndexError, TypeError, ValueError):
        raise ValueError(
            f"results: samples['length'] of cell ({cell.scenario!r}, {cell.method!r}) must hold "
            f"one step count per sample episode, found {lengths!r}"
        ) from None


def trajectory_figure(results: Results, scenario: str | None = None, episode: int = 0) -> Figure:
    """The true state of a sample episode against each method's estimate, one panel per state
    component.

    In closed loop each method drives its own trajectory: when the methods' true states differ,
    each method's true state is drawn (solid) next to its estimate (dashed) in the method's
    colour; when they coincide (estimation only), one black true-state line is drawn. When a
    cell's samples hold ``"length"`` (the steps each sample episode ran), its lines stop at the
    episode's end instead of running on into the next, automatically reset, episode.

    Parameters
    ----------
    results : Results
    scenario : str, optional
        A scenario label; default the first scenario whose cells hold sample trajectories.
    episode : int
        Which of the sample episodes (``0 <= episode <`` the number kept, at most 3).

    Returns
    -------
    matplotlib.figure.Figure
        Panel ``i`` shows component ``i``: lines labelled ``"<method> estimate"`` with y data
        ``samples["estimate"][:, episode, i]`` and ``"true state"`` (or
        ``"<method> true state"``) with y data ``samples["state"][:, episode, i]``, where
        ``samples["state"]`` has shape (T + 1, episodes, n_x) and ``samples["estimate"]``
        shape (T, episodes, n_x); x is the time step.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    ValueError
        When ``scenario`` is unknown or has no sample trajectories, when no cell has any, or
        when ``episode`` is out of range.
    DimensionError
        When the samples are not of shape (T, episodes, n_x) or disagree on n_x.
    """
    require_matplotlib()
    scenario, group = _sample_group(results, scenario)
    true_x, est_x, n_x = _sample_lines(scenario, group, episode)
    first = next(iter(true_x.values()))
    shared = all(a.shape == first.shape and np.allclose(a, first) for a in true_x.values())
    colours = method_colours(results)
    fig, axes = new_figure(n_x, ncols=2, width=5.2, height=2.8)
    for i, ax in enumerate(axes):
        if shared:
            ax.plot(
                np.arange(first.shape[0]),
                first[:, i],
                color="black",
                linewidth=1.4,
                label="true state",
            )
        for cell in group:
            colour = colours[cell.method]
            if not shared:
                x = true_x[cell.method][:, i]
                ax.plot(
                    np.arange(x.size),
                    x,
                    color=colour,
                    linewidth=1.4,
                    label=f"{cell.method} true state",
                )
            est = est_x[cell.method][:, i]
            ax.plot(
                np.arange(est.size),
                est,
                color=colour,
                linestyle="--",
                linewidth=1.1,
                label=f"{cell.method} estimate",
            )
        ax.set_title(f"state component x[{i}]", fontsize=10)
        ax.set_xlabel("time step")
        ax.grid(alpha=0.3)
    handles: list[Any] = list(axes[0].get_lines())
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=8)
    fig.suptitle(f"{scenario}: sample episode {episode}, true state and estimates")
    return fig


def _sample_group(results: Results, scenario: str | None) -> tuple[str, list[CellResult]]:
    """The scenario to draw (default the first with samples) and its cells that hold samples."""
    cells = check_results(results)
    if scenario is None:
        with_samples = [
            s for s in results.scenarios() if any(has_samples(c) for c in cells if c.scenario == s)
        ]
        if not with_samples:
            raise ValueError(
                "results: no cell holds sample trajectories (samples['estimate']); "
                "none of the methods exposes an estimate"
            )
        scenario = with_samples[0]
    elif scenario not in results.scenarios():
        raise ValueError(
            f"scenario: unknown scenario {scenario!r}; expected one of {results.scenarios()}"
        )
    group = [c for c in cells if c.scenario == scenario and has_samples(c)]
    if not group:
        raise ValueError(
            f"scenario: no cell of {scenario!r} holds sample trajectories; methods without an "
            "estimate keep none"
        )
    return scenario, group


def _sample_lines(
    scenario: str, group: list[CellResult], episode: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Per method, the true states (T + 1, n_x) and estimates (T, n_x) of one sample episode,
    cut at the episode's end, and n_x."""
    if isinstance(episode, bool) or not isinstance(episode, (int, np.integer)):
        raise TypeError(f"episode: expected an int, found {type(episode).__name__}")
    states = {c.method: _sample_array(c, "state") for c in group}
    estimates = {c.method: _sample_array(c, "estimate") for c in group}
    kept = min(a.shape[1] for a in (*states.values(), *estimates.values()))
    if not 0 <= episode < kept:
        raise ValueError(
            f"episode: expected 0 <= episode < {kept} (the sample episodes kept), found {episode}"
        )
    dims = {a.shape[2] for a in (*states.values(), *estimates.values())}
    if len(dims) != 1:
        raise DimensionError(
            f"results: the samples of {scenario!r} disagree on the state dimension n_x: "
            f"{sorted(dims)}"
        )
    true_x: dict[str, np.ndarray] = {}
    est_x: dict[str, np.ndarray] = {}
    for cell in group:
        x, est = states[cell.method][:, episode], estimates[cell.method][:, episode]
        length = _episode_length(cell, episode)
        if length is not None:  # drop what follows the episode's end (an automatic reset)
            x, est = x[: length + 1], est[:length]
        true_x[cell.method], est_x[cell.method] = x, est
    return true_x, est_x, dims.pop()
