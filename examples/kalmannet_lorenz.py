"""Learned filters: KalmanNet and a learned-noise EKF on a Lorenz attractor with a misstated sensor.
=================================================================================================

The designer's nominal model measures the state directly (h = identity); the real sensor is
rotated by 1 degree. With accurate measurements (1/r² = 20 dB) the EKF on the nominal model
trusts the wrong h and loses about 10 dB against the EKF on the true model. Both learned filters
keep the nominal model and learn from 1000 labelled trajectories:

- the learned-noise EKF tunes the noise covariances it has (a model-based fix);
- KalmanNet replaces the Kalman gain by a recurrent network (a DNN-aided fix).

The trained KalmanNet is saved, loaded back and run on measurements with dropouts (NaN rows are
predict-only steps). About a minute and a half on 2 CPU cores.

    python examples/kalmannet_lorenz.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from kalmannet_ctrl.estimators import ExtendedKalmanFilter, KalmanNet, LearnedNoiseKalmanFilter
from kalmannet_ctrl.metrics import mse_db
from kalmannet_ctrl.models import Trajectory, lorenz, noise_from_db, set_parameters
from kalmannet_ctrl.training import fit, load_checkpoint, save_checkpoint, trajectories


def as_float32(traj: Trajectory) -> Trajectory:
    return Trajectory(*(t.float() for t in traj))


def test_mse_db(estimator, test: Trajectory) -> float:
    with torch.no_grad():
        estimate = estimator.filter(test.y, test.u).mean
    return mse_db(estimate.double(), test.x)


def main() -> None:
    torch.manual_seed(0)
    q2, r2 = noise_from_db(20.0, -20.0)  # 1/r² = 20 dB, q²/r² = −20 dB
    true = lorenz(q2=q2, r2=r2, measurement_rotation_deg=1.0)  # what the sensor really does
    nominal = set_parameters(true, measurement_rotation_deg=0.0)  # what the designer assumes

    g = torch.Generator().manual_seed(0)
    train = trajectories(true, 1000, 100, generator=g)
    val = trajectories(true, 100, 100, generator=g)
    test = trajectories(true, 100, 1000, generator=g)  # 10x longer than the training sequences

    print(f"EKF, nominal model:  {test_mse_db(ExtendedKalmanFilter(nominal), test):7.2f} dB")
    print(f"EKF, true model:     {test_mse_db(ExtendedKalmanFilter(true), test):7.2f} dB (oracle)")

    learned_noise = LearnedNoiseKalmanFilter(nominal)
    # each update on 128 segments of 20 steps, resumed from filter states recorded along the
    # training sequences: as accurate as 300 updates on 32 whole sequences, in a quarter the time
    fit(learned_noise, train, val, steps=200, segment=20, batch_size=128, lr=0.02, seed=0)
    print(f"learned-noise EKF:   {test_mse_db(learned_noise, test):7.2f} dB")

    net = KalmanNet(nominal, generator=torch.Generator().manual_seed(0))
    # the same on 256 segments: as accurate as 800 updates on 32 whole sequences, in a tenth
    record = fit(
        net,
        as_float32(train),
        as_float32(val),
        steps=200,
        segment=20,
        batch_size=256,
        lr=4e-3,
        seed=0,
    )
    print(
        f"KalmanNet:           {test_mse_db(net, as_float32(test)):7.2f} dB "
        f"({record.steps} steps, best validation loss at step {record.best_step})"
    )

    with tempfile.TemporaryDirectory() as folder:
        path = save_checkpoint(net, Path(folder) / "kalmannet.pt", seed=0)
        loaded, _ = load_checkpoint(path, KalmanNet, nominal)  # the nominal model is not saved

    dropped = as_float32(test)
    y = dropped.y.clone()
    y[:, 1::5] = float("nan")  # every fifth measurement lost
    with torch.no_grad():
        estimate = loaded.filter(y).mean
    print(f"KalmanNet (loaded), 20 % of measurements lost: {mse_db(estimate, dropped.x):7.2f} dB")


if __name__ == "__main__":
    main()
