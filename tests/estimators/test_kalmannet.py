"""KalmanNet: protocol, shapes, the Kalman structure (against the steady-state KF), missing
measurements, resets, gradients, seeding, checkpoints and error paths."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from kalmannet_ctrl.errors import (
    BatchSizeError,
    DimensionError,
    NonFiniteError,
    ParameterError,
)
from kalmannet_ctrl.estimators import Estimator, KalmanFilter, steady_state_gain
from kalmannet_ctrl.estimators.kalmannet import KalmanNet, KalmanNetState
from kalmannet_ctrl.models import LinearGaussianModel
from kalmannet_ctrl.models.library import linear_canonical, lorenz, synthetic_nonlinear

ARCHS = [1, 2]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_net(model, arch: int = 2, seed: int = 0, **kwargs) -> KalmanNet:
    """An untrained network with random (reference) initialisation, so that K_t != 0."""
    kwargs.setdefault("gain_init", "reference")
    return KalmanNet(model, architecture=arch, generator=gen(seed), **kwargs)


def input_model(dtype: torch.dtype = torch.float64) -> LinearGaussianModel:
    """A stable 3-state, 2-output, 1-input model with a non-zero prior mean."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 3))
    A *= 0.9 / max(abs(np.linalg.eigvals(A)))
    L = rng.normal(size=(3, 3)) * 0.3
    return LinearGaussianModel(
        A,
        rng.normal(size=(3, 1)),
        rng.normal(size=(2, 3)),
        process_cov=L @ L.T + 0.01 * np.eye(3),
        measurement_cov=np.diag([0.5, 0.2]),
        x0_mean=rng.normal(size=3),
        x0_cov=np.eye(3),
        dtype=dtype,
    )


def with_missing(y: Tensor) -> Tensor:
    """A copy of y with whole and partial NaN rows (partial = missing too), including t = 0."""
    y = y.clone()
    y[0, 0] = float("nan")
    y[1, 2, 0] = float("nan")
    y[:, 4] = float("nan")
    y[-1, 5:7, -1] = float("nan")
    return y


class ConstantGain(nn.Module):
    """A gain head that outputs vec(K) whatever its input."""

    def __init__(self, K: Tensor) -> None:
        super().__init__()
        self.register_buffer("K", K.reshape(1, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.K.to(x.dtype).expand(x.shape[0], -1)


# -- protocol and shapes ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 10])
@pytest.mark.parametrize("make_model", [linear_canonical, synthetic_nonlinear])
def test_protocol_and_shapes(arch, dtype, B, make_model) -> None:
    model = make_model()  # float64 model, network float32 or float64
    net = make_net(model, arch, dtype=dtype)
    assert isinstance(net, Estimator)
    traj = model.simulate(8, B, generator=gen(1))
    res = net.filter(traj.y)
    assert res.cov is None
    assert res.mean.shape == (B, 8, model.n_x) and res.mean.dtype == dtype
    assert torch.isfinite(res.mean).all()
    state = net.init(B)
    x, state = net.step(state, traj.y[:, 0].numpy())  # NumPy accepted
    assert x.shape == (B, model.n_x) and x.dtype == dtype
    assert isinstance(state, KalmanNetState) and state.fresh is None
    assert state.prev_y.shape == (B, model.n_y)
    sizes = [h.shape for h in state.hidden]
    if arch == 2:
        assert sizes == [(B, 4), (B, 4), (B, 4)]
    else:
        assert sizes == [(B, net.hidden_size)]


def test_float32_model_with_float64_network_and_inputs() -> None:
    model = lorenz(dtype=torch.float32)  # n_u = 3
    net = make_net(model, dtype=torch.float64)
    traj = model.simulate(6, 3, u=torch.randn(3, 6, 3, generator=gen(0)), generator=gen(1))
    mean = net.filter(traj.y, traj.u).mean
    assert mean.dtype == torch.float64 and torch.isfinite(mean).all()


def test_double_and_float_convert_parameters_and_buffers() -> None:
    model = linear_canonical()
    net = make_net(model)
    y = model.simulate(5, 2, generator=gen(0)).y
    net.double()
    assert net.dtype == torch.float64 and net.h0_q.dtype == torch.float64
    assert net.filter(y).mean.dtype == torch.float64
    net.float()
    assert net.h0_s.dtype == torch.float32 and net.filter(y).mean.dtype == torch.float32


def test_one_object_serves_interleaved_batches() -> None:
    """No per-call state on the module: two interleaved streams equal two separate runs."""
    model = synthetic_nonlinear()
    net = make_net(model, dtype=torch.float64)
    ya = model.simulate(6, 3, generator=gen(0)).y
    yb = model.simulate(6, 5, generator=gen(1)).y
    sa, sb, xa, xb = net.init(3), net.init(5), [], []
    for t in range(6):
        x, sa = net.step(sa, ya[:, t])
        xa.append(x)
        x, sb = net.step(sb, yb[:, t])
        xb.append(x)
    assert torch.equal(torch.stack(xa, 1), net.filter(ya).mean)
    assert torch.equal(torch.stack(xb, 1), net.filter(yb).mean)


# -- filter = loop of step; batching ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_filter_equals_step_loop(arch) -> None:
    model = lorenz()  # nonlinear, with inputs
    net = make_net(model, arch)
    B, T = 4, 9
    u = torch.randn(B, T, 3, dtype=torch.float64, generator=gen(0))
    traj = model.simulate(T, B, u=u, generator=gen(1))
    y = with_missing(traj.y)
    x0 = torch.randn(B, 3, dtype=torch.float64, generator=gen(2))
    res = net.filter(y, traj.u, x0_mean=x0)
    state, out = net.init(B, x0_mean=x0), []
    for t in range(T):
        x, state = net.step(state, y[:, t], traj.u[:, t - 1] if t else None)
        out.append(x)
    assert torch.equal(res.mean, torch.stack(out, 1))


@pytest.mark.parametrize("arch", ARCHS)
def test_batching_changes_nothing(arch) -> None:
    model = synthetic_nonlinear()
    net = make_net(model, arch, dtype=torch.float64)
    y = with_missing(model.simulate(10, 5, generator=gen(0)).y)
    batched = net.filter(y).mean
    for b in range(5):
        alone = net.filter(y[b : b + 1]).mean
        torch.testing.assert_close(batched[b : b + 1], alone, rtol=1e-12, atol=1e-12)


# -- the Kalman structure, independently of the network --------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("missing", [False, True])
def test_stationary_gain_reproduces_steady_state_kf(arch, missing) -> None:
    """With the gain head forced to output the stationary gain, KalmanNet is the steady-state
    KF step by step: prior f(x̂, u), innovation y − h(prior), update, predict-only on NaN rows."""
    model = input_model()  # n_x = 3, n_y = 2 (non-square K), n_u = 1, x0_mean != 0
    B, T = 4, 15
    traj = model.simulate(T, B, u=torch.randn(B, T, 1, dtype=torch.float64, generator=gen(0)),
                          generator=gen(1))  # fmt: skip
    y = with_missing(traj.y) if missing else traj.y
    net = make_net(model, arch, dtype=torch.float64)
    net.gain_head = ConstantGain(steady_state_gain(model).gain)
    kf = KalmanFilter(model, steady_state=True)
    s_net, s_kf = net.init(B), kf.init(B)
    for t in range(T):
        u_prev = traj.u[:, t - 1] if t else None
        x_net, s_net = net.step(s_net, y[:, t], u_prev)
        x_kf, s_kf = kf.step(s_kf, y[:, t], u_prev)
        torch.testing.assert_close(x_net, x_kf, rtol=1e-12, atol=1e-12)


def test_features_follow_the_definitions() -> None:
    """F1..F4 at t = 0, 1, 2 (unnormalized), recorded at the network's input."""
    model = synthetic_nonlinear()
    net = make_net(model, dtype=torch.float64, normalize_features=False)
    seen = []
    gain = net._gain

    def record(feats, hidden):
        seen.append(feats)
        return gain(feats, hidden)

    net._gain = record
    y = model.simulate(3, 2, generator=gen(0)).y
    x = net.filter(y).mean
    x0 = model.x0_mean.expand(2, -1)
    f, h = model.f, model.h
    zero = torch.zeros(2, 2, dtype=torch.float64)
    expected = [
        (y[:, 0] - h(x0), y[:, 0] - h(x0), zero, zero),  # y_{-1} = h(x̂_0); no earlier estimate
        (y[:, 1] - y[:, 0], y[:, 1] - h(f(x[:, 0])), x[:, 0] - x0, x[:, 0] - x0),
        (y[:, 2] - y[:, 1], y[:, 2] - h(f(x[:, 1])), x[:, 1] - x[:, 0], x[:, 1] - f(x[:, 0])),
    ]
    for t in range(3):
        for got, want in zip(seen[t], expected[t], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_features_are_normalized() -> None:
    model = linear_canonical()
    net = make_net(model, dtype=torch.float64)
    seen = []
    gain = net._gain
    net._gain = lambda feats, hidden: (seen.append(feats), gain(feats, hidden))[1]
    net.filter(model.simulate(4, 3, generator=gen(0)).y)
    for t, feats in enumerate(seen):
        for i, feat in enumerate(feats):
            norms = feat.norm(dim=-1)
            if t == 0 and i >= 2:  # F3 = F4 = 0 at the first step
                assert torch.equal(norms, torch.zeros(3, dtype=torch.float64))
            else:
                torch.testing.assert_close(norms, torch.ones(3, dtype=torch.float64))


# -- missing measurements --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_missing_rows_predict_only_and_keep_hidden_state(arch) -> None:
    model = linear_canonical()
    net = make_net(model, arch)  # float32 network on a float64 model
    B, T = 3, 8
    y = with_missing(model.simulate(T, B, generator=gen(0)).y).requires_grad_(True)
    state = net.init(B)
    for t in range(T):
        missing = torch.isnan(y[:, t].detach()).any(-1)
        x, new = net.step(state, y[:, t])
        assert torch.isfinite(x).all()
        prior = state.mean if t == 0 else model.f(state.mean.double()).float()
        rows = missing.nonzero().flatten()
        torch.testing.assert_close(x[rows], prior[rows])
        assert torch.equal(x[rows], new.prev_prior[rows])  # the estimate is the prior exactly
        for h_old, h_new in zip(state.hidden, new.hidden, strict=True):
            assert torch.equal(h_new[rows], h_old[rows])
        assert torch.equal(new.prev_y[rows], state.prev_y[rows])
        observed = (~missing).nonzero().flatten()
        if observed.numel():  # the gain is not zero: observed rows move away from the prior
            assert not torch.equal(x[observed], new.prev_prior[observed])
        state = new
    loss = (net.filter(y).mean ** 2).mean()
    loss.backward()
    assert torch.isfinite(y.grad).all()
    assert (y.grad[torch.isnan(y.detach())] == 0).all()
    for name, p in net.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_all_rows_missing_at_first_step_keeps_the_prior() -> None:
    model = linear_canonical(x0_mean=[1.0, -2.0])
    net = make_net(model)
    y = torch.full((2, 1, 2), float("nan"))
    torch.testing.assert_close(net.filter(y).mean[:, 0], model.x0_mean.float().expand(2, -1))


# -- resets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_reset_restarts_only_flagged_rows(arch) -> None:
    model = synthetic_nonlinear()
    net = make_net(model, arch, dtype=torch.float64)
    B, T, k = 4, 10, 4
    y = model.simulate(T, B, generator=gen(0)).y
    full = net.filter(y).mean
    state = net.init(B)
    out = []
    for t in range(T):
        if t == k:
            state = net.reset(state, np.array([True, False, True, False]))
        x, state = net.step(state, y[:, t])
        out.append(x)
    out = torch.stack(out, 1)
    restarted = net.filter(y[[0, 2], k:]).mean
    torch.testing.assert_close(out[[0, 2], k:], restarted, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out[[1, 3]], full[[1, 3]], rtol=1e-12, atol=1e-12)
    assert torch.equal(out[:, :k], full[:, :k])


def test_reset_with_no_or_all_rows() -> None:
    model = linear_canonical()
    net = make_net(model)
    state = net.step(net.init(3), torch.ones(3, 2))[1]
    assert net.reset(state, [False] * 3) is state
    again = net.reset(state, [True] * 3)
    for a, b in zip(again, net.init(3), strict=True):
        if isinstance(a, tuple):
            assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
        else:
            assert torch.equal(a, b)


# -- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("make_model", [linear_canonical, synthetic_nonlinear])
def test_gradients_reach_every_parameter(arch, make_model) -> None:
    model = make_model()
    net = make_net(model, arch)
    traj = model.simulate(10, 6, generator=gen(0))
    loss = ((net.filter(traj.y).mean - traj.x.float()) ** 2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_gain_init_starts_open_loop_then_trains_every_layer(arch) -> None:
    model = linear_canonical(x0_mean=[1.0, 0.5])
    net = KalmanNet(model, architecture=arch, generator=gen(0))  # gain_init="zero"
    traj = model.simulate(10, 6, generator=gen(0))
    open_loop = [model.x0_mean]
    for _ in range(9):
        open_loop.append(model.f(open_loop[-1][None])[0])
    mean = net.filter(traj.y).mean
    torch.testing.assert_close(mean, torch.stack(open_loop).float().expand(6, -1, -1))
    last = net.gain_head[-1]
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(2):
        opt.zero_grad()
        ((net.filter(traj.y).mean - traj.x.float()) ** 2).mean().backward()
        for name, p in net.named_parameters():
            assert torch.isfinite(p.grad).all(), name
            moving = p is last.weight or p is last.bias or step == 1
            assert (p.grad.abs().sum() > 0) == moving, (name, step)
        opt.step()


@pytest.mark.parametrize("arch", ARCHS)
def test_long_float32_rollout_stays_finite_untrained(arch) -> None:
    model = linear_canonical(x0_mean=[1.0, 0.5])  # unstable (double eigenvalue 1)
    net = KalmanNet(model, architecture=arch, generator=gen(0))
    with torch.no_grad():
        mean = net.filter(model.simulate(2000, 4, generator=gen(1)).y).mean
    assert mean.dtype == torch.float32 and torch.isfinite(mean).all()


# -- seeds, parameter counts, checkpoints ----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_network_other_seed_differs(arch) -> None:
    model = synthetic_nonlinear()
    y = model.simulate(6, 2, generator=gen(0)).y
    rng_before = torch.random.get_rng_state()
    a, b, c = make_net(model, arch, 7), make_net(model, arch, 7), make_net(model, arch, 8)
    assert torch.equal(rng_before, torch.random.get_rng_state())  # global RNG untouched
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert torch.equal(a.filter(y).mean, b.filter(y).mean)
    assert not torch.equal(a.filter(y).mean, c.filter(y).mean)
    torch.manual_seed(3)
    d = KalmanNet(model, architecture=arch, gain_init="reference")
    torch.manual_seed(3)
    e = KalmanNet(model, architecture=arch, gain_init="reference")
    assert all(torch.equal(p, q) for p, q in zip(d.parameters(), e.parameters(), strict=True))


def _arch2_count(m: int, n: int, k: int = 5, o: int = 40) -> int:
    gru = lambda i, h: 3 * (i * h + h * h + 2 * h)  # noqa: E731
    fc = lambda i, j: i * j + j  # noqa: E731
    d = m * m + n * n
    return (
        gru(k * m, m * m) + gru(m * m + k * m, m * m) + gru(n * n + 2 * n * k, n * n)
        + 2 * fc(m, k * m) + fc(2 * n, 2 * n * k) + fc(m * m, n * n)
        + fc(d, o * d) + fc(o * d, m * n) + fc(n * n + m * n, m * m) + fc(2 * m * m, m * m)
    )  # fmt: skip


def test_parameter_counts_match_the_reference() -> None:
    """Architecture 2: 5208 for m = n = 2 (paper/REFERENCES: about 5.2e3) and 23928 for
    m = n = 3 (about 2.4e4). Architecture 1 with the reference's (F2, F4) inputs: 99444 and
    367689 (the paper: 1e5 to 5.6e5); with all four features 100724 and 370569."""
    counts = {}
    for n in (2, 3):
        model = linear_canonical(n)
        for arch, feats in ((2, None), (1, None), (1, ("F2", "F4"))):
            net = KalmanNet(model, architecture=arch, features=feats)
            counts[n, arch, feats] = sum(p.numel() for p in net.parameters())
    assert counts[2, 2, None] == _arch2_count(2, 2) == 5208
    assert 5000 <= counts[2, 2, None] <= 5400
    assert counts[3, 2, None] == _arch2_count(3, 3) == 23928
    assert 23000 <= counts[3, 2, None] <= 25000
    assert counts[2, 1, ("F2", "F4")] == 99444 and counts[3, 1, ("F2", "F4")] == 367689
    assert counts[2, 1, None] == 100724 and counts[3, 1, None] == 370569
    assert all(1e5 * 0.9 <= c <= 5.6e5 for (_, a, _), c in counts.items() if a == 1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"architecture": 2},
        {"architecture": 2, "in_mult": 3, "out_mult": 10, "normalize_features": False},
        {"architecture": 1, "features": ["F4", "F2"], "hidden_size": 12, "dtype": torch.float64},
    ],
)
def test_config_and_state_dict_rebuild_the_network(kwargs) -> None:
    model = synthetic_nonlinear()
    net = KalmanNet(model, gain_init="reference", generator=gen(5), **kwargs)
    cfg = json.loads(json.dumps(net.config()))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    clone = KalmanNet(model, **cfg)
    clone.load_state_dict(torch.load(buf, weights_only=True))
    assert clone.config() == net.config()
    y = model.simulate(6, 2, generator=gen(0)).y
    assert torch.equal(clone.filter(y).mean, net.filter(y).mean)


def test_config_contents() -> None:
    model = linear_canonical()
    assert KalmanNet(model).config() == {
        "architecture": 2,
        "normalize_features": True,
        "eps": 1e-12,
        "gain_init": "zero",
        "in_mult": 5,
        "out_mult": 40,
        "dtype": "float32",
    }
    cfg = KalmanNet(model, architecture=1, features=["F2", "F4"]).double().config()
    assert cfg["features"] == ["F2", "F4"] and cfg["dtype"] == "float64"
    assert (cfg["input_layer_size"], cfg["hidden_size"], cfg["output_layer_size"]) == (320, 80, 16)


# -- errors ----------------------------------------------------------------------------------------
def test_constructor_errors() -> None:
    model = linear_canonical()
    with pytest.raises(TypeError, match="model: expected a SystemModel"):
        KalmanNet("not a model")
    with pytest.raises(ParameterError, match="architecture: expected 1 or 2, found 3"):
        KalmanNet(model, architecture=3)
    with pytest.raises(ParameterError, match="architecture: expected 1 or 2, found True"):
        KalmanNet(model, architecture=True)
    with pytest.raises(TypeError, match="normalize_features: expected a bool"):
        KalmanNet(model, normalize_features=1)
    with pytest.raises(ParameterError, match="eps: expected a finite number > 0"):
        KalmanNet(model, eps=0.0)
    with pytest.raises(ParameterError, match="hidden_size: not an option of architecture 2"):
        KalmanNet(model, hidden_size=10)
    with pytest.raises(ParameterError, match="in_mult: not an option of architecture 1"):
        KalmanNet(model, architecture=1, in_mult=5)
    with pytest.raises(ParameterError, match="out_mult: expected an integer >= 1, found 0"):
        KalmanNet(model, out_mult=0)
    with pytest.raises(ParameterError, match="features: expected distinct names"):
        KalmanNet(model, architecture=1, features=["F2", "F5"])
    with pytest.raises(ParameterError, match="features: expected distinct names"):
        KalmanNet(model, architecture=1, features=[])
    with pytest.raises(ParameterError, match="dtype: expected 'float32' or 'float64'"):
        KalmanNet(model, dtype="float16")
    with pytest.raises(ParameterError, match=r"dtype: expected torch\.float32 or torch\.float64"):
        KalmanNet(model, dtype=torch.int64)
    with pytest.raises(ParameterError, match="gain_init: expected one of"):
        KalmanNet(model, gain_init="kf")
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator"):
        KalmanNet(model, generator=0)


def test_call_errors() -> None:
    model = lorenz()  # n_x = n_y = n_u = 3
    net = make_net(model)
    with pytest.raises(ParameterError, match="batch_size: expected an integer >= 1, found 0"):
        net.init(0)
    with pytest.raises(DimensionError, match=r"x0_mean: expected shape \(3,\), found \(2,\)"):
        net.init(2, x0_mean=[0.0, 1.0])
    with pytest.raises(DimensionError, match=r"x0_mean: expected shape \(2, 3\), found \(4, 3\)"):
        net.init(2, x0_mean=torch.zeros(4, 3))
    with pytest.raises(NonFiniteError, match="x0_mean: expected finite values"):
        net.init(1, x0_mean=[0.0, float("nan"), 0.0])
    state = net.init(2)
    with pytest.raises(TypeError, match="state: expected a KalmanNetState"):
        net.step((state.mean,), torch.zeros(2, 3))
    with pytest.raises(DimensionError, match=r"y: expected shape \(2, 3\), found \(2, 2\)"):
        net.step(state, torch.zeros(2, 2))
    with pytest.raises(BatchSizeError, match="y: expected batch size 2, found 5"):
        net.step(state, torch.zeros(5, 3))
    with pytest.raises(NonFiniteError, match="y: found inf"):
        net.step(state, torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(DimensionError, match=r"u_prev: expected shape \(2, 3\), found \(2, 1\)"):
        net.step(state, torch.zeros(2, 3), torch.zeros(2, 1))
    with pytest.raises(NonFiniteError, match="u_prev: expected finite values"):
        net.step(state, torch.zeros(2, 3), torch.full((2, 3), float("nan")))
    other = make_net(model, 1)
    with pytest.raises(DimensionError, match=r"state\.hidden: expected 3 hidden state"):
        net.step(other.init(2), torch.zeros(2, 3))
    with pytest.raises(DimensionError, match=r"y: expected shape \(B, T, 3\), found \(4, 3\)"):
        net.filter(torch.zeros(4, 3))
    with pytest.raises(DimensionError, match="y: expected at least one trajectory and one step"):
        net.filter(torch.zeros(2, 0, 3))
    with pytest.raises(DimensionError, match=r"u: expected shape \(2, 5, 3\), found \(2, 4, 3\)"):
        net.filter(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3))
    with pytest.raises(NonFiniteError, match="y: found inf"):
        net.filter(torch.full((1, 2, 3), float("-inf")))
    with pytest.raises(BatchSizeError, match="mask: expected batch size 2, found 3"):
        net.reset(state, [True, False, True])
    with pytest.raises(TypeError, match="state: expected a KalmanNetState"):
        net.reset(None, [True, False])
