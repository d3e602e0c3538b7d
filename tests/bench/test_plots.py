"""Figures of a comparison: the plotted data must be the numbers of the results."""

from __future__ import annotations

import importlib.util
import logging
import math
import sys

import numpy as np
import pytest

from kalmannet_ctrl.bench import (
    CellResult,
    LocalExecutor,
    Results,
    Scenario,
    compare,
    get_method,
)
from kalmannet_ctrl.errors import DimensionError, MissingDependencyError

needs_mpl = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed"
)

if importlib.util.find_spec("matplotlib") is not None:
    import matplotlib

    matplotlib.use("Agg")

from kalmannet_ctrl.bench import plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARTPOLE = "kalmannet_ctrl/CartPole-v0"


def cell(
    scenario: str,
    method: str,
    cost: float,
    ci: float = 0.1,
    *,
    oracle: bool = False,
    curve: list[float] | None = None,
    samples: dict | None = None,
    mismatch: dict | None = None,
    env_id: str = CARTPOLE,
    steps: int = 10,
) -> CellResult:
    return CellResult(
        scenario=scenario,
        env_id=env_id,
        method=method,
        episodes=4,
        steps=steps,
        seed=0,
        cost=cost,
        cost_ci95=ci,
        success_rate=1.0,
        mse_db=math.nan,
        build_s=0.0,
        latency_us=0.0,
        wall_s=0.0,
        oracle=oracle,
        mse_db_per_step=list(curve or []),
        samples=dict(samples or {}),
        scenario_spec={
            "env_id": env_id,
            "mismatch": mismatch,
            "max_steps": steps,
            "name": scenario,
            "env_kwargs": {},
        },
    )


def axis(fig, title: str):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def bar_containers(ax) -> list:
    from matplotlib.container import BarContainer

    return [c for c in ax.containers if isinstance(c, BarContainer)]


def bar_errors(ax) -> tuple[np.ndarray, np.ndarray]:
    """Centres and half-widths of the error bars of the (single) bar chart of ``ax``."""
    (bars,) = bar_containers(ax)
    segments = bars.errorbar.lines[2][0].get_segments()
    lo = np.array([s[0, 1] for s in segments])
    hi = np.array([s[1, 1] for s in segments])
    return (lo + hi) / 2, (hi - lo) / 2


def line(ax, label: str):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


@pytest.fixture
def costs() -> Results:
    return Results(
        [
            cell("A", "oracle", 1.0, 0.1, oracle=True),
            cell("A", "nominal", 2.0, 0.25),
            cell("A", "learned", 3.5, 0.3),
            cell("B", "oracle", 0.01, 0.002, oracle=True),
            cell("B", "nominal", 5.0, 1.0),
        ]
    )


def traj(T: int, episodes: int, n_x: int, offset: float) -> list:
    """A (T, episodes, n_x) nested list with distinct, known values."""
    return (np.arange(T * episodes * n_x).reshape(T, episodes, n_x) * 0.5 + offset).tolist()


# ------------------------------------------------------------------------------------- costs


@needs_mpl
def test_cost_bars_are_the_costs_with_their_ci(costs):
    fig = plots.cost_figure(costs)
    assert [ax.get_title() for ax in fig.axes] == ["A", "B"]
    ax = axis(fig, "A")
    (bars,) = bar_containers(ax)
    np.testing.assert_allclose([p.get_height() for p in bars.patches], [1.0, 2.0, 3.5])
    centres, half = bar_errors(ax)
    np.testing.assert_allclose(centres, [1.0, 2.0, 3.5])
    np.testing.assert_allclose(half, [0.1, 0.25, 0.3])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["oracle", "nominal", "learned"]
    assert ax.get_ylabel() == "average cost per step"
    b_centres, b_half = bar_errors(axis(fig, "B"))
    np.testing.assert_allclose(b_centres, [0.01, 5.0])
    np.testing.assert_allclose(b_half, [0.002, 1.0])


@needs_mpl
def test_cost_oracle_bar_is_marked_and_explained(costs):
    fig = plots.cost_figure(costs)
    (bars,) = bar_containers(axis(fig, "A"))
    hatches = [p.get_hatch() for p in bars.patches]
    assert hatches[0]  # the oracle
    assert hatches[1:] == [None, None]
    legend_texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("oracle" in t for t in legend_texts)


@needs_mpl
def test_cost_log_scale_only_beyond_two_decades(costs):
    fig = plots.cost_figure(costs)
    assert axis(fig, "A").get_yscale() == "linear"  # 1 .. 3.5
    assert axis(fig, "B").get_yscale() == "log"  # 0.01 .. 5: 2.7 decades
    fig = plots.cost_figure(Results([cell("C", "a", 1.0), cell("C", "b", 99.0)]))
    assert fig.axes[0].get_yscale() == "linear"  # just under two decades


@needs_mpl
def test_cost_nan_ci_draws_no_error_bar():
    fig = plots.cost_figure(Results([cell("A", "a", 1.0, math.nan), cell("A", "b", 2.0, 0.5)]))
    (bars,) = bar_containers(fig.axes[0])
    segments = bars.errorbar.lines[2][0].get_segments()
    assert len(segments[0]) == 0
    np.testing.assert_allclose(segments[1][:, 1], [1.5, 2.5])


@needs_mpl
def test_figures_reject_foreign_or_empty_results():
    with pytest.raises(TypeError, match="results: expected a Results object, found list"):
        plots.cost_figure([cell("A", "a", 1.0)])
    with pytest.raises(ValueError, match="results: expected at least one cell"):
        plots.cost_figure(Results([]))


# ------------------------------------------------------------------------------------- error


@needs_mpl
def test_error_lines_are_the_mse_curves():
    curve_a = [-3.0, -5.0, math.nan, -7.5]
    curve_b = [-1.0, -2.0, -2.5, -2.0]
    curve_c = [-10.0, -11.0]
    results = Results(
        [
            cell("A", "oracle", 1.0, oracle=True, curve=curve_a),
            cell("A", "nominal", 2.0, curve=curve_b),
            cell("A", "policy", 3.0),  # no estimate: no curve
            cell("B", "policy", 3.0),  # a scenario without any curve
            cell("C", "nominal", 1.0, curve=curve_c),
        ]
    )
    fig = plots.error_figure(results)
    assert [ax.get_title() for ax in fig.axes] == ["A", "C"]
    ax = axis(fig, "A")
    assert len(ax.get_lines()) == 2
    np.testing.assert_array_equal(line(ax, "oracle (oracle)").get_ydata(), curve_a)
    np.testing.assert_array_equal(line(ax, "nominal").get_ydata(), curve_b)
    np.testing.assert_array_equal(line(ax, "nominal").get_xdata(), [0, 1, 2, 3])
    np.testing.assert_array_equal(line(axis(fig, "C"), "nominal").get_ydata(), curve_c)


@needs_mpl
def test_error_figure_without_curves_raises():
    with pytest.raises(ValueError, match="mse_db_per_step"):
        plots.error_figure(Results([cell("A", "policy", 1.0, curve=[math.nan, math.nan])]))


# ------------------------------------------------------------------------------ trajectories


@needs_mpl
def test_trajectory_closed_loop_each_method_with_its_true_state():
    T, E, n_x = 6, 3, 2
    s_oracle, e_oracle = traj(T + 1, E, n_x, 0.0), traj(T, E, n_x, 0.2)
    s_nominal, e_nominal = traj(T + 1, E, n_x, 1.0), traj(T, E, n_x, 1.3)
    results = Results(
        [
            cell("no-samples", "policy", 1.0),
            cell("A", "oracle", 1.0, samples={"state": s_oracle, "estimate": e_oracle}),
            cell("A", "nominal", 1.0, samples={"state": s_nominal, "estimate": e_nominal}),
            cell("A", "policy", 1.0, samples={"state": s_oracle[:1], "estimate": []}),
        ]
    )
    fig = plots.trajectory_figure(results, episode=1)  # default: the first scenario with samples
    assert "A" in fig.get_suptitle()
    assert len(fig.axes) == n_x
    for i, ax in enumerate(fig.axes):
        assert len(ax.get_lines()) == 4  # the policy without estimate is left out
        for method, states, ests in [
            ("oracle", s_oracle, e_oracle),
            ("nominal", s_nominal, e_nominal),
        ]:
            true_line = line(ax, f"{method} true state")
            np.testing.assert_array_equal(true_line.get_ydata(), np.array(states)[:, 1, i])
            np.testing.assert_array_equal(true_line.get_xdata(), np.arange(T + 1))
            est_line = line(ax, f"{method} estimate")
            np.testing.assert_array_equal(est_line.get_ydata(), np.array(ests)[:, 1, i])
            assert est_line.get_linestyle() == "--"


@needs_mpl
def test_trajectory_estimation_only_draws_one_true_state():
    T, E, n_x = 5, 2, 3
    states = traj(T + 1, E, n_x, 0.0)
    results = Results(
        [
            cell("L", "ekf-oracle", 1.0, samples={"state": states, "estimate": traj(T, E, n_x, 1)}),
            cell(
                "L", "ekf-nominal", 1.0, samples={"state": states, "estimate": traj(T, E, n_x, 2)}
            ),
        ]
    )
    fig = plots.trajectory_figure(results, "L", episode=0)
    assert len(fig.axes) == n_x
    for i, ax in enumerate(fig.axes):
        assert len(ax.get_lines()) == 3
        np.testing.assert_array_equal(line(ax, "true state").get_ydata(), np.array(states)[:, 0, i])
        np.testing.assert_array_equal(
            line(ax, "ekf-nominal estimate").get_ydata(), np.array(traj(T, E, n_x, 2))[:, 0, i]
        )


@needs_mpl
def test_trajectory_stops_at_a_recorded_episode_end():
    T, E, n_x = 8, 2, 1
    samples = {"state": traj(T + 1, E, n_x, 0.0), "estimate": traj(T, E, n_x, 0.1)}
    fig = plots.trajectory_figure(
        Results([cell("A", "m", 1.0, samples={**samples, "length": [8, 3]})]), episode=1
    )
    ax = fig.axes[0]
    np.testing.assert_array_equal(
        line(ax, "true state").get_ydata(), np.array(samples["state"])[:4, 1, 0]
    )
    np.testing.assert_array_equal(
        line(ax, "m estimate").get_ydata(), np.array(samples["estimate"])[:3, 1, 0]
    )


@needs_mpl
def test_trajectory_errors():
    samples = {"state": traj(4, 2, 2, 0.0), "estimate": traj(3, 2, 2, 0.0)}
    results = Results([cell("A", "m", 1.0, samples=samples), cell("B", "policy", 1.0)])
    with pytest.raises(ValueError, match=r"episode: expected 0 <= episode < 2.*found 2"):
        plots.trajectory_figure(results, episode=2)
    with pytest.raises(ValueError, match="episode"):
        plots.trajectory_figure(results, episode=-1)
    with pytest.raises(TypeError, match="episode: expected an int"):
        plots.trajectory_figure(results, episode=0.5)
    with pytest.raises(ValueError, match="scenario: unknown scenario 'Z'"):
        plots.trajectory_figure(results, "Z")
    with pytest.raises(ValueError, match="scenario: no cell of 'B' holds sample"):
        plots.trajectory_figure(results, "B")
    with pytest.raises(ValueError, match="no cell holds sample trajectories"):
        plots.trajectory_figure(Results([cell("B", "policy", 1.0)]))
    bad = {"state": [[1.0, 2.0]], "estimate": [[1.0, 2.0]]}
    with pytest.raises(DimensionError, match=r"shape \(T, episodes, n_x\)"):
        plots.trajectory_figure(Results([cell("A", "m", 1.0, samples=bad)]))


# ---------------------------------------------------------------------------------- mismatch


@needs_mpl
def test_mismatch_lines_are_costs_sorted_by_parameter():
    values = [0.6, 0.3, 0.45]
    oracle_costs = {0.3: 0.013, 0.45: 0.011, 0.6: 0.010}
    nominal_costs = {0.3: 1.2, 0.45: 0.06, 0.6: 0.016}
    cells = []
    for v in values:
        name = f"CartPole (pole_length={v})"
        mm = {"pole_length": v}
        cells.append(cell(name, "lqg-oracle", oracle_costs[v], v / 10, oracle=True, mismatch=mm))
        cells.append(cell(name, "lqg-nominal", nominal_costs[v], v / 5, mismatch=mm))
    # A lone scenario setting the parameter among others is not part of the sweep.
    lone = {"pole_length": 0.45, "pole_mass": 2.0}
    cells.append(cell("CartPole (large)", "lqg-nominal", 9.0, mismatch=lone))
    cells.append(cell("LinearSystem", "lqg-nominal", 0.5, env_id="kalmannet_ctrl/LinearSystem-v0"))
    fig = plots.mismatch_figure(Results(cells), "pole_length")
    (ax,) = fig.axes
    assert ax.get_xlabel().endswith("pole_length")
    assert ax.get_ylabel() == "average cost per step"
    assert ax.get_yscale() == "log"  # 0.010 .. 1.2
    containers = {c.get_label(): c for c in ax.containers}
    assert set(containers) == {"lqg-oracle (oracle)", "lqg-nominal"}
    for label, table, scale in [
        ("lqg-oracle (oracle)", oracle_costs, 10),
        ("lqg-nominal", nominal_costs, 5),
    ]:
        data_line, _, (bars,) = containers[label].lines
        np.testing.assert_allclose(data_line.get_xdata(), [0.3, 0.45, 0.6])
        np.testing.assert_allclose(data_line.get_ydata(), [table[v] for v in (0.3, 0.45, 0.6)])
        half = [(s[1, 1] - s[0, 1]) / 2 for s in bars.get_segments()]
        np.testing.assert_allclose(half, [v / scale for v in (0.3, 0.45, 0.6)])


@needs_mpl
def test_mismatch_separate_sweeps_get_separate_labelled_lines():
    cells = [
        cell(f"s{v}{m}", "lqg", float(v + m), mismatch={"pole_length": v, "pole_mass": m})
        for v in (1, 2)
        for m in (1, 3)
    ]
    fig = plots.mismatch_figure(Results(cells), "pole_length")
    labels = sorted(c.get_label() for c in fig.axes[0].containers)
    assert len(labels) == 2
    assert "pole_mass=1" in labels[0] and "pole_mass=3" in labels[1]
    for c in fig.axes[0].containers:
        mass = 1 if "pole_mass=1" in c.get_label() else 3
        np.testing.assert_allclose(c.lines[0].get_ydata(), [1 + mass, 2 + mass])


@needs_mpl
def test_mismatch_missing_parameter_is_named():
    results = Results([cell("A", "m", 1.0, mismatch={"pole_length": 0.3}), cell("B", "m", 1.0)])
    with pytest.raises(ValueError, match=r"parameter: .*'friction'.*\['pole_length'\]"):
        plots.mismatch_figure(results, "friction")
    with pytest.raises(TypeError, match="parameter: expected a str"):
        plots.mismatch_figure(results, 3)


# ------------------------------------------------------------------------------------ writer


def _full_results() -> Results:
    samples = {"state": traj(4, 2, 2, 0.0), "estimate": traj(3, 2, 2, 0.5)}
    return Results(
        [
            cell(
                f"P{v}",
                m,
                c * v,
                mismatch={"pole_length": v},
                curve=[-1.0, -2.0, -3.0],
                samples=samples,
                oracle=m == "o",
            )
            for v in (0.3, 0.6)
            for m, c in (("o", 1.0), ("n", 2.0))
        ]
    )


@needs_mpl
def test_write_plots_writes_png_files_atomically(tmp_path):
    import matplotlib.pyplot as plt

    open_before = plt.get_fignums()
    folder = tmp_path / "out" / "plots"
    paths = plots.write_plots(_full_results(), folder, mismatch_parameter="pole_length")
    names = ["costs.png", "estimation_error.png", "trajectories.png", "mismatch.png"]
    assert paths == [folder / n for n in names]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)  # no temporary files left
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert len(data) > 1000
    assert plt.get_fignums() == open_before


@needs_mpl
def test_write_plots_skips_empty_figures(tmp_path, caplog):
    results = Results([cell("A", "policy", 1.0), cell("A", "other", 2.0)])
    with caplog.at_level(logging.WARNING, logger="kalmannet_ctrl.bench.plots"):
        paths = plots.write_plots(results, tmp_path, mismatch_parameter="pole_length")
    assert paths == [tmp_path / "costs.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["costs.png"]
    assert "pole_length" in caplog.text


@needs_mpl
def test_write_plots_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken(self, fname, **kwargs):
        fname.write(b"\x89PNG partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.write_plots(_full_results(), tmp_path)
    assert list(tmp_path.iterdir()) == []


@needs_mpl
def test_write_plots_unusable_folder_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="folder: cannot create the plot folder"):
        plots.write_plots(_full_results(), blocker / "plots")
    with pytest.raises(TypeError, match="mismatch_parameter: expected a str"):
        plots.write_plots(_full_results(), tmp_path / "plots", mismatch_parameter=1)


@pytest.mark.parametrize(
    "build",
    [
        plots.cost_figure,
        plots.error_figure,
        plots.trajectory_figure,
        lambda r: plots.mismatch_figure(r, "pole_length"),
        lambda r: plots.write_plots(r, "unused"),
    ],
    ids=["cost", "error", "trajectory", "mismatch", "write"],
)
def test_missing_matplotlib_names_the_pip_command(build, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "kalmannet-ctrl\[bench\]"'):
        build(_full_results())
    assert not (tmp_path / "unused").exists()


# ------------------------------------------------------------------------------ gap closed


def _gap_cells() -> Results:
    def c(scenario, method, cost, **kw):
        out = cell(scenario, method, cost, **{k: v for k, v in kw.items() if k == "oracle"})
        out.baseline = kw.get("baseline", False)
        out.family = kw.get("family", "model-based")
        out.measure = kw.get("measure", "cost")
        out.mse_db = kw.get("mse_db", math.nan)
        return out

    return Results(
        [
            c("A", "oracle", 1.0, oracle=True),
            c("A", "nominal", 2.0, baseline=True),
            c("A", "dnn", 1.2, family="DNN-aided"),
            c("A", "rl", 80.0, family="data-centric"),
            c("E", "ekf-oracle", 5.0, oracle=True, measure="mse", mse_db=-30.0),
            c("E", "ekf-nominal", 5.0, baseline=True, measure="mse", mse_db=-10.0),
            c("E", "kalmannet", 5.0, family="DNN-aided", measure="mse", mse_db=-25.0),
        ]
    )


@needs_mpl
def test_gap_figure_draws_each_methods_share_coloured_by_family_and_cuts_outliers():
    from matplotlib.colors import to_hex

    from kalmannet_ctrl.bench.gap_figure import FAMILY_COLOURS, LIMITS, gap_figure

    results = _gap_cells()
    fig = gap_figure(results)
    ax = fig.axes[0]
    patches = [p for p in ax.patches if p.get_label().startswith(("A:", "E:"))]
    labels = [p.get_label() for p in patches]
    assert labels == ["A: dnn", "A: rl", "E: kalmannet"]  # the references are not bars
    heights = [p.get_height() for p in patches]
    rl = results.get("A", "rl").gap_closed_pct  # (2 - 80) / (2 - 1): -7800 %
    assert rl == pytest.approx(-7800.0)
    assert heights == pytest.approx([80.0, LIMITS[0], 75.0])
    assert any("-7800 %" in t.get_text() for t in ax.texts)
    assert to_hex(patches[0].get_facecolor()) == FAMILY_COLOURS["DNN-aided"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dnn", "rl", "kalmannet (MSE)"]


@needs_mpl
def test_gap_figure_needs_references_and_write_plots_puts_it_first(tmp_path):
    from kalmannet_ctrl.bench.gap_figure import gap_figure

    with pytest.raises(ValueError, match="no cell has a gap closed"):
        gap_figure(Results([cell("A", "x", 1.0), cell("A", "y", 2.0, oracle=True)]))
    paths = plots.write_plots(_gap_cells(), tmp_path)
    assert paths[:2] == [tmp_path / "gap_closed.png", tmp_path / "costs.png"]


@needs_mpl
def test_cost_figure_shows_the_mse_of_estimation_only_scenarios():
    fig = plots.cost_figure(_gap_cells())
    ax = axis(fig, "E")
    (bars,) = bar_containers(ax)
    assert [p.get_height() for p in bars.patches] == pytest.approx([-30.0, -10.0, -25.0])
    assert ax.get_ylabel() == "estimation MSE [dB]"
    assert axis(fig, "A").get_ylabel() == "average cost per step"


# --------------------------------------------------------------------------- real comparison


@needs_mpl
def test_write_plots_on_a_real_comparison(tmp_path):
    scenarios = [
        Scenario(
            "kalmannet_ctrl/LinearSystem-v0",
            mismatch={"input_scale": v},
            max_steps=20,
            name=f"linear {v}",
        )
        for v in (1.0, 1.5)
    ]
    methods = [get_method("lqg-oracle"), get_method("lqg-nominal")]
    results = compare(
        scenarios, methods, episodes=4, seed=0, executor=LocalExecutor(1), progress=False
    )

    paths = plots.write_plots(results, tmp_path / "plots", mismatch_parameter="input_scale")
    assert [p.name for p in paths] == [  # only references: no gap_closed.png
        "costs.png",
        "estimation_error.png",
        "trajectories.png",
        "mismatch.png",
    ]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_SIGNATURE
    fig = plots.cost_figure(results)
    (bars,) = bar_containers(axis(fig, "linear 1.5"))
    np.testing.assert_allclose(
        [p.get_height() for p in bars.patches],
        [results.get("linear 1.5", m.name).cost for m in methods],
    )
