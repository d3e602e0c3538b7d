"""The gap closed: its point value from the cells' means, its paired-bootstrap interval, and the
references it is measured from (the scenario's nominal baseline and oracle, per measure)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kalmannet_ctrl.bench import CellResult, Results
from kalmannet_ctrl.bench.results import gap_closed


def cell(method, costs, *, oracle=False, baseline=False, measure="cost", sq=None, scenario="S"):
    costs = np.asarray(costs, dtype=float)
    n = costs.size
    steps = [10] * n
    sq = np.zeros(n) if sq is None else np.asarray(sq, dtype=float)
    mse = float(sq.sum() / (10 * n))
    return CellResult(
        scenario=scenario,
        env_id="kalmannet_ctrl/LinearSystem-v0",
        method=method,
        episodes=n,
        steps=10,
        seed=0,
        cost=float(costs.mean()),
        cost_ci95=float(1.96 * costs.std(ddof=1) / math.sqrt(n)),
        success_rate=1.0,
        mse_db=10 * math.log10(mse) if mse > 0 else math.nan,
        build_s=0.0,
        latency_us=0.0,
        wall_s=0.0,
        oracle=oracle,
        baseline=baseline,
        measure=measure,
        episode_costs=costs.tolist(),
        episode_sq_err=sq.tolist(),
        episode_est_steps=steps,
    )


def test_point_value_is_the_share_of_the_gap_and_references_are_0_and_100():
    gen = np.random.default_rng(1)
    base = gen.normal(0, 0.1, 200)
    results = Results(
        [
            cell("oracle", 1.0 + base, oracle=True),
            cell("nominal", 2.0 + base, baseline=True),
            cell("learned", 1.25 + base),
        ]
    )
    assert results.get("S", "oracle").gap_closed_pct == pytest.approx(100.0)
    assert results.get("S", "nominal").gap_closed_pct == pytest.approx(0.0)
    assert results.get("S", "learned").gap_closed_pct == pytest.approx(75.0)


def test_paired_interval_is_narrow_for_common_noise_and_matches_the_delta_method():
    # Episodes share a common random part (the same seeds for every method): a paired interval
    # is much narrower than the costs' own spread. 400 episodes and 2000 resamples: the
    # bootstrap's standard error is within ~10 % of the delta method's (first order) value.
    gen = np.random.default_rng(2)
    n = 400
    common = gen.normal(0, 1.0, n)
    orc = 1.0 + common + gen.normal(0, 0.05, n)
    nom = 2.0 + common + gen.normal(0, 0.05, n)
    met = 1.5 + common + gen.normal(0, 0.05, n)
    cells = [cell("o", orc, oracle=True), cell("n", nom, baseline=True), cell("m", met)]
    point, ci = gap_closed(cells[2], cells[1], cells[0])
    assert point == pytest.approx(100 * (nom.mean() - met.mean()) / (nom.mean() - orc.mean()))
    # delta method for r = (N - M) / (N - O) on the paired differences a = N - M, b = N - O
    a, b = nom - met, nom - orc
    ra = a.mean() / b.mean()
    var = np.var(a - ra * b, ddof=1) / (n * b.mean() ** 2)
    delta_ci = 1.96 * 100 * math.sqrt(var)
    assert ci == pytest.approx(delta_ci, rel=0.1)
    unpaired_ci = 1.96 * 100 * math.sqrt(np.var(met) / n) / (nom.mean() - orc.mean())
    assert ci < unpaired_ci / 5


def test_estimation_scenarios_use_the_mse_in_db_and_references_of_the_same_measure():
    n = 50
    zero = np.ones(n)
    results = Results(
        [
            cell("ekf-oracle", zero, oracle=True, measure="mse", sq=np.full(n, 10.0 * 1e-3)),
            cell("ekf-nominal", zero, baseline=True, measure="mse", sq=np.full(n, 10.0 * 1e-1)),
            cell("kalmannet", zero, measure="mse", sq=np.full(n, 10.0 * 1e-2)),
        ]
    )
    # -30 dB oracle, -10 dB nominal, -20 dB: half of the 20 dB gap
    assert results.get("S", "kalmannet").gap_closed_pct == pytest.approx(50.0)
    assert results.get("S", "kalmannet").gap_closed_ci95 == pytest.approx(0.0, abs=1e-9)


def test_no_baseline_or_unequal_episodes_give_nan_not_a_guess():
    results = Results([cell("o", [1.0, 1.1], oracle=True), cell("m", [1.5, 1.6])])
    assert math.isnan(results.get("S", "m").gap_closed_pct)
    cells = [cell("o", [1.0, 1.1], oracle=True), cell("n", [2.0, 2.1, 2.2], baseline=True)]
    cells.append(cell("m", [1.5, 1.6]))
    point, ci = gap_closed(cells[2], cells[1], cells[0])
    assert math.isfinite(point) and math.isnan(ci)


def test_table_shows_the_gap_closed_column():
    results = Results(
        [
            cell("oracle", [1.0, 1.2, 1.1], oracle=True),
            cell("nominal", [2.0, 2.2, 2.1], baseline=True),
            cell("learned", [1.5, 1.7, 1.6]),
        ]
    )
    table = results.to_markdown()
    assert "gap closed (± 95% CI)" in table.splitlines()[0]
    assert "| 50 ± 0 % |" in table
    assert "gap_closed_pct" in results.to_csv().splitlines()[0]
