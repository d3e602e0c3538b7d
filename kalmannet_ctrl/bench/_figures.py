"""What the comparison's figures share: the matplotlib check, the argument check, one colour
per method and the panel grid (matplotlib is imported only when a figure is built)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import MissingDependencyError
from .results import CellResult, Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Resolution of the written PNG files.
DPI = 120
PIP_HINT = 'pip install "kalmannet-ctrl[bench]"'


def require_matplotlib() -> None:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"plots need matplotlib, which is not installed; install it with: {PIP_HINT}"
        ) from exc


def check_results(results: Results) -> list[CellResult]:
    if not isinstance(results, Results):
        raise TypeError(f"results: expected a Results object, found {type(results).__name__}")
    if len(results) == 0:
        raise ValueError("results: expected at least one cell to plot, found none")
    return list(results.cells)


def method_colours(results: Results) -> dict[str, str]:
    """One colour per method, the same in every figure."""
    return {m: f"C{i % 10}" for i, m in enumerate(results.methods())}


def new_figure(n: int, *, ncols: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    """A figure with ``n`` panels on a grid of at most ``ncols`` columns."""
    from matplotlib.figure import Figure

    ncols = max(1, min(n, ncols))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]
