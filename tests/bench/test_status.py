"""Progress while a comparison runs: bars that stay quiet off a terminal, the counts reported
from the cells (also from worker processes), and the estimate of the time left."""

from __future__ import annotations

import io

import pytest

from kalmannet_ctrl import _progress
from kalmannet_ctrl.bench import LocalExecutor, Scenario, get_method
from kalmannet_ctrl.bench.runner import CellTask, run_cell
from kalmannet_ctrl.bench.status import Status


def test_a_bar_off_a_terminal_draws_nothing_but_still_reports(monkeypatch):
    seen = []
    stream = io.StringIO()  # not a terminal, as a CI log or a file
    monkeypatch.setattr("sys.stderr", stream)
    with _progress.reporting(lambda *r: seen.append(r), every=0.0):
        for _ in _progress.bar(range(3), desc="fit"):
            pass
        b = _progress.bar(desc="rl", total=10)
        b.update(4)
        b.update(6)
        b.close()
    assert stream.getvalue() == ""
    assert seen == [("fit", 1, 3), ("fit", 2, 3), ("fit", 3, 3), ("rl", 4, 10), ("rl", 10, 10)]
    assert b.disable  # tqdm's disable=None: hidden because the output is not a terminal
    monkeypatch.setattr(stream, "isatty", lambda: True, raising=False)
    shown = _progress.bar(desc="x", total=1)
    assert not shown.disable and shown.mininterval == _progress.MININTERVAL
    shown.close()


def test_reports_are_throttled_but_the_last_unit_always_arrives():
    seen = []
    with _progress.reporting(lambda *r: seen.append(r), every=3600.0):
        for _ in _progress.bar(range(100), desc="fit", enabled=False):
            pass
    assert seen[0] == ("fit", 1, 100) and seen[-1] == ("fit", 100, 100) and len(seen) == 2
    _progress.report("after", 1, 1)  # no reporter outside the block: nothing happens


def test_status_line_and_remaining_time_from_rates_and_finished_cells():
    now = [0.0]
    status = Status(["a", "a", "b"], workers=1, clock=lambda: now[0])
    assert status.remaining_s() is None  # nothing known yet
    status.update(("S", "a"), "start", 0, None)
    now[0] = 10.0
    status.finish(("S", "a"))  # a took 10 s
    status.update(("T", "a"), "start", 0, None)
    status.update(("T", "a"), "fit", 0, 100)
    now[0] = 14.0
    status.update(("T", "a"), "fit", 40, 100)  # 0.1 s per step: 6 s left in this stage
    # the running a: 6 s; the queued b: no b finished, so the mean of all finished cells, 10 s
    assert status.remaining_s() == pytest.approx(16.0)
    assert status.line() == "≈ 16 s left | T / a: fit 40/100"
    status.workers = 2
    assert status.remaining_s() == pytest.approx(8.0)
    status.finish(("S", "a"))
    status.update(("S", "a"), "evaluate", 40, 40)  # a late report of a finished cell
    assert ("S", "a") not in status.running


def test_worker_processes_report_the_evaluation_of_their_cells():
    scenario = Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=30)
    tasks = [CellTask(scenario, get_method(m), 2, 0, None) for m in ("lqg-oracle", "lqg-nominal")]
    seen = []
    out = dict(LocalExecutor(2).map(run_cell, tasks, status=lambda *r: seen.append(r)))
    assert sorted(out) == [0, 1]
    cells = {r[0] for r in seen}
    assert cells == {(scenario.label, "lqg-oracle"), (scenario.label, "lqg-nominal")}
    for cell in cells:
        stages = [r[1:] for r in seen if r[0] == cell]
        assert stages[0] == ("start", 0, None) and stages[-1] == ("evaluate", 30, 30)
