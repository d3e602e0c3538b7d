"""Throughput of the batched Kalman filter against filterpy's predict/update loop.

Prints one table: time per trajectory-step of ``KalmanFilter.filter`` at B in {1, 32, 1024} and
n_x in {2, 6}, of the single-trajectory ``step`` (the closed-loop case, B = 1), and of filterpy's
``predict(); update()`` on the same model, with the ratio filterpy / ours (higher is better).
The step loop is timed over a first episode (a new filter, which computes the covariance
recursion as it goes) and over later episodes (the recursion from the model's prior is kept, and
a one-trajectory step along it is one affine map). Both loops time the calls alone: the
measurements, inputs (and filterpy's column vectors) are sliced before the clock starts. The
step rows' filterpy time is measured in turn with the later episodes' loop (best of
``--repeats`` each), so that a change of the machine's load between the two does not skew their
ratio.

Usage::

    python benchmarks/filter_speed.py [--steps 1000] [--repeats 5] [--threads 1]

filterpy's cost per trajectory-step does not depend on B (it filters one trajectory at a time),
so it is measured on one trajectory: once per n_x for the filter rows, and in turn with the step
rows for theirs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from _common import machine, make_parser, parse
from filterpy.kalman import KalmanFilter as FilterPyKF
from tqdm import tqdm

from kalmannet_ctrl.estimators import KalmanFilter
from kalmannet_ctrl.models import LinearGaussianModel


def make_model(n_x: int, seed: int = 0) -> LinearGaussianModel:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n_x, n_x))
    A *= 0.95 / max(abs(np.linalg.eigvals(A)))
    n_y = max(1, n_x // 2)
    C = rng.normal(size=(n_y, n_x))
    return LinearGaussianModel(
        A,
        rng.normal(size=(n_x, 1)),
        C,
        process_cov=0.1 * np.eye(n_x),
        measurement_cov=np.eye(n_y),
        x0_cov=np.eye(n_x),
    )


def best_of(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def filterpy_loop(model: LinearGaussianModel, y: np.ndarray, u: np.ndarray) -> Callable[[], None]:
    """One pass of filterpy's ``predict(); update()`` over y (T, n_y) with inputs u (T, n_u)."""
    m = model.numpy()
    steps = [(u[t].reshape(-1, 1), y[t].reshape(-1, 1)) for t in range(y.shape[0])]

    def run() -> None:
        kf = FilterPyKF(dim_x=model.n_x, dim_z=model.n_y, dim_u=model.n_u)
        kf.F, kf.B, kf.H = m["A"], m["B"], m["C"]
        kf.Q, kf.R = m["process_cov"], m["measurement_cov"]
        kf.x, kf.P = m["x0_mean"].reshape(-1, 1).copy(), m["x0_cov"].copy()
        for u_t, y_t in steps:
            kf.predict(u=u_t)
            kf.update(y_t)

    return run


def time_step(
    model: LinearGaussianModel,
    y: torch.Tensor,
    u: torch.Tensor,
    repeats: int,
    filterpy: Callable[[], None],
) -> tuple[float, float, float]:
    """Per-step time of the B = 1 step loop over one episode: a new filter (the covariance
    recursion is computed along the way), a filter that has run an episode before, and
    ``filterpy``'s loop on the same data, each best of ``repeats``; the last two in turn."""
    T = y.shape[1]
    steps = [(y[:, t], u[:, t - 1] if t else None) for t in range(T)]

    def episode(kf: KalmanFilter) -> None:
        state = kf.init(1)
        for y_t, u_prev in steps:
            _, state = kf.step(state, y_t, u_prev)

    cold = best_of(lambda: episode(KalmanFilter(model)), repeats)
    kf = KalmanFilter(model)
    episode(kf)
    warm, fp = np.inf, np.inf
    for _ in range(repeats):
        warm = min(warm, best_of(lambda: episode(kf), 1))
        fp = min(fp, best_of(filterpy, 1))
    return cold / T, warm / T, fp / T


def main() -> None:
    parser = make_parser(__doc__, steps=(1000, "time steps per trajectory"))
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    args = parse(parser)
    T = args.steps
    rows = []
    cases = [(n_x, B) for n_x in (2, 6) for B in (1, 32, 1024)]
    with torch.no_grad():
        fp_cache: dict[int, float] = {}
        for n_x, B in tqdm(cases, desc="filter_speed", leave=False):
            model = make_model(n_x)
            gen = torch.Generator().manual_seed(n_x)
            u = torch.randn(B, T, 1, dtype=torch.float64, generator=gen)
            traj = model.simulate(T, B, u=u, generator=gen)
            filterpy = filterpy_loop(model, traj.y[0].numpy(), traj.u[0].numpy())
            if n_x not in fp_cache:
                fp_cache[n_x] = best_of(filterpy, args.repeats) / T
            fp = fp_cache[n_x]
            kf = KalmanFilter(model)
            kf.filter(traj.y[:, :10], traj.u[:, :10])  # warm-up
            ours = best_of(lambda kf=kf, tr=traj: kf.filter(tr.y, tr.u), args.repeats) / (T * B)
            rows.append((f"filter B={B}", n_x, ours, fp))
            if B == 1:
                cold, warm, fp_step = time_step(model, traj.y, traj.u, args.repeats, filterpy)
                rows.append(("step B=1, 1st episode", n_x, cold, fp_step))
                rows.append(("step B=1, next episodes", n_x, warm, fp_step))
    print(f"Kalman filter throughput, T={T} steps, {machine(args.threads)}")
    print(f"| {'case':<23} | n_x | ours [us/traj-step] | filterpy [us/step] | filterpy / ours |")
    print(f"|{'-' * 25}|-----|---------------------|--------------------|-----------------|")
    for name, n_x, ours, fp in rows:
        cells = f"{ours * 1e6:>19.4f} | {fp * 1e6:>18.2f} | {fp / ours:>14.1f}x"
        print(f"| {name:<23} | {n_x:>3} | {cells} |")


if __name__ == "__main__":
    main()
