"""ResidualModel: the nominal model plus a learned residual g_θ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kalmannet_ctrl.errors import CheckpointError, DimensionError, NonFiniteError, ParameterError
from kalmannet_ctrl.estimators import ExtendedKalmanFilter
from kalmannet_ctrl.models import (
    LinearGaussianModel,
    ResidualModel,
    SystemModel,
    cartpole,
    linear_canonical,
    misstate_noise,
    pendulum,
)

F64 = torch.float64

NOMINALS = {
    "pendulum": pendulum,
    "cartpole": cartpole,
    "linear_canonical (n_u = 0)": lambda: linear_canonical(2),
    "linear with input": lambda: LinearGaussianModel(
        [[0.9, 0.2], [-0.1, 0.8]], [[0.5], [1.0]], [[1.0, 0.0]], 0.01 * np.eye(2), [[0.1]]
    ),
}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inputs(model: SystemModel, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = gen(seed)
    x = torch.randn(batch, model.n_x, dtype=F64, generator=g)
    u = torch.randn(batch, model.n_u, dtype=F64, generator=g)
    return x, u


def randomized(model: ResidualModel, seed: int = 0) -> ResidualModel:
    """Non-zero weights everywhere and non-trivial normalisation statistics."""
    g = gen(seed)
    n_in = model.n_x + model.n_u
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, dtype=p.dtype, generator=g))
        model.input_mean.copy_(torch.randn(n_in, dtype=F64, generator=g))
        model.input_std.copy_(0.5 + torch.rand(n_in, dtype=F64, generator=g))
        model.output_scale.copy_(0.1 + torch.rand(model.n_x, dtype=F64, generator=g))
    return model


# -- the untrained model is the nominal model ------------------------------------------------------
@pytest.mark.parametrize("name", list(NOMINALS))
def test_untrained_model_is_the_nominal_model_exactly(name: str) -> None:
    nominal = NOMINALS[name]()
    model = ResidualModel(nominal, generator=gen())
    x, u = inputs(nominal, 7)
    assert torch.equal(model.f(x, u), nominal.f(x, u))
    assert torch.equal(model.f(x), nominal.f(x))  # zero input
    assert torch.equal(model(x, u), nominal.f(x, u))  # nn.Module call
    with torch.no_grad():  # the folded network of MPC's rollouts
        assert torch.equal(model.f(x, u), nominal.f(x, u))
    assert torch.equal(model.h(x), nominal.h(x))
    assert torch.equal(model.f_jacobian(x, u), nominal.f_jacobian(x, u))
    assert torch.equal(model.input_jacobian(x, u), nominal.input_jacobian(x, u))
    for attr in ("process_cov", "measurement_cov", "x0_mean", "x0_cov"):
        assert torch.equal(getattr(model, attr), getattr(nominal, attr))
    assert (model.n_x, model.n_u, model.n_y, model.dt) == (
        nominal.n_x,
        nominal.n_u,
        nominal.n_y,
        nominal.dt,
    )
    assert model.dtype == F64 and all(p.dtype == F64 for p in model.parameters())
    # simulate draws the same noise and follows the same dynamics
    a = model.simulate(6, 3, generator=gen(4))
    b = nominal.simulate(6, 3, generator=gen(4))
    for ta, tb in zip(a, b, strict=True):
        assert torch.equal(ta, tb)


def test_untrained_ekf_on_the_residual_model_is_the_nominal_ekf() -> None:
    nominal = pendulum()
    model = ResidualModel(nominal, hidden=(8,), generator=gen())
    traj = nominal.simulate(15, 2, generator=gen(1))
    ours = ExtendedKalmanFilter(model).filter(traj.y, traj.u)
    ref = ExtendedKalmanFilter(nominal).filter(traj.y, traj.u)
    assert torch.equal(ours.mean, ref.mean) and torch.equal(ours.cov, ref.cov)


# -- Jacobians ------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [1, 10])
@pytest.mark.parametrize("activation", ["tanh", "relu", "silu"])
def test_exact_jacobians_match_autograd_and_finite_differences(activation: str, batch: int) -> None:
    model = randomized(
        ResidualModel(pendulum(), hidden=(16, 8), activation=activation, generator=gen(1)), 2
    )
    x, u = inputs(model, batch, seed=3)
    Jx, Ju = model.f_jacobian(x, u), model.input_jacobian(x, u)
    assert Jx.shape == (batch, 2, 2) and Ju.shape == (batch, 2, 1)
    # autograd through f (the base class's implementation)
    torch.testing.assert_close(Jx, SystemModel.f_jacobian(model, x, u), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(Ju, SystemModel.input_jacobian(model, x, u), rtol=1e-10, atol=1e-12)
    # central differences: truncation O(eps²) and round-off O(1e-16 / eps), both below 1e-7
    eps = 1e-6
    with torch.no_grad():
        for J, arg in ((Jx, 0), (Ju, 1)):
            n = J.shape[-1]
            for k in range(n):
                d = torch.zeros(n, dtype=F64)
                d[k] = eps
                args_p, args_m = [x, u], [x, u]
                args_p[arg] = args_p[arg] + d
                args_m[arg] = args_m[arg] - d
                fd = (model.f(*args_p) - model.f(*args_m)) / (2 * eps)
                torch.testing.assert_close(J[..., k], fd, rtol=0, atol=1e-7)
    # one pass gives the same three results
    f, A, B = model.f_and_jacobians(x, u)
    torch.testing.assert_close(f, model.f(x, u), rtol=0, atol=0)
    torch.testing.assert_close(A, Jx, rtol=0, atol=0)
    torch.testing.assert_close(B, Ju, rtol=0, atol=0)


@pytest.mark.parametrize(("hidden", "linear"), [((), True), ((8,), False)])
def test_jacobians_of_the_affine_path_alone_and_of_the_mlp_alone(hidden, linear) -> None:
    model = randomized(ResidualModel(cartpole(), hidden=hidden, linear=linear, generator=gen(5)))
    x, u = inputs(model, 4, seed=6)
    torch.testing.assert_close(
        model.f_jacobian(x, u), SystemModel.f_jacobian(model, x, u), rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        model.input_jacobian(x, u),
        SystemModel.input_jacobian(model, x, u),
        rtol=1e-10,
        atol=1e-12,
    )


def test_jacobians_without_inputs() -> None:
    model = randomized(ResidualModel(linear_canonical(3), hidden=(8,), generator=gen()))
    x, _ = inputs(model, 5)
    torch.testing.assert_close(
        model.f_jacobian(x), SystemModel.f_jacobian(model, x), rtol=1e-10, atol=1e-12
    )
    assert model.input_jacobian(x).shape == (5, 3, 0)


# -- normalisation --------------------------------------------------------------------------------
def test_set_normalization_sets_the_statistics_and_preserves_the_function() -> None:
    nominal = pendulum()
    model = randomized(ResidualModel(nominal, hidden=(16, 16), generator=gen(1)), 2)
    g = gen(7)
    x = 3.0 + 2.0 * torch.randn(200, 2, dtype=F64, generator=g)
    u = torch.full((200, 1), 0.5, dtype=F64)  # a constant input: its std stays 1
    x_next = nominal.f(x, u) + torch.randn(200, 2, dtype=F64, generator=g) * torch.tensor(
        [1e-3, 1e-1], dtype=F64
    )
    x_test, u_test = inputs(nominal, 9, seed=8)
    with torch.no_grad():
        before = model.f(x_test, u_test)
        J_before = model.f_jacobian(x_test, u_test)
    model.set_normalization(x, u, x_next)
    torch.testing.assert_close(model.input_mean, torch.cat([x, u], 1).mean(0))
    torch.testing.assert_close(model.input_std[:2], x.std(0))
    assert float(model.input_std[2]) == 1.0
    torch.testing.assert_close(model.output_scale, (x_next - nominal.f(x, u)).std(0))
    with torch.no_grad():
        torch.testing.assert_close(model.f(x_test, u_test), before, rtol=0, atol=1e-12)
        torch.testing.assert_close(model.f_jacobian(x_test, u_test), J_before, rtol=0, atol=1e-10)
    # without x_next the output scale is kept; still function-preserving
    scale = model.output_scale.clone()
    model.set_normalization(x * 0.1, None)
    assert torch.equal(model.output_scale, scale)
    with torch.no_grad():
        torch.testing.assert_close(model.f(x_test, u_test), before, rtol=0, atol=1e-12)


def test_set_normalization_errors() -> None:
    model = ResidualModel(pendulum(), hidden=(4,))
    x = torch.zeros(10, 2, dtype=F64)
    with pytest.raises(DimensionError, match=r"x: expected shape \(N, 2\), found \(10, 3\)"):
        model.set_normalization(torch.zeros(10, 3))
    with pytest.raises(DimensionError, match="x: expected at least 2 rows"):
        model.set_normalization(torch.zeros(1, 2))
    with pytest.raises(DimensionError, match=r"u: expected shape \(10, 1\), found \(10, 2\)"):
        model.set_normalization(x, torch.zeros(10, 2))
    bad = torch.zeros(10, 2, dtype=F64)
    bad[3, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="x_next: expected finite values"):
        model.set_normalization(x, torch.zeros(10, 1), bad)


# -- module behaviour -----------------------------------------------------------------------------
def test_is_a_trainable_module_with_zero_initialised_outputs() -> None:
    model = ResidualModel(pendulum(), generator=gen())
    assert isinstance(model, nn.Module) and isinstance(model, SystemModel)
    n_in, n_x = 3, 2
    expected = (n_in * n_x + n_x) + (n_in * 64 + 64) + (64 * 64 + 64) + (64 * n_x + n_x)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert {"input_mean", "input_std", "output_scale"} <= set(model.state_dict())
    assert not model.linear_path.weight.any() and not model.mlp_head.weight.any()
    x, u = inputs(model, 6)
    model.f(x, u).square().sum().backward()
    assert model.linear_path.weight.grad.abs().sum() > 0
    assert model.mlp_head.weight.grad.abs().sum() > 0
    assert "ResidualModel(nominal='pendulum'" in repr(model)


def test_replace_keeps_the_weights_and_misstate_noise_works() -> None:
    nominal = pendulum()
    model = randomized(ResidualModel(nominal, hidden=(4,), generator=gen()))
    x, u = inputs(model, 3)
    copy = model.replace(process_cov=4 * nominal.process_cov)
    assert isinstance(copy, ResidualModel)
    torch.testing.assert_close(copy.process_cov, 4 * nominal.process_cov)
    with torch.no_grad():
        torch.testing.assert_close(copy.f(x, u), model.f(x, u), rtol=0, atol=0)
    noisy = misstate_noise(model, process_scale=2.0)
    torch.testing.assert_close(noisy.process_cov, 2 * nominal.process_cov)
    with pytest.raises(TypeError, match=r"replace: unknown argument\(s\) \['hidden'\]"):
        model.replace(hidden=(8,))
    with pytest.raises(TypeError, match="with_params"):
        model.with_params(mass=2.0)


def test_constructor_errors() -> None:
    nominal = pendulum()
    with pytest.raises(TypeError, match="nominal: expected a SystemModel"):
        ResidualModel("pendulum")
    with pytest.raises(ParameterError, match="activation: expected one of"):
        ResidualModel(nominal, activation="sigmoid")
    with pytest.raises(ParameterError, match=r"hidden\[1\]: expected an integer >= 1, found 0"):
        ResidualModel(nominal, hidden=(8, 0))
    with pytest.raises(TypeError, match="hidden: expected a sequence"):
        ResidualModel(nominal, hidden=64)
    with pytest.raises(ParameterError, match="nothing to learn"):
        ResidualModel(nominal, hidden=(), linear=False)
    with pytest.raises(TypeError, match="linear: expected a bool"):
        ResidualModel(nominal, linear=1)
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator"):
        ResidualModel(nominal, generator=0)
    check = ResidualModel(nominal).config()["nominal_check"]
    with pytest.raises(CheckpointError, match="nominal: the residual was trained on a nominal"):
        ResidualModel(pendulum(mass=2.0), nominal_check=check)
    with pytest.raises(CheckpointError, match="n_x = 2, found 4"):
        ResidualModel(cartpole(), nominal_check=check)


@pytest.mark.parametrize("name", list(NOMINALS))
def test_f_and_jacobians_on_every_kind_of_nominal_model(name: str) -> None:
    """One pass gives f̂ and its exact Jacobians whether the nominal model is linear or not."""
    model = randomized(ResidualModel(NOMINALS[name](), hidden=(8,), generator=gen(4)), 5)
    x, u = inputs(model, 6, seed=7)
    f, A, B = model.f_and_jacobians(x, u)
    torch.testing.assert_close(f, model.f(x, u), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(A, SystemModel.f_jacobian(model, x, u), rtol=1e-10, atol=1e-12)
    assert B.shape == (6, model.n_x, model.n_u)
    if model.n_u:
        torch.testing.assert_close(
            B, SystemModel.input_jacobian(model, x, u), rtol=1e-10, atol=1e-12
        )


# -- the folded network used without gradients (MPC's rollouts) ------------------------------------
@pytest.mark.parametrize(
    ("activation", "hidden", "linear"),
    [
        ("tanh", (16, 8), True),
        ("tanh", (12,), False),
        ("relu", (16, 8), True),
        ("silu", (16,), True),
        ("tanh", (), True),
    ],
)
@pytest.mark.parametrize("name", ["pendulum", "cartpole"])
def test_folded_network_equals_the_layers(name: str, activation: str, hidden, linear) -> None:
    """Without gradients f̂ runs on :meth:`inference_weights` (normalisation, output scale, the
    affine path and tanh = 2σ(2·) − 1 folded in); it must equal the layer-by-layer network."""
    nominal = NOMINALS[name]()
    net = ResidualModel(
        nominal, hidden=hidden, activation=activation, linear=linear, generator=gen()
    )
    model = randomized(net, 3)
    x, u = inputs(nominal, 33, seed=4)
    layered = nominal.f(x, u) + model.residual(x, u)  # gradients on: the layers
    assert layered.requires_grad
    with torch.no_grad():
        folded = model.f(x, u)
        folded_zero_u = model.f(x)
        batched = model.f(x.view(3, 11, -1), u.view(3, 11, -1))  # leading dimensions
    torch.testing.assert_close(folded, layered.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        folded_zero_u, (nominal.f(x) + model.residual(x)).detach(), rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(batched, folded.view(3, 11, -1), rtol=0, atol=1e-13)
    # float32 weights for float32 inputs (MPC's rollout_dtype), to float32 precision
    with torch.no_grad():
        single = model.f(x.float(), u.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), folded, rtol=1e-4, atol=1e-4)


def test_folded_weights_follow_every_change_of_the_parameters() -> None:
    """The folded weights are cached; in-place updates (optimizer steps, load_state_dict,
    set_normalization) and replaced parameters must all be seen."""
    model = randomized(ResidualModel(pendulum(), hidden=(8,), generator=gen()), 1)
    x, u = inputs(model, 5, seed=2)

    def check() -> None:
        with torch.no_grad():
            folded = model.f(x, u)
        torch.testing.assert_close(
            folded, (model.nominal.f(x, u) + model.residual(x, u)).detach(), rtol=0, atol=1e-12
        )

    check()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.residual(x, u).square().sum().backward()
    opt.step()  # in place
    check()
    model.load_state_dict(saved)
    check()
    model.set_normalization(*inputs(model, 50, seed=3))
    check()
    model.mlp_head.weight = nn.Parameter(torch.ones_like(model.mlp_head.weight))  # replaced
    check()
    with torch.no_grad():
        model.output_scale.mul_(3.0)  # a buffer
    check()


def test_rollout_step_is_f_with_the_weights_looked_up_once() -> None:
    model = randomized(ResidualModel(pendulum(), hidden=(8, 8), generator=gen()), 5)
    x, u = inputs(model, 6, seed=1)
    with torch.no_grad():
        step = model.rollout_step()
        torch.testing.assert_close(step(x, u), model.f(x, u), rtol=0, atol=1e-14)
        step32 = model.rollout_step(torch.float32)
        assert step32(x.float(), u.float()).dtype == torch.float32
    # with gradients on it is the differentiable f: θ gets gradients
    model.rollout_step()(x, u).sum().backward()
    assert model.mlp_head.weight.grad is not None
    assert float(model.mlp_head.weight.grad.abs().sum()) > 0
