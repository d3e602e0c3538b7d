"""Training on segments started from recorded states: the supervised fit and the closed loop."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG, LQR
from kalmannet_ctrl.errors import DimensionError, ParameterError
from kalmannet_ctrl.estimators import KalmanNet, LearnedNoiseKalmanFilter
from kalmannet_ctrl.estimators.base import GaussianState
from kalmannet_ctrl.models import LinearGaussianModel, Trajectory, cartpole
from kalmannet_ctrl.training import (
    closed_loop_cost,
    fit,
    fit_closed_loop,
    learned_lqg,
    trajectories,
)
from kalmannet_ctrl.training._segments import (
    record_filter,
    resume,
    run_segments,
    stack_states,
    take_states,
    window,
)
from kalmannet_ctrl.training.closed_loop import _closed_loop, _Noise
from kalmannet_ctrl.training.fit import _update

from .gradients import assert_gradient_matches_central_differences

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
MODEL = LinearGaussianModel(
    [[0.9, 0.2], [0.0, 0.8]],
    [[0.0], [1.0]],
    [[1.0, 0.0]],
    np.diag([0.1, 0.05]),
    np.diag([0.2]),
    x0_cov=np.eye(2),
)


def _problem() -> tuple:
    env = gym.make(LINEAR).unwrapped
    return env.nominal_model, env.true_model, env.cost


# -- the recorded states ---------------------------------------------------------------------------
def test_stack_and_take_states_keep_the_structure_and_broadcast_shared_leaves() -> None:
    shared = torch.eye(2)
    states = [GaussianState(torch.full((3, 2), float(t)), shared, None) for t in range(4)]
    stacked = stack_states(states, 3)
    assert isinstance(stacked, GaussianState) and stacked.fresh is None
    assert stacked.mean.shape == (3, 4, 2) and stacked.cov.shape == (3, 4, 2, 2)
    picked = take_states(stacked, torch.tensor([2, 0]), torch.tensor([3, 1]))
    assert picked.mean.tolist() == [[3.0, 3.0], [1.0, 1.0]]
    torch.testing.assert_close(picked.cov, shared.expand(2, 2, 2))
    with pytest.raises(TypeError, match="states"):
        stack_states([GaussianState(torch.zeros(3, 2), shared, None), (torch.zeros(3, 2),)], 3)
    with pytest.raises(TypeError, match="None at some steps"):
        stack_states([(torch.zeros(3, 2), None), (torch.zeros(3, 2), torch.ones(3))], 3)


@pytest.mark.parametrize("make", [LearnedNoiseKalmanFilter, KalmanNet])
@pytest.mark.parametrize("system", ["linear", "cartpole"])
def test_segments_resumed_from_recorded_filter_states_replay_the_filter(make, system) -> None:
    """A segment started at step t from the state recorded after t − 1 (a fresh start at
    t = 0) gives exactly the estimates of the whole-sequence run (KF, EKF and KalmanNet)."""
    model = MODEL if system == "linear" else cartpole()
    traj = trajectories(model, 5, 12, input_std=0.5, generator=torch.Generator().manual_seed(0))
    est = make(model)
    y, u = traj.y.to(next(est.parameters()).dtype), traj.u
    mean, states = record_filter(est, y, u)
    with torch.no_grad():
        torch.testing.assert_close(mean, est.filter(y, u).mean, rtol=0, atol=1e-12)
        rows, times, L = torch.tensor([0, 3, 4, 1]), torch.tensor([0, 5, 7, 1]), 4
        state = resume(states, rows, times, est.reset)
        u_before = u[rows, (times - 1).clamp_min(0)]
        y_seg, u_seg = window(y, rows, times, L), window(u, rows, times, L)
        got = run_segments(est, state, y_seg, u_seg, u_before)
    # Equal up to float64 rounding: the segments' batch (4 rows) is not the whole run's (5), and
    # BLAS may take another kernel for another batch size (1e-16 differences on some CPUs). A
    # segment resumed from the wrong step or state is off by far more (its first estimate
    # alone moves by the measurement's innovation).
    torch.testing.assert_close(got, window(mean, rows, times, L), rtol=0, atol=1e-12)


def test_closed_loop_segments_from_recorded_states_replay_the_closed_loop() -> None:
    """Segments started from the recorded plant and controller states (KalmanNet-LQG), with
    the recorded noise continued, reproduce the recorded closed loop bit for bit."""
    nominal, true, cost = _problem()
    ctrl = LQG(nominal, cost, KalmanNet(nominal, generator=torch.Generator().manual_seed(0)))
    noise = _Noise(true, torch.Generator().manual_seed(1))
    x0, w, v = noise.episodes(6, 30)
    with torch.no_grad():
        costs, xs, states = _closed_loop(ctrl, true, x0, ctrl.init(6), w, v, cost, record=True)
        torch.testing.assert_close(costs, closed_loop_cost(ctrl, true, x0, w, v), rtol=0, atol=0)
        X, S = torch.stack(xs, 1), stack_states(states, 6)
        rows, times, L = torch.tensor([0, 2, 5, 3]), torch.tensor([0, 1, 9, 20]), 8
        state = resume(S, rows, times, ctrl.reset_rows)
        segment = _closed_loop(
            ctrl,
            true,
            X[rows, times],
            state,
            window(w, rows, times, L),
            window(v, rows, times, L),
            cost,
            record=True,
        )[1]
    torch.testing.assert_close(torch.stack(segment, 1), window(X, rows, times, L + 1))


def test_segment_cost_gradient_matches_finite_differences() -> None:
    """The truncated objective (stage costs plus the terminal x'Px, over L) against central
    differences in the learned-noise filter's parameters, from a recorded mid-episode state."""
    nominal, true, cost = _problem()
    est = LearnedNoiseKalmanFilter(nominal)
    ctrl = LQG(nominal, cost, est, input_bounds=(-2.0, 2.0))
    noise = _Noise(true, torch.Generator().manual_seed(2))
    x0, w, v = noise.episodes(4, 10)
    with torch.no_grad():
        _, xs, states = _closed_loop(ctrl, true, x0, ctrl.init(4), w, v, cost, record=True)
    x, state = xs[5], states[4]  # the state before step 5
    w_seg, v_seg = noise.sequences(4, 6)
    P = LQR(nominal, cost).value_matrix

    def loss() -> torch.Tensor:
        return _closed_loop(ctrl, true, x, state, w_seg, v_seg, cost, terminal=P)[0].mean()

    params = [p for p in est.parameters() if p.requires_grad]
    assert_gradient_matches_central_differences(loss, params, rel=1e-5, abs=1e-9)
    # the terminal term is the LQR's cost-to-go of the end state, per step of the segment
    with torch.no_grad():
        stage, ends, _ = _closed_loop(ctrl, true, x, state, w_seg, v_seg, cost, record=True)
        terminal = torch.einsum("bi,ij,bj->b", ends[-1], P, ends[-1]) / 6
        segment = _closed_loop(ctrl, true, x, state, w_seg, v_seg, cost, terminal=P)[0]
        torch.testing.assert_close(segment, stage + terminal)


# -- fit on segments -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> tuple[Trajectory, Trajectory]:
    g = torch.Generator().manual_seed(0)
    return (
        trajectories(MODEL, 40, 30, input_std=0.5, generator=g),
        trajectories(MODEL, 10, 30, input_std=0.5, generator=g),
    )


def test_fit_on_whole_length_segments_is_fit_on_whole_sequences(data) -> None:
    """segment = T: every segment starts afresh at t = 0, the rows drawn are the same."""
    train, val = data
    runs = []
    for segment in (None, 30):
        est = LearnedNoiseKalmanFilter(MODEL)
        fit(
            est,
            train,
            val,
            steps=6,
            batch_size=8,
            lr=0.05,
            val_every=2,
            segment=segment,
            progress=False,
        )
        runs.append([p.detach().clone() for p in est.parameters()])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_fit_on_segments_learns_and_is_seeded(data) -> None:
    train, val = data
    weights, results = [], []
    for seed in (0, 0, 1):
        est = LearnedNoiseKalmanFilter(MODEL, init_process_cov=5 * MODEL.process_cov)
        results.append(
            fit(
                est,
                train,
                val,
                steps=20,
                batch_size=64,
                lr=0.05,
                val_every=5,
                segment=5,
                seed=seed,
                progress=False,
            )
        )
        weights.append([p.detach().clone() for p in est.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(weights[0], weights[2], strict=True))
    first = results[0].history[0]["val_loss"]
    assert results[0].best_val_loss < first and results[0].best_step > 0


def test_fit_segment_errors(data) -> None:
    train, _ = data
    est = LearnedNoiseKalmanFilter(MODEL)
    with pytest.raises(ParameterError, match="segment"):
        fit(est, train, segment=0, progress=False)
    with pytest.raises(ValueError, match="segment: training on segments needs loss='state'"):
        fit(est, train, segment=5, loss="measurement", progress=False)
    with pytest.raises(ValueError, match="segment: pass either tbptt or segment"):
        fit(est, train, segment=5, tbptt=5, progress=False)
    with pytest.raises(DimensionError, match="segment: expected at most the sequences' 30"):
        fit(est, train, segment=31, progress=False)


# -- fit_closed_loop on segments -------------------------------------------------------------------
def test_fit_closed_loop_on_segments_lowers_the_cost_and_is_seeded() -> None:
    """The default (segments of 50 steps from recorded states, 256 per minibatch) on the
    mismatched linear LQG: the validation cost falls; the same seed gives the same weights."""
    nominal, true, cost = _problem()
    weights, records = [], []
    for seed in (3, 3, 4):
        ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal))
        records.append(
            fit_closed_loop(
                ctrl,
                true,
                steps=8,
                horizon=60,
                episodes=32,
                val_episodes=32,
                val_every=4,
                lr=5e-2,
                seed=seed,
                progress=False,
            )
        )
        weights.append([p.detach().clone() for p in ctrl.estimator.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(weights[0], weights[1], strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(weights[0], weights[2], strict=True))
    record = records[0]
    assert record.best_val_loss < 0.97 * record.history[0]["val_loss"] or record.best_step > 0
    assert record.best_step > 0


def test_fit_closed_loop_segment_errors() -> None:
    nominal, true, cost = _problem()
    ctrl = LQG(nominal, cost, LearnedNoiseKalmanFilter(nominal))
    with pytest.raises(ParameterError, match="segment"):
        fit_closed_loop(ctrl, true, segment=0, progress=False)
    with pytest.raises(ParameterError, match="lr_schedule"):
        fit_closed_loop(ctrl, true, lr_schedule="step", progress=False)


def test_builder_reports_its_time_per_stage_and_passes_the_simulator_options() -> None:
    options = {"horizon": 15, "episodes": 8, "val_episodes": 4, "val_every": 1, "segment": 5}
    _, info = learned_lqg(
        LINEAR,
        "kalmannet",
        episodes=6,
        steps=20,
        fit_steps=2,
        segment=10,
        closed_loop_steps=2,
        closed_loop_options=options,
        simulator_fit_steps=5,
        simulator_options={"batch_size": 16, "val_every": 1},
        progress=False,
    )
    assert set(info["time_s"]) == {"rollouts", "fit", "simulator", "closed_loop"}
    assert sum(info["time_s"].values()) == pytest.approx(info["train_s"], rel=0.05, abs=0.05)
    assert info["closed_loop"].steps == 2
    with pytest.raises(TypeError, match="unexpected keyword"):
        learned_lqg(
            LINEAR,
            episodes=4,
            steps=10,
            fit_steps=1,
            closed_loop_steps=1,
            simulator_options={"stepz": 3},
            progress=False,
        )


# -- the update's finiteness check -----------------------------------------------------------------
def test_update_refuses_non_finite_gradients_and_steps_through_an_overflowing_norm() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    assert not _update((p * torch.tensor([1.0, float("inf"), 1.0])).sum(), opt, [p], 1.0)
    assert torch.equal(p.detach(), torch.ones(3))  # no step
    opt.zero_grad()
    assert not _update((p * float("nan")).sum(), opt, [p], None)
    opt.zero_grad()
    # finite gradients whose float32 norm overflows: clipped to zero and stepped, as before
    assert _update((p * 3e38).sum(), opt, [p], 1.0)
    assert torch.equal(p.detach(), torch.ones(3))
    opt.zero_grad()
    assert _update((p * 2.0).sum(), opt, [p], None)
    torch.testing.assert_close(p.detach(), -torch.ones(3))
