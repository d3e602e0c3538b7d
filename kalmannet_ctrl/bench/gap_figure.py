"""The headline figure of a comparison: the share of the nominal→oracle gap each method closes."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ._figures import DPI, check_results, require_matplotlib
from .context import FAMILIES
from .results import CellResult, Results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FAMILY_COLOURS", "gap_figure"]

#: One colour per family of the spectrum, from the model (blue) to the data (red).
_PALETTE = ("#4c72b0", "#dd8452", "#8172b3", "#55a868", "#c44e52")
FAMILY_COLOURS = dict(zip(FAMILIES, _PALETTE, strict=True))

#: The vertical range drawn, in % of the gap; bars beyond it are cut and labelled with their value.
LIMITS = (-60.0, 130.0)


def _closed_cells(results: Results) -> list[tuple[str, list[CellResult]]]:
    """Per scenario, the cells with a gap closed, the references (baseline, oracle) left out."""
    out = []
    for scenario in results.scenarios():
        group = [
            c
            for c in results
            if c.scenario == scenario
            and not (c.oracle or c.baseline)
            and math.isfinite(c.gap_closed_pct)
        ]
        if group:
            out.append((scenario, group))
    return out


def gap_figure(results: Results) -> Figure:
    """Gap closed per method and scenario in one chart, coloured by the method's family.

    For each scenario (a group of bars), every method but the scenario's nominal baseline (0 %)
    and oracle (100 %, the dashed lines) gets a bar: the share of the gap between the two that
    it closes (:attr:`CellResult.gap_closed_pct`: on the cost, or on the estimation MSE in dB
    for estimation-only scenarios, marked "(MSE)"), with its 95 % confidence interval as error
    bar. Bars beyond the drawn range (−60 % to 130 %) are cut at its edge and labelled with
    their value.

    Parameters
    ----------
    results : Results
        A comparison whose scenarios have their nominal baseline and oracle.

    Returns
    -------
    Figure
        A matplotlib figure with one axis; one bar per (scenario, method) with a gap closed,
        in the order of the cells.

    Raises
    ------
    MissingDependencyError
        When matplotlib is not installed.
    TypeError, ValueError
        When ``results`` is not a :class:`Results`, holds no cell, or no cell has a gap closed
        (a scenario needs a baseline and an oracle).
    """
    require_matplotlib()
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    check_results(results)
    groups = _closed_cells(results)
    if not groups:
        raise ValueError(
            "results: no cell has a gap closed (a scenario needs its nominal baseline and its "
            "oracle, e.g. lqg-nominal and lqg-oracle)"
        )
    n_bars = sum(len(g) for _, g in groups)
    fig = Figure(figsize=(max(6.0, 0.45 * n_bars + 2.0), 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    lo, hi = LIMITS
    x, ticks, labels, centres = 0.0, [], [], []
    for scenario, group in groups:
        start = x
        for c in group:
            value = float(c.gap_closed_pct)
            shown = min(max(value, lo), hi)
            ci = float(c.gap_closed_ci95)
            bar = ax.bar(
                x,
                shown,
                yerr=None if math.isnan(ci) or shown != value else ci,
                color=FAMILY_COLOURS.get(c.family, "grey"),
                edgecolor="black",
                linewidth=0.6,
                capsize=3,
            )
            bar.patches[0].set_label(f"{scenario}: {c.method}")
            if shown != value:
                ax.annotate(
                    f"{value:.0f} %",
                    (x, shown),
                    textcoords="offset points",
                    xytext=(0, -10 if value < lo else 3),
                    ha="center",
                    fontsize=7,
                )
            ticks.append(x)
            labels.append(c.method + (" (MSE)" if c.measure == "mse" else ""))
            x += 1.0
        centres.append(((start + x - 1.0) / 2, scenario))
        x += 1.0  # a gap between scenarios
    for level, text in ((0.0, "nominal baseline"), (100.0, "oracle")):
        ax.axhline(level, color="black", linestyle="--", linewidth=0.8)
        ax.text(-0.45, level, text, va="bottom", ha="left", fontsize=7)
    ax.set_xticks(ticks, labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(lo - 5.0, hi + 5.0)
    ax.set_ylabel("gap closed [%] (± 95 % CI)")
    ax.grid(axis="y", alpha=0.3)
    top = ax.secondary_xaxis("top")
    top.set_xticks([c for c, _ in centres], [s for _, s in centres], fontsize=8)
    families = list(dict.fromkeys(c.family for _, g in groups for c in g))
    ax.legend(
        handles=[Patch(facecolor=FAMILY_COLOURS.get(f, "grey"), label=f) for f in families],
        fontsize=8,
        loc="lower left",
    )
    fig.suptitle("Share of the nominal → oracle gap each method closes")
    return fig

