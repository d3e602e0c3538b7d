"""Results of a comparison: one cell per (scenario, method), tables, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text

__all__ = ["CellResult", "Results", "gap_closed"]

#: Columns of the CSV file and of :meth:`Results.rows` (the per-step curves stay in the JSON).
COLUMNS = (
    "scenario",
    "env_id",
    "method",
    "episodes",
    "steps",
    "cost",
    "cost_ci95",
    "success_rate",
    "mse_db",
    "gap_pct",
    "gap_closed_pct",
    "gap_closed_ci95",
    "family",
    "oracle",
    "build_s",
    "train_env_steps",
    "latency_us",
    "wall_s",
    "seed",
)


@dataclass
class CellResult:
    """The measurements of one method on one scenario.

    Attributes
    ----------
    cost : float
        Mean over episodes of the episode's total cost (stage costs plus failure penalties)
        divided by the scenario's episode length: the average cost per step, a failure charged
        as the rest of the episode's share.
    cost_ci95 : float
        Half-width of the 95 % confidence interval of ``cost`` (1.96 standard errors).
    success_rate : float
        Fraction of episodes that succeeded: by default those that ran to the time limit
        without a failure; the env's ``succeeded`` may ask more (Pendulum: balanced upright
        for the last 5 s).
    mse_db : float
        Estimation MSE in dB against ``info["state"]`` over all steps and episodes (NaN for a
        controller without ``estimate``).
    mse_db_per_step : list of float
        The same per time step (for the error-over-time plot).
    gap_pct : float
        100 (cost − oracle cost) / ``|oracle cost|`` against the scenario's oracle method (filled in
        by :class:`Results`; NaN without one).
    gap_closed_pct, gap_closed_ci95 : float
        The share of the gap between the scenario's nominal baseline (0 %) and its oracle
        (100 %) that the method closes, in %, and the half-width of its 95 % confidence
        interval (filled in by :class:`Results`; NaN without a baseline and an oracle). On the
        cost for a control method, on the estimation MSE in dB for an estimation-only one
        (``measure``). The interval is a paired bootstrap over the episodes, which every method
        of a scenario runs with the same seeds.
    family, baseline, measure :
        The method's place on the spectrum, whether it is the scenario's nominal baseline, and
        what its gap closed compares (see :class:`~kalmannet_ctrl.bench.Method`).
    episode_costs : list of float
        Each episode's cost per step (their mean is ``cost``).
    episode_sq_err, episode_est_steps : list
        Each episode's summed squared estimation error (mean over the state's entries) and
        the steps it was summed over (their pooled ratio is the MSE of ``mse_db``).
    build_s, train_env_steps :
        Wall time to build (and train) the controller, and the env steps its training used.
    latency_us : float
        Wall time of ``predict`` per env step, batched over the episodes.
    samples : dict
        The first episodes (3, or ``compare``'s ``videos`` if more), for trajectory plots and
        videos: ``state`` (T + 1, episodes, n_x) the true states x_0 .. x_T, ``measurement``
        (T + 1, episodes, n_y) their measurements y_0 .. y_T, ``estimate`` (T, episodes, n_x)
        the estimates x̂_{t|t} matching ``state[t]`` (empty for a controller without
        ``estimate``), and ``length`` (episodes,) the steps each ran before it ended (later
        entries belong to the next, automatically reset episode). T is the number of steps
        run.
    scenario_spec : dict
        The scenario's definition, with ``mismatch`` the one in force (defaults completed).
    learning_curve : list of dict
        The training's evaluation points, for methods whose training records them (the RL
        methods with ``curve_every`` in their config; keys
        :data:`~kalmannet_ctrl.rl.CURVE_COLUMNS`), else empty.

    Notes
    -----
    ``mse_db_per_step`` at step t averages over the episodes still running at t, so after
    failures it describes the survivors.
    """

    scenario: str
    env_id: str
    method: str
    episodes: int
    steps: int
    seed: int
    cost: float
    cost_ci95: float
    success_rate: float
    mse_db: float
    build_s: float
    latency_us: float
    wall_s: float
    oracle: bool = False
    train_env_steps: int = 0
    gap_pct: float = math.nan
    gap_closed_pct: float = math.nan
    gap_closed_ci95: float = math.nan
    family: str = "model-based"
    baseline: bool = False
    measure: str = "cost"
    episode_costs: list[float] = field(default_factory=list)
    episode_sq_err: list[float] = field(default_factory=list)
    episode_est_steps: list[int] = field(default_factory=list)
    mse_db_per_step: list[float] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)
    scenario_spec: dict[str, Any] = field(default_factory=dict)
    learning_curve: list[dict[str, float]] = field(default_factory=list)
    key: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        if not isinstance(data, dict):
            raise ValueError(f"cell: expected a JSON object, found {type(data).__name__}")
        names = set(cls.__dataclass_fields__)
        missing = {"scenario", "method", "cost"} - set(data)
        if missing:
            raise ValueError(f"cell: missing fields {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


class Results:
    """The cells of a comparison, with the gap to each scenario's oracle filled in."""

    def __init__(self, cells: Iterable[CellResult]) -> None:
        self.cells = list(cells)
        self._fill_gaps()

    def _fill_gaps(self) -> None:
        oracles: dict[str, float] = {}
        for c in self.cells:
            if c.oracle and c.scenario not in oracles:
                oracles[c.scenario] = c.cost
        for c in self.cells:
            ref = oracles.get(c.scenario)
            c.gap_pct = (
                100.0 * (c.cost - ref) / abs(ref) if ref is not None and ref != 0 else math.nan
            )
        for c in self.cells:
            oracle = self._reference(c, oracle=True)
            nominal = self._reference(c, oracle=False)
            if oracle is None or nominal is None:
                c.gap_closed_pct = c.gap_closed_ci95 = math.nan
                continue
            c.gap_closed_pct, c.gap_closed_ci95 = gap_closed(c, nominal, oracle)

    def _reference(self, cell: CellResult, *, oracle: bool) -> CellResult | None:
        """The scenario's oracle (or nominal baseline) of the same measure as ``cell``."""
        for c in self.cells:
            same = c.scenario == cell.scenario and c.measure == cell.measure
            if same and (c.oracle if oracle else c.baseline):
                return c
        return None

    def __len__(self) -> int:
        return len(self.cells)

    def __iter__(self):
        return iter(self.cells)

    def get(self, scenario: str, method: str) -> CellResult:
        """The cell of ``method`` on the scenario labelled ``scenario``."""
        for c in self.cells:
            if c.scenario == scenario and c.method == method:
                return c
        raise KeyError(f"no cell for scenario {scenario!r} and method {method!r}")

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per cell with the :data:`COLUMNS`."""
        return [{k: getattr(c, k) for k in COLUMNS} for c in self.cells]

    def to_markdown(self) -> str:
        """A Markdown table: cost ± 95 % CI, success, MSE, gap to the oracle, the env steps
        of training data, timings."""
        head = (
            "| scenario | method | cost / step (± 95% CI) | success | MSE [dB] | gap to oracle "
            "| gap closed (± 95% CI) | train env steps | build [s] | latency [us/step] |"
        )
        lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in self.cells:
            mse = "" if math.isnan(c.mse_db) else f"{c.mse_db:.2f}"
            gap = "" if math.isnan(c.gap_pct) else f"{c.gap_pct:+.1f} %"
            name = c.method + (" (oracle)" if c.oracle else "")
            lines.append(
                f"| {c.scenario} | {name} | {_fmt(c.cost)} ± {_fmt(c.cost_ci95)} | "
                f"{100 * c.success_rate:.0f} % | {mse} | {gap} | {_fmt_closed(c)} | "
                f"{c.train_env_steps} | {c.build_s:.2f} | {c.latency_us:.1f} |"
            )
        return "\n".join(lines)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The rows as CSV text, written atomically to ``path`` when given."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        """Every cell in full (with per-step curves and samples), written atomically if asked."""
        text = json.dumps(
            {"cells": [c.to_dict() for c in self.cells]}, indent=1, default=_json_default
        )
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_json(cls, path: str | Path) -> Results:
        """Read results written by :meth:`to_json`."""
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
            raise ValueError(f"path: {path} is not a results file (no 'cells' list)")
        return cls(CellResult.from_dict(c) for c in data["cells"])

    def scenarios(self) -> list[str]:
        return list(dict.fromkeys(c.scenario for c in self.cells))

    def methods(self) -> list[str]:
        return list(dict.fromkeys(c.method for c in self.cells))


#: Bootstrap resamples of the gap closed's confidence interval (its half-width is then known to
#: about 3 % of itself), drawn from a fixed seed so that a table is reproducible.
BOOTSTRAP_SAMPLES = 2000


def gap_closed(cell: CellResult, nominal: CellResult, oracle: CellResult) -> tuple[float, float]:
    """The share (in %) of the nominal→oracle gap that ``cell`` closes, and its 95 % half-width.

    ``100 (m(nominal) − m(cell)) / (m(nominal) − m(oracle))`` for the cells' measure m: the mean
    cost per step, or the estimation MSE in dB. The interval is 1.96 bootstrap standard errors
    of that ratio, resampling the episode indices jointly for the three cells (the episodes are
    paired: the same seeds for every method); NaN when the cells lack per-episode data or ran
    different numbers of episodes.
    """
    if cell.measure == "mse":
        values = [c.mse_db for c in (nominal, cell, oracle)]
    else:
        values = [c.cost for c in (nominal, cell, oracle)]
    den = values[0] - values[2]
    if not all(math.isfinite(v) for v in values) or den == 0:
        return math.nan, math.nan
    point = 100.0 * (values[0] - values[1]) / den
    samples = _bootstrap(cell.measure, (nominal, cell, oracle))
    if samples is None:
        return point, math.nan
    nom, met, orc = samples
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = 100.0 * (nom - met) / (nom - orc)
    ratios = ratios[np.isfinite(ratios)]
    ci = 1.96 * float(ratios.std(ddof=1)) if ratios.size > 1 else math.nan
    return point, ci


def _bootstrap(measure: str, cells: Sequence[CellResult]) -> list[np.ndarray] | None:
    """Bootstrap replicates of each cell's measure, on shared episode resamples."""
    if measure == "mse":
        data = [(np.asarray(c.episode_sq_err), np.asarray(c.episode_est_steps)) for c in cells]
        sizes = {d[0].size for d in data} | {d[1].size for d in data}
    else:
        data = [(np.asarray(c.episode_costs), None) for c in cells]
        sizes = {d[0].size for d in data}
    if len(sizes) != 1 or sizes == {0} or min(sizes) < 2:
        return None
    n = sizes.pop()
    idx = np.random.default_rng(0).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    if measure == "cost":
        return [values[idx].mean(1) for values, _ in data]
    out = []
    for sq, steps in data:
        with np.errstate(divide="ignore"):
            out.append(10 * np.log10(sq[idx].sum(1) / steps[idx].sum(1)))
    return out


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "nan"
    if x == 0 or 1e-3 <= abs(x) < 1e5:
        return f"{x:.4g}"
    return f"{x:.3e}"


def _fmt_closed(c: CellResult) -> str:
    """``90 ± 4 %``, with ``(MSE)`` for a gap measured on the estimation error."""
    if math.isnan(c.gap_closed_pct):
        return ""
    ci = "" if math.isnan(c.gap_closed_ci95) else f" ± {c.gap_closed_ci95:.0f}"
    on = " (MSE)" if c.measure == "mse" else ""
    return f"{c.gap_closed_pct:.0f}{ci} %{on}"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Sequence):
        return list(obj)
    return str(obj)
