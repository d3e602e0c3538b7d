"""The training loop, the learned-noise Kalman filter, datasets and checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kalmannet_ctrl import _progress
from kalmannet_ctrl.errors import CheckpointError, DimensionError
from kalmannet_ctrl.estimators import (
    Estimator,
    FilterResult,
    KalmanFilter,
    LearnedNoiseKalmanFilter,
    steady_state_gain,
)
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    Trajectory,
    cartpole,
    linearize,
    misstate_noise,
)
from kalmannet_ctrl.training import (
    env_rollouts,
    estimation_loss,
    fit,
    load_checkpoint,
    save_checkpoint,
    split,
    trajectories,
)

TRUE = LinearGaussianModel(
    [[0.9, 0.2], [0.0, 0.8]],
    None,
    np.eye(2),
    np.diag([0.1, 0.05]),
    np.diag([0.5, 0.2]),
    x0_cov=np.eye(2),
)
NOMINAL = misstate_noise(TRUE, process_scale=5.0, measurement_scale=0.2)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return trajectories(TRUE, 200, 50, generator=g), trajectories(TRUE, 50, 50, generator=g)


def rel_fro(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def test_learned_noise_kf_recovers_the_true_covariances(data) -> None:
    """Maximum likelihood of the innovations from a 5x / 0.2x misstated start.

    200 trajectories x 50 steps give 10,000 two-dimensional innovations; the ML estimates'
    sampling error is a few percent, so the stated tolerance is 15 % (relative Frobenius) for
    each covariance, far below the initial errors (400 % and 80 %).
    """
    train, val = data
    est = LearnedNoiseKalmanFilter(NOMINAL)
    assert isinstance(est, Estimator)
    assert rel_fro(est.process_cov().detach(), TRUE.process_cov) > 3.0
    result = fit(
        est, train, val, steps=400, batch_size=64, lr=0.05, loss="nll", val_every=25, progress=False
    )
    assert result.nonfinite_step is None
    assert rel_fro(est.process_cov().detach(), TRUE.process_cov) < 0.15
    assert rel_fro(est.measurement_cov().detach(), TRUE.measurement_cov) < 0.15


def test_state_loss_recovers_the_optimal_gain_and_lowers_validation_loss(data) -> None:
    """Supervised training identifies the gain (the covariances only up to a common scale)."""
    train, val = data
    est = LearnedNoiseKalmanFilter(NOMINAL)
    with torch.no_grad():
        before = float(estimation_loss(est, val, "state"))
    result = fit(est, train, val, steps=300, batch_size=64, lr=0.05, val_every=25, progress=False)
    assert result.best_val_loss < 0.9 * before
    assert result.history and result.best_step > 0
    learned = steady_state_gain(
        TRUE.replace(
            process_cov=est.process_cov().detach(), measurement_cov=est.measurement_cov().detach()
        )
    ).gain
    optimal = steady_state_gain(TRUE).gain
    nominal = steady_state_gain(NOMINAL).gain
    assert rel_fro(learned, optimal) < 0.1 < rel_fro(nominal, optimal)
    # the learned filter is close to the oracle KF's MSE on validation data
    with torch.no_grad():
        oracle = float(((KalmanFilter(TRUE).filter(val.y).mean - val.x) ** 2).mean())
    assert result.best_val_loss < 1.03 * oracle


def test_unsupervised_measurement_loss_needs_no_labels(data) -> None:
    train, val = data
    unlabeled = Trajectory(None, train.y, train.u)
    est = LearnedNoiseKalmanFilter(NOMINAL)
    with torch.no_grad():
        before = float(estimation_loss(est, val, "state"))
    fit(
        est,
        unlabeled,
        Trajectory(None, val.y, val.u),
        steps=200,
        batch_size=64,
        lr=0.05,
        loss="measurement",
        val_every=25,
        progress=False,
    )
    with torch.no_grad():
        after = float(estimation_loss(est, val, "state"))
    assert after < 0.9 * before  # better state estimates without ever seeing a state


def test_same_seed_same_training(data) -> None:
    train, val = data
    runs = []
    for _ in range(2):
        est = LearnedNoiseKalmanFilter(NOMINAL)
        fit(est, train, val, steps=20, batch_size=16, lr=0.05, val_every=10, seed=3, progress=False)
        runs.append([p.detach().clone() for p in est.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_fit_reports_its_steps_even_with_the_bar_hidden(data) -> None:
    # the comparison's status line learns how far training is from these reports
    train, val = data
    seen = []
    with _progress.reporting(lambda *r: seen.append(r), every=0.0):
        fit(LearnedNoiseKalmanFilter(NOMINAL), train, val, steps=5, lr=0.05, progress=False)
    assert seen == [("fit", k, 5) for k in range(1, 6)]


class _Exploding(nn.Module):
    """A test double whose loss turns NaN once its weight has moved (after a few steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.calls = 0

    def filter(self, y, u=None):
        self.calls += 1
        mean = (self.w * y).to(torch.float64)
        if self.training and self.calls > 4:
            mean = mean * float("nan")
        return FilterResult(mean, None)


def test_nonfinite_loss_restores_the_best_weights() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 5, 2, generator=g, dtype=torch.float64)
    data = Trajectory(x, x, None)
    est = _Exploding()
    with pytest.warns(RuntimeWarning, match="non-finite at step"):
        result = fit(est, data, steps=50, lr=0.1, val_every=1, progress=False)
    assert result.nonfinite_step is not None and result.steps == result.nonfinite_step
    assert torch.isfinite(est.w)
    # the weight left in place is the one that gave the best validation loss
    est.eval()
    with torch.no_grad():
        assert float(estimation_loss(est, data)) == pytest.approx(result.best_val_loss, rel=1e-12)


def test_fit_errors(data) -> None:
    train, _ = data
    est = LearnedNoiseKalmanFilter(NOMINAL)
    with pytest.raises(ValueError, match="loss: expected one of"):
        fit(est, train, loss="mae")
    with pytest.raises(DimensionError, match=r"train\.x: state labels"):
        fit(est, Trajectory(None, train.y, None))
    with pytest.raises(ValueError, match="steps"):
        fit(est, train, steps=0)
    with pytest.raises(TypeError, match=r"estimator: expected a torch\.nn\.Module"):
        fit(KalmanFilter(TRUE), train)
    with pytest.raises(TypeError, match="train: expected a Trajectory"):
        fit(est, [1, 2, 3])


def test_checkpoint_round_trip_and_corrupt_files(tmp_path: Path, data) -> None:
    train, val = data
    est = LearnedNoiseKalmanFilter(NOMINAL)
    fit(est, train, val, steps=30, batch_size=32, lr=0.05, val_every=10, progress=False)
    path = save_checkpoint(est, tmp_path / "ckpt" / "lnkf.pt", steps=30)
    loaded, meta = load_checkpoint(path, LearnedNoiseKalmanFilter, NOMINAL)
    assert meta == {"steps": 30}
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.filter(val.y).mean, est.filter(val.y).mean, rtol=0, atol=0
        )
    raw = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt", LearnedNoiseKalmanFilter, NOMINAL)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a kalmannet_ctrl checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt", LearnedNoiseKalmanFilter, NOMINAL)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt", LearnedNoiseKalmanFilter, NOMINAL)
    with pytest.raises(
        CheckpointError, match="cls: the checkpoint holds a LearnedNoiseKalmanFilter"
    ):
        load_checkpoint(path, _Exploding)
    three = LinearGaussianModel(np.eye(3) * 0.5, None, np.eye(3), np.eye(3), np.eye(3))
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path, LearnedNoiseKalmanFilter, three)
    assert not list((tmp_path / "ckpt").glob("*.tmp"))  # written atomically


def test_env_rollouts_are_labelled_and_padded() -> None:
    data = env_rollouts(
        "kalmannet_ctrl/CartPole-v0",
        6,
        controller="random",
        steps=80,
        seed=2,
        env_kwargs={"mismatch": {"pole_length": 0.45, "pole_mass": 2.0, "cart_mass": 0.6}},
    )
    assert data.x.shape == (6, 80, 4) and data.y.shape == (6, 80, 2) and data.u.shape == (6, 80, 1)
    # random actions topple the pole: rows after the end are NaN measurements (predict only)
    ended = torch.isnan(data.y).any(-1)
    assert ended.any() and not ended[:, 0].any()
    first_nan = ended.float().argmax(1)
    for b in range(6):
        if ended[b].any():
            assert ended[b, first_nan[b] :].all()
    # labels are the env's true states: the measurement is (x, θ) of it plus small noise
    live = ~ended
    assert float((data.y[..., 0] - data.x[..., 0])[live].abs().max()) < 0.1
    assert math.isfinite(float(data.x.sum()))
    res = KalmanFilter(linearize(cartpole(), [0.0] * 4, [0.0])).filter(data.y, data.u)
    assert torch.isfinite(res.mean).all()


def test_split() -> None:
    g = torch.Generator().manual_seed(0)
    data = trajectories(TRUE, 10, 4, generator=g)
    a, b, c = split(data, (0.6, 0.2, 0.2), seed=1)
    assert (a.y.shape[0], b.y.shape[0], c.y.shape[0]) == (6, 2, 2)
    together = torch.cat([a.y, b.y, c.y]).sum(0)
    torch.testing.assert_close(together, data.y.sum(0))
    with pytest.raises(ValueError, match="fractions"):
        split(data, (0.5, 0.2))


# -- the data-centric baseline -------------------------------------------------------------------
def test_rnn_estimator_protocol_nan_rows_and_training(tmp_path: Path, data) -> None:
    from kalmannet_ctrl.estimators import RNNEstimator

    train, val = data
    train32 = Trajectory(train.x.float(), train.y.float(), None)
    val32 = Trajectory(val.x.float(), val.y.float(), None)
    rnn = RNNEstimator(TRUE, hidden_size=16, generator=torch.Generator().manual_seed(0))
    assert isinstance(rnn, Estimator)
    rnn.set_normalization(train32)
    y = val32.y[:4, :10].clone()
    y[1, 3] = float("nan")  # a missing measurement
    res = rnn.filter(y)
    assert res.mean.shape == (4, 10, 2) and res.cov is None and torch.isfinite(res.mean).all()
    state = rnn.init(4)
    steps = []
    for t in range(10):
        x, state = rnn.step(state, y[:, t])
        steps.append(x)
    torch.testing.assert_close(torch.stack(steps, 1), res.mean, rtol=1e-5, atol=1e-6)
    # gradients reach every parameter
    res.mean.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in rnn.parameters())
    # training lowers the validation loss
    with torch.no_grad():
        before = float(estimation_loss(rnn, val32))
    result = fit(
        rnn, train32, val32, steps=150, batch_size=32, lr=1e-2, val_every=50, progress=False
    )
    assert result.best_val_loss < 0.5 * before
    # reset restarts flagged rows
    state = rnn.reset(state, [True, False, False, True])
    assert torch.equal(state.hidden[:, 0], torch.zeros_like(state.hidden[:, 0]))
    assert not torch.equal(state.hidden[:, 1], torch.zeros_like(state.hidden[:, 1]))
    # checkpoint round trip, normalisation included
    path = save_checkpoint(rnn, tmp_path / "rnn.pt")
    loaded, _ = load_checkpoint(path, RNNEstimator, TRUE)
    with torch.no_grad():
        torch.testing.assert_close(loaded.filter(val32.y).mean, rnn.filter(val32.y).mean)
    with pytest.raises(DimensionError, match=r"y: expected shape \(B, T, 2\)"):
        rnn.filter(torch.zeros(3, 2))


def test_kalmannet_fit_and_checkpoint(tmp_path: Path) -> None:
    """A short fit lowers KalmanNet's validation loss; the checkpoint round-trips exactly."""
    from kalmannet_ctrl.estimators import KalmanNet
    from kalmannet_ctrl.models import linear_canonical, rotate_dynamics

    nominal = linear_canonical(2, q2=1.0, r2=1.0)
    true = rotate_dynamics(nominal, 10.0)
    g = torch.Generator().manual_seed(4)
    train = Trajectory(*(t.float() for t in trajectories(true, 200, 20, generator=g)))
    val = Trajectory(*(t.float() for t in trajectories(true, 50, 20, generator=g)))
    knet = KalmanNet(nominal, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(estimation_loss(knet, val))
    result = fit(knet, train, val, steps=80, batch_size=32, lr=5e-3, val_every=20, progress=False)
    assert result.best_val_loss < 0.7 * before
    path = save_checkpoint(knet, tmp_path / "knet.pt", trained_steps=result.steps)
    loaded, meta = load_checkpoint(path, KalmanNet, nominal)
    assert meta["trained_steps"] == 80
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.filter(val.y).mean, knet.filter(val.y).mean, rtol=0, atol=0
        )


def test_truncated_bptt(data) -> None:
    """One chunk as long as the sequence is full backpropagation; short chunks still learn."""
    from kalmannet_ctrl.estimators import RNNEstimator

    train, val = data
    train32 = Trajectory(train.x.float(), train.y.float(), None)
    val32 = Trajectory(val.x.float(), val.y.float(), None)

    def trained(**kwargs):
        rnn = RNNEstimator(TRUE, hidden_size=8, generator=torch.Generator().manual_seed(1))
        rnn.set_normalization(train32)
        result = fit(
            rnn,
            train32,
            val32,
            steps=15,
            batch_size=16,
            lr=1e-2,
            val_every=5,
            progress=False,
            **kwargs,
        )
        return rnn, result

    full, _ = trained()
    whole, _ = trained(tbptt=50)  # T = 50: a single chunk
    for a, b in zip(full.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    untrained = RNNEstimator(TRUE, hidden_size=8, generator=torch.Generator().manual_seed(1))
    untrained.set_normalization(train32)
    with torch.no_grad():
        before = float(estimation_loss(untrained, val32))
    short, result = trained(tbptt=10)  # 5 updates per minibatch
    assert result.best_val_loss < 0.8 * before
    with pytest.raises(ValueError, match="tbptt: truncated backpropagation needs loss='state'"):
        fit(short, train32, steps=1, tbptt=5, loss="measurement", progress=False)
