"""The ``kalmannet-ctrl`` command line."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from kalmannet_ctrl import cli


def test_demo_prints_table_and_reproduces_paper_ekf(capsys) -> None:
    assert cli.main(["demo", "--trajectories", "200", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| scenario | T | filter | model | MSE [dB]" in out
    rows = cli.run_demo(trajectories=200, progress=False)
    by_key = {(r["scenario"].split(",")[0], r["filter"], r["model"]): r for r in rows}
    # KF only for the linear scenario; EKF and UKF for both; nominal and true model each
    assert len(rows) == 10
    assert ("synthetic nonlinear", "KF", "true") not in by_key
    for r in rows:
        assert math.isfinite(r["mse_db"]) and r["wall_s"] > 0
    # the true model always beats the mismatched nominal one
    for (scenario, name, which), r in by_key.items():
        if which == "nominal":
            assert by_key[(scenario, name, "true")]["mse_db"] < r["mse_db"] - 3.0
    # KF, EKF and UKF coincide on the linear model
    lin = [by_key[("linear 2x2", f, "true")]["mse_db"] for f in ("KF", "EKF", "UKF")]
    assert max(lin) - min(lin) < 1e-6
    # full-information EKF on the synthetic model: the paper reports -19.58 dB (T = 100); with
    # 200 trajectories x 100 steps the estimate's spread is a few tenths of a dB
    assert by_key[("synthetic nonlinear", "EKF", "true")]["mse_db"] == pytest.approx(
        -19.58, abs=1.0
    )


def test_demo_is_deterministic_for_a_seed() -> None:
    a = cli.run_demo(trajectories=20, steps=10, seed=3, progress=False)
    b = cli.run_demo(trajectories=20, steps=10, seed=3, progress=False)
    assert [r["mse_db"] for r in a] == [r["mse_db"] for r in b]


def test_no_command_prints_help(capsys) -> None:
    assert cli.main([]) == 2
    assert "usage: kalmannet-ctrl" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["demo", "--trajectories", "0"], ["demo", "--steps", "x"], ["nope"]]
)
def test_bad_arguments_exit_nonzero_with_message(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kalmannet_ctrl", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "kalmannet-ctrl" in proc.stdout
