"""Transitions, collect_transitions, fit_residual, one_step_mse and ResidualModel checkpoints."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)
from kalmannet_ctrl.controllers import LQG
from kalmannet_ctrl.errors import (
    CheckpointError,
    DimensionError,
    NonFiniteError,
    NotPositiveDefiniteError,
    ParameterError,
)
from kalmannet_ctrl.estimators import KalmanFilter, steady_state_gain
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    ResidualModel,
    pendulum,
    psd_sqrt,
    set_parameters,
)
from kalmannet_ctrl.training import (
    Transitions,
    collect_transitions,
    fit_residual,
    load_checkpoint,
    one_step_mse,
    save_checkpoint,
)

LINEAR = "kalmannet_ctrl/LinearSystem-v0"
PENDULUM = "kalmannet_ctrl/Pendulum-v0"
CARTPOLE = "kalmannet_ctrl/CartPole-v0"
F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def noise_free_linear():
    """LinearSystem-v0 at its default mismatch (A, B rotated by 2°, B scaled by 1.3) without
    process noise, so every transition is exactly x_next = A_true x + B_true u."""
    envs = gym.make_vec(
        LINEAR, num_envs=5, max_episode_steps=30, mismatch={"process_noise_scale": 0.0}
    )
    yield envs
    envs.close()


@pytest.fixture(scope="module")
def linear_data(noise_free_linear):
    envs = noise_free_linear
    controller = LQG(envs.nominal_model, envs.cost)
    return collect_transitions(envs, controller, episodes=7, exploration_std=1.0, seed=0)


# -- collection -----------------------------------------------------------------------------------
def test_collect_shapes_clipping_and_exact_transitions(noise_free_linear, linear_data) -> None:
    """7 episodes of the env's 30-step limit on 5 copies (two batches); heavy exploration noise
    (std 1 × the half-range 20) saturates the actuator, and the recorded input is the one
    applied: every row satisfies the true dynamics to round-off."""
    data = linear_data
    assert isinstance(data, Transitions)
    assert data.x.shape == (7 * 30, 2) and data.u.shape == (7 * 30, 1)
    assert data.x_next.shape == (7 * 30, 2) and data.x.dtype == F64
    assert float(data.u.abs().max()) == 20.0 and float((data.u.abs() == 20.0).float().mean()) > 0.2
    true = noise_free_linear.true_model
    torch.testing.assert_close(data.x_next, true.f(data.x, data.u), rtol=0, atol=1e-12)
    # within an episode the transitions chain: the next row starts where this one ended
    chained = (data.x[1:] == data.x_next[:-1]).all(1)
    assert int((~chained).sum()) == 7 - 1


def episodes_of(data: Transitions) -> list[slice]:
    """Split rows into chains x[i+1] == x_next[i] (one per episode)."""
    breaks = torch.nonzero(~(data.x[1:] == data.x_next[:-1]).all(1)).flatten() + 1
    bounds = [0, *breaks.tolist(), data.x.shape[0]]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("single", [False, True])
def test_no_transition_crosses_an_episode_end(single: bool) -> None:
    """Random forces topple the cart-pole: episodes terminate at different steps and the native
    vector env autoresets the copies that ended while the others run on.

    The true cart-pole's process noise is a force, w = b_d ε, so x_next − f_true(x, u) must lie
    on the line of b_d for every genuine transition; a transition from a terminal state to the
    next episode's initial state does not (checked on such a pair built from the data).
    """
    if single:
        env = gym.make(CARTPOLE, max_episode_steps=100)
        data = collect_transitions(env, "random", episodes=3, seed=1)
        n_episodes = 3
    else:
        env = gym.make_vec(CARTPOLE, num_envs=4)
        data = collect_transitions(env, "random", episodes=6, seed=1, steps=100)
        n_episodes = 6
    base = env.unwrapped if single else env
    true, failed = base.true_model, (base.failed if single else base.env.failed)
    b_d = torch.linalg.eigh(true.process_cov).eigenvectors[:, -1]

    def off_line(x: torch.Tensor, u: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        e = x_next - true.f(x, u)
        return (e - (e @ b_d)[:, None] * b_d).abs().amax(1)

    assert float(off_line(*data).max()) < 1e-8
    parts = episodes_of(data)
    assert len(parts) == n_episodes
    # no transition leaves a terminal state; the transition into it is kept
    assert not failed(data.x.numpy()).any()
    ends = failed(data.x_next.numpy())
    assert all(ends[p.stop - 1] or p.stop - p.start == 100 for p in parts)
    assert ends.sum() == sum(bool(ends[p.stop - 1]) for p in parts) >= n_episodes - 1
    # a leaked transition (terminal state -> next episode's first state) would be caught
    leaked = off_line(
        data.x_next[parts[0].stop - 1 : parts[0].stop],
        data.u[parts[0].stop - 1 : parts[0].stop],
        data.x[parts[1].start : parts[1].start + 1],
    )
    assert float(leaked) > 1e-3
    env.close()


def test_exploration_noise_is_scaled_and_clipped() -> None:
    """Pendulum-v0: torque bound 2, so exploration_std s gives N(0, (2 s)²) before clipping."""
    small = collect_transitions(PENDULUM, None, episodes=10, steps=200, exploration_std=0.1, seed=0)
    u = small.u.flatten()
    assert abs(float(u.mean())) < 0.02 and float(u.std()) == pytest.approx(0.2, rel=0.05)
    big = collect_transitions(PENDULUM, None, episodes=4, steps=50, exploration_std=2.0, seed=0)
    assert float(big.u.abs().max()) == 2.0
    assert float((big.u.abs() == 2.0).float().mean()) > 0.5  # P(|N(0, 4²)| > 2) = 0.62
    uniform = collect_transitions(PENDULUM, "random", episodes=10, steps=200, seed=0)
    assert float(uniform.u.abs().max()) <= 2.0
    assert float(uniform.u.var()) == pytest.approx(16 / 12, rel=0.05)


def test_estimated_labels() -> None:
    """A Kalman filter on the true model labels the same rollouts (same seed, same actions) with
    errors that match its own steady-state error covariance after the initial transient; one on
    the mismatched nominal model labels them worse."""
    envs = gym.make_vec(LINEAR, num_envs=10)
    controller = LQG(envs.nominal_model, envs.cost)
    kw = {"episodes": 10, "steps": 100, "exploration_std": 0.02, "seed": 3}
    priv = collect_transitions(envs, controller, **kw)
    est = collect_transitions(envs, controller, states=KalmanFilter(envs.true_model), **kw)
    nom = collect_transitions(envs, controller, states=KalmanFilter(envs.nominal_model), **kw)
    envs.close()
    assert torch.equal(priv.u, est.u) and not torch.equal(priv.x, est.x)
    err = (est.x - priv.x).reshape(10, 100, 2)[:, 20:].square().mean((0, 1))
    P = torch.diagonal(steady_state_gain(envs.true_model).cov)
    assert bool(((err > 0.6 * P) & (err < 1.6 * P)).all()), (err, P)
    assert float((est.x - priv.x).square().sum()) < float((nom.x - priv.x).square().sum())
    # x_next labels are the estimates one step later
    assert torch.equal(est.x[1:100], est.x_next[:99])


def test_collection_is_seeded() -> None:
    kw = {"episodes": 3, "steps": 20, "exploration_std": 0.3}
    a = collect_transitions(PENDULUM, "random", seed=5, **kw)
    b = collect_transitions(PENDULUM, "random", seed=5, **kw)
    c = collect_transitions(PENDULUM, "random", seed=6, **kw)
    assert all(torch.equal(s, t) for s, t in zip(a, b, strict=True))
    assert not torch.equal(a.x, c.x)


def test_collect_errors() -> None:
    with pytest.raises(ParameterError, match="episodes: expected an integer >= 1, found 0"):
        collect_transitions(PENDULUM, episodes=0)
    with pytest.raises(ParameterError, match="exploration_std: expected a finite number >= 0"):
        collect_transitions(PENDULUM, episodes=1, exploration_std=-0.1)
    with pytest.raises(ParameterError, match="controller: expected a controller"):
        collect_transitions(PENDULUM, "zero", episodes=1)
    with pytest.raises(TypeError, match="controller: expected an object with predict"):
        collect_transitions(PENDULUM, lambda y: 0.0, episodes=1)
    with pytest.raises(ParameterError, match="states: expected 'privileged' or an estimator"):
        collect_transitions(PENDULUM, episodes=1, states="true")
    with pytest.raises(TypeError, match="states: expected 'privileged' or an estimator"):
        collect_transitions(PENDULUM, episodes=1, states=pendulum())
    with pytest.raises(TypeError, match="env: expected an env id"):
        collect_transitions(42, episodes=1)
    env = gym.make(PENDULUM)
    with pytest.raises(ValueError, match="env_kwargs: only used when env is an id"):
        collect_transitions(env, episodes=1, env_kwargs={"mismatch": {}})
    with pytest.raises(ParameterError, match="steps: expected an integer >= 1"):
        collect_transitions(env, episodes=1, steps=0)

    class Wrong:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.zeros((observation.shape[0], 3)), state

    with pytest.raises(DimensionError, match=r"controller: expected actions of shape \(1, 1\)"):
        collect_transitions(env, Wrong(), episodes=1, steps=3)
    env.close()


class _Plain(gym.Env):
    """x_{t+1} = 0.9 x_t + u_t observed exactly: no info["state"], no time limit and an
    unbounded (or, with ``discrete``, a discrete) action space."""

    def __init__(self, discrete: bool = False) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = (
            gym.spaces.Discrete(2)
            if discrete
            else gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        )

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.standard_normal(1)
        return self.x.astype(np.float32), {}

    def step(self, action):
        self.x = 0.9 * self.x + np.asarray(action, dtype=np.float64).reshape(1)
        return self.x.astype(np.float32), 0.0, False, False, {}


def test_envs_without_state_labels_or_limits() -> None:
    model = LinearGaussianModel([[0.9]], [[1.0]], [[1.0]], [[1e-6]], [[1e-10]], x0_cov=[[1.0]])
    data = collect_transitions(_Plain(), None, episodes=2, steps=5, states=KalmanFilter(model))
    assert data.x.shape == (10, 1)
    torch.testing.assert_close(data.x_next, 0.9 * data.x, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"states: the env reports no info\['state'\]"):
        collect_transitions(_Plain(), None, episodes=1, steps=5)
    with pytest.raises(ParameterError, match="steps: the env has no time limit; pass steps"):
        collect_transitions(_Plain(), None, episodes=1, states=KalmanFilter(model))
    with pytest.raises(ParameterError, match="need a bounded action space"):
        collect_transitions(_Plain(), "random", episodes=1, steps=5)
    with pytest.raises(TypeError, match="env: expected a Box action space"):
        collect_transitions(_Plain(discrete=True), None, episodes=1, steps=5)
    same_step = gym.vector.SyncVectorEnv(
        [_Plain], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    with pytest.raises(ValueError, match="SAME_STEP autoreset mode hides the terminal states"):
        collect_transitions(same_step, None, episodes=1, steps=5)

    class NaNController:
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return np.full((observation.shape[0], 1), np.nan), state

    with pytest.raises(NonFiniteError, match="controller: returned non-finite actions"):
        collect_transitions(
            _Plain(), NaNController(), episodes=1, steps=5, states=KalmanFilter(model)
        )
    three = LinearGaussianModel(0.5 * np.eye(3), np.ones((3, 1)), [[1.0, 0, 0]], np.eye(3), [[1.0]])
    with pytest.raises(
        DimensionError, match="states: the estimator estimates 3 states, the env has 2"
    ):
        collect_transitions(gym.make(LINEAR), None, episodes=1, steps=3, states=KalmanFilter(three))


# -- Transitions helpers and one_step_mse ---------------------------------------------------------
def test_transitions_helpers_and_one_step_mse() -> None:
    model = pendulum()
    traj = model.simulate(6, 4, generator=gen(2))
    data = Transitions.from_trajectory(traj)
    assert data.x.shape == (4 * 5, 2)
    torch.testing.assert_close(data.x_next[:5], traj.x[0, 1:], rtol=0, atol=0)
    torch.testing.assert_close(data.u[:5], traj.u[0, :-1], rtol=0, atol=0)
    both = Transitions.concat([data, data.subset(slice(0, 3))])
    assert both.x.shape == (23, 2) and torch.equal(both.x[20:], data.x[:3])
    mse = one_step_mse(model, data)
    torch.testing.assert_close(mse, (data.x_next - model.f(data.x, data.u)).square().mean(0))
    with pytest.raises(ValueError, match="parts: expected at least one"):
        Transitions.concat([])
    with pytest.raises(DimensionError, match="parts: the transitions do not stack"):
        Transitions.concat([data, Transitions(data.x[:, :1], data.u, data.x_next)])
    with pytest.raises(DimensionError, match=r"traj\.x: expected shape \(B, T >= 2, n_x\)"):
        Transitions.from_trajectory(model.simulate(1, 2))
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        one_step_mse("pendulum", data)
    with pytest.raises(DimensionError, match=r"data\.u: expected shape \(20, 1\)"):
        one_step_mse(model, Transitions(data.x, data.u[:, :0], data.x_next))
    with pytest.raises(TypeError, match=r"parts\[1\]: expected a Transitions"):
        Transitions.concat([data, data.x])
    with pytest.raises(TypeError, match="traj: expected a Trajectory with states"):
        Transitions.from_trajectory(data)


def test_transitions_from_padded_env_rollouts_keep_only_the_episodes_pairs() -> None:
    """CartPole under uniformly random forces: most episodes fail before 40 steps and are padded
    (NaN measurements, the last state repeated); the mask keeps exactly the pairs inside an
    episode, each one an env step of the true model up to its process noise."""
    from kalmannet_ctrl.training import env_rollouts

    env_id = "kalmannet_ctrl/CartPole-v0"
    data = env_rollouts(env_id, 6, controller="random", steps=40, seed=0)
    measured = torch.isfinite(data.y).all(-1)
    assert not measured.all()  # some episodes ended early
    pairs = Transitions.from_trajectory(data, mask=measured)
    assert pairs.x.shape[0] == int((measured[:, :-1] & measured[:, 1:]).sum())
    true = gym.make(env_id).unwrapped.true_model
    err = pairs.x_next - true.f(pairs.x, pairs.u)
    std = true.process_cov.diagonal().sqrt()
    # no padded pair: a repeated state of a falling pole would be off by θ̇Δt ≫ the noise
    assert (err.abs() / std).max() < 6
    with pytest.raises(DimensionError, match="mask"):
        Transitions.from_trajectory(data, mask=measured[:, 1:])
    with pytest.raises(DimensionError, match="mask"):
        Transitions.from_trajectory(data, mask=measured.float())


# -- fitting --------------------------------------------------------------------------------------
def test_affine_path_learns_the_linear_mismatch_exactly(noise_free_linear, linear_data) -> None:
    """The default LinearSystem-v0 mismatch (A' = R(2°) A, B' = 1.3 R(2°) B) is affine, so the
    affine path alone recovers A' and B' from noise-free transitions to round-off level."""
    envs = noise_free_linear
    nominal, true = envs.nominal_model, envs.true_model
    model = ResidualModel(nominal, hidden=())
    result = fit_residual(model, linear_data, steps=800, lr=3e-2, val_every=50, progress=False)
    assert result.nonfinite_step is None and result.best_val_loss < 1e-20  # measured 6e-30
    x0, u0 = torch.zeros(1, 2, dtype=F64), torch.zeros(1, 1, dtype=F64)
    with torch.no_grad():
        A, B = model.f_jacobian(x0, u0)[0], model.input_jacobian(x0, u0)[0]
        offset = model.f(x0, u0)[0]
    assert float((A - nominal.A).abs().max()) > 0.03  # there was something to learn
    torch.testing.assert_close(A, true.A, rtol=0, atol=1e-10)  # measured 1e-16
    torch.testing.assert_close(B, true.B, rtol=0, atol=1e-10)
    torch.testing.assert_close(offset, torch.zeros(2, dtype=F64), rtol=0, atol=1e-10)


def test_mlp_learns_the_pendulum_mismatch_from_env_transitions() -> None:
    """Pendulum-v0's default mismatch (mass ×1.2, length ×1.1, damping ×1.5), 4000 privileged
    transitions under random torques, 2000 held out.

    The model error E‖f̂(x, u) − f_true(x, u)‖² falls by more than 100× from the nominal
    model's (measured: about 2000×), and the one-step error E‖x_next − f̂‖², which includes the
    process noise, comes within 5 % of the true model's (measured: 0.1 %; the nominal model's
    is 4.5× it).
    """
    envs = gym.make_vec(PENDULUM, num_envs=20)
    nominal, true = envs.nominal_model, envs.true_model
    data = collect_transitions(envs, "random", episodes=20, steps=200, seed=0)
    test = collect_transitions(envs, "random", episodes=10, steps=200, seed=1)
    envs.close()
    model = ResidualModel(nominal, hidden=(32, 32), generator=gen(0))
    fit_residual(model, data, steps=600, lr=1e-2, val_every=100, progress=False)

    def model_error(m) -> float:
        with torch.no_grad():
            return float((m.f(test.x, test.u) - true.f(test.x, test.u)).square().sum(1).mean())

    assert model_error(model) < model_error(nominal) / 100
    floor = float(one_step_mse(true, test).sum())
    assert float(one_step_mse(model, test).sum()) < 1.05 * floor
    assert float(one_step_mse(nominal, test).sum()) > 3 * floor


def sample_pendulum(true, n: int, seed: int) -> Transitions:
    """Transitions of the true pendulum from states and torques uniform over the whole range."""
    g = gen(seed)
    high = torch.tensor([math.pi, 4.0, 2.0], dtype=F64)
    v = high * (2 * torch.rand(n, 3, dtype=F64, generator=g) - 1)
    x, u = v[:, :2], v[:, 2:]
    w = torch.randn(n, 2, dtype=F64, generator=g) @ psd_sqrt(true.process_cov).mT
    return Transitions(x, u, true.f(x, u) + w)


def test_mlp_learns_a_nonlinear_mismatch_the_affine_path_cannot() -> None:
    """Over all angles the pendulum's mismatch (gravity torque m g l sin θ, inertia m l²) is
    nonlinear: with 3000 transitions the affine path alone removes less than 10× of the model
    error, the MLP more than 100× (measured: 3× and 800×)."""
    nominal = pendulum()
    true = set_parameters(nominal, mass=1.2, length=1.1, damping=0.15)
    data, test = sample_pendulum(true, 3000, 0), sample_pendulum(true, 1000, 1)

    def model_error(m) -> float:
        with torch.no_grad():
            return float((m.f(test.x, test.u) - true.f(test.x, test.u)).square().sum(1).mean())

    errors = {}
    for hidden in [(), (32, 32)]:
        model = ResidualModel(nominal, hidden=hidden, generator=gen(0))
        fit_residual(model, data, steps=600, lr=1e-2, val_every=100, progress=False)
        errors[hidden] = model_error(model)
    assert errors[()] > model_error(nominal) / 10
    assert errors[(32, 32)] < model_error(nominal) / 100


def test_fit_is_seeded_and_process_cov_weighting(noise_free_linear, linear_data) -> None:
    nominal = noise_free_linear.nominal_model
    runs = []
    for _ in range(2):
        model = ResidualModel(nominal, hidden=(8,), generator=gen(3))
        fit_residual(model, linear_data, steps=20, val_every=10, seed=4, progress=False)
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)
    # the Gaussian likelihood weighting (nominal process_cov = 0.01 I is positive definite)
    model = ResidualModel(nominal, hidden=())
    fit_residual(model, linear_data, steps=500, lr=3e-2, weighting="process_cov", progress=False)
    before, after = one_step_mse(nominal, linear_data), one_step_mse(model, linear_data)
    assert bool((after < 1e-8 * before).all())  # measured 1e-16


def test_nonfinite_loss_restores_the_best_weights(noise_free_linear, linear_data) -> None:
    """A huge learning rate overflows the loss at the second step: training stops, warns, and
    the best weights (the initial ones) are restored."""
    nominal = noise_free_linear.nominal_model
    model = ResidualModel(nominal, hidden=())
    with pytest.warns(RuntimeWarning, match="fit_residual: the loss became non-finite at step 2"):
        result = fit_residual(model, linear_data, steps=50, lr=1e200, progress=False)
    assert result.nonfinite_step == 2 and result.best_step == 0
    x, u = linear_data.x[:5], linear_data.u[:5]
    with torch.no_grad():
        assert torch.equal(model.f(x, u), nominal.f(x, u))


def test_fit_errors(linear_data) -> None:
    model = ResidualModel(pendulum(), hidden=(4,))
    g = gen(0)
    good = Transitions(
        torch.randn(20, 2, dtype=F64, generator=g),
        torch.randn(20, 1, dtype=F64, generator=g),
        torch.randn(20, 2, dtype=F64, generator=g),
    )
    with pytest.raises(TypeError, match="model: expected a ResidualModel"):
        fit_residual(pendulum(), good)
    with pytest.raises(ParameterError, match="steps: expected an integer >= 1, found 0"):
        fit_residual(model, good, steps=0)
    with pytest.raises(ParameterError, match="lr: expected a finite number > 0"):
        fit_residual(model, good, lr=0.0)
    with pytest.raises(ParameterError, match="weighting: expected one of"):
        fit_residual(model, good, weighting="l1")
    with pytest.raises(ParameterError, match=r"val_fraction: expected a number in \[0, 1\)"):
        fit_residual(model, good, val_fraction=1.0)
    with pytest.raises(TypeError, match="data: expected a Transitions"):
        fit_residual(model, good.x)
    with pytest.raises(DimensionError, match=r"data\.x: expected shape \(N, 2\)"):
        fit_residual(model, Transitions(good.x[:, :1], good.u, good.x_next))
    with pytest.raises(DimensionError, match=r"data\.u: expected shape \(20, 1\), found \(19, 1\)"):
        fit_residual(model, Transitions(good.x, good.u[:19], good.x_next))
    with pytest.raises(DimensionError, match=r"val\.x_next: expected shape \(20, 2\)"):
        fit_residual(model, good, val=Transitions(good.x, good.u, good.x_next[:, :1]))
    bad = good.x_next.clone()
    bad[4, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"data\.x_next: expected finite values"):
        fit_residual(model, Transitions(good.x, good.u, bad))
    with pytest.raises(DimensionError, match="data: expected at least 2 training transitions"):
        fit_residual(model, good.subset(slice(0, 2)), val_fraction=0.5)
    with pytest.raises(ParameterError, match="weight_decay: expected a finite number >= 0"):
        fit_residual(model, good, weight_decay=-1.0)
    with pytest.raises(ParameterError, match="grad_clip: expected a finite number > 0"):
        fit_residual(model, good, grad_clip=0.0)
    with pytest.raises(ParameterError, match="lr_schedule: expected one of"):
        fit_residual(model, good, lr_schedule="step")
    with pytest.raises(ParameterError, match="batch_size: expected an integer >= 1"):
        fit_residual(model, good, batch_size=0)
    with pytest.raises(ParameterError, match="patience: expected an integer >= 1"):
        fit_residual(model, good, patience=0)
    frozen = ResidualModel(pendulum(), hidden=(4,)).requires_grad_(False)
    with pytest.raises(ValueError, match="model: has no trainable parameters"):
        fit_residual(frozen, good, progress=False)
    with pytest.raises(NotPositiveDefiniteError, match="use weighting='std'"):
        fit_residual(model, good, weighting="process_cov", progress=False)  # diag(0, q²)


# -- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    nominal = pendulum()
    true = set_parameters(nominal, mass=1.2, length=1.1, damping=0.15)
    data = sample_pendulum(true, 500, 2)
    model = ResidualModel(nominal, hidden=(8, 8), activation="silu", generator=gen(1))
    result = fit_residual(model, data, steps=50, lr=1e-2, progress=False)
    path = save_checkpoint(model, tmp_path / "res" / "pendulum.pt", steps=result.steps)
    loaded, meta = load_checkpoint(path, ResidualModel, nominal)
    assert meta == {"steps": 50} and isinstance(loaded, ResidualModel)
    assert loaded.hidden == (8, 8) and loaded.activation == "silu"
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.f(data.x, data.u), model.f(data.x, data.u), rtol=0, atol=0
        )
        torch.testing.assert_close(
            loaded.f_jacobian(data.x, data.u), model.f_jacobian(data.x, data.u), rtol=0, atol=0
        )
    raw = path.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt", ResidualModel, nominal)
    with pytest.raises(CheckpointError, match="nominal: the residual was trained on a nominal"):
        load_checkpoint(path, ResidualModel, true)  # another pendulum
    assert not list((tmp_path / "res").glob("*.tmp"))
