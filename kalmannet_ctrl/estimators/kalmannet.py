"""KalmanNet: the Kalman filter's structure with a recurrent network computing the gain.

KalmanNet keeps the nominal model's f and h and the Kalman update, and replaces the gain
computation (the step that needs the unknown noise statistics) by a recurrent neural network fed
with four difference features. No covariance is propagated.

Timing follows :mod:`kalmannet_ctrl.estimators.base`: the state from :meth:`KalmanNet.init` holds
x̂_0 (the prior mean of x_0); step t predicts with u_{t-1} (skipped at t = 0), then updates with
y_t; a NaN anywhere in a measurement row means "no measurement" (predict only).

References
----------
G. Revach, N. Shlezinger, X. Ni, A. López Escoriza, R. J. G. van Sloun, Y. C. Eldar,
"KalmanNet: Neural Network Aided Kalman Filtering for Partially Known Dynamics",
IEEE Trans. Signal Processing 70, 2022 (arXiv:2107.10043); public code KalmanNet/KalmanNet_TSP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._validation import (
    as_tensor,
    check_batch,
    check_finite,
    check_positive_float,
    check_positive_int,
    check_shape,
)
from ..errors import DimensionError
from ..models.base import SystemModel
from ._kalmannet_options import (
    _FEATURES,
    _check_architecture_options,
    _check_options,
    _parse_dtype,
    _parse_features,
)
from .base import (
    FilterResult,
    SequenceFilter,
    _check_no_inf,
    check_sequences,
    step_through,
)

__all__ = ["KalmanNet", "KalmanNetState"]

class KalmanNetState(NamedTuple):
    """Recurrent state of :class:`KalmanNet` after step t-1 (or after :meth:`KalmanNet.init`).

    Shapes
    ------
    mean : (B, n_x)  x̂_{t-1|t-1}; x̂_0 (the prior mean) for fresh rows
    prev_mean : (B, n_x)  x̂_{t-2|t-2}; x̂_0 for fresh rows
    prev_prior : (B, n_x)  x̂_{t-1|t-2}; x̂_0 for fresh rows
    prev_y : (B, n_y)  the last measurement received; h(x̂_0) before the first one
    hidden : tuple of (B, ·) tensors  the network's hidden states: (h_Q (B, n_x²),
        h_Σ (B, n_x²), h_S (B, n_y²)) for architecture 2, (h (B, hidden_size),) for architecture 1
    fresh : (B,) bool, or None when no row is fresh. A fresh row's next step skips the prediction.

    Every tensor is in the network's dtype and on its device.
    """

    mean: Tensor
    prev_mean: Tensor
    prev_prior: Tensor
    prev_y: Tensor
    hidden: tuple[Tensor, ...]
    fresh: Tensor | None


def _fc(n_in: int, n_out: int) -> nn.Module:
    """A linear layer followed by ReLU, allocated without initialisation (see _init_weights)."""
    return nn.Sequential(nn.utils.skip_init(nn.Linear, n_in, n_out), nn.ReLU())


class KalmanNet(nn.Module, SequenceFilter):
    """KalmanNet (Revach et al. 2022): a Kalman filter whose gain comes from a recurrent network.

    With the *nominal* model's f and h::

        x̂_{t|t-1} = f(x̂_{t-1|t-1}, u_{t-1}),   ŷ_{t|t-1} = h(x̂_{t|t-1})
        x̂_{t|t}   = x̂_{t|t-1} + K_t (y_t − ŷ_{t|t-1})

    where the gain K_t (n_x × n_y values, the network's unconstrained output, as in the paper) is
    computed from the features

    - F1 = y_t − y_{t-1} (observation difference),
    - F2 = y_t − ŷ_{t|t-1} (innovation),
    - F3 = x̂_{t-1|t-1} − x̂_{t-2|t-2} (forward evolution difference),
    - F4 = x̂_{t-1|t-1} − x̂_{t-1|t-2} (forward update difference),

    each divided by max(‖F‖₂, eps) per sample when ``normalize_features`` (as in the reference
    code). No covariance is propagated: :meth:`filter` returns ``cov=None``.

    **Architecture 2** (default; the reference code's ``KalmanNetNN``), with m = n_x, n = n_y::

        GRU_Q (hidden m²)  on  ReLU(FC(F3: m → in_mult·m))
        GRU_Σ (hidden m²)  on  [h_Q, ReLU(FC(F4: m → in_mult·m))]
        GRU_S (hidden n²)  on  [ReLU(FC(h_Σ: m² → n²)), ReLU(FC([F1, F2]: 2n → 2n·in_mult))]
        K = gain_head([h_Σ, h_S]):  FC(m² + n² → out_mult·(m² + n²)), ReLU, FC(→ m·n)
        backward flow:  h_Σ ← ReLU(FC([h_Σ, ReLU(FC([h_S, vec K] → m²))] → m²))

    The routing follows the reference code (``KalmanNet_nn.py``: FC5 on the forward evolution
    difference F3 feeds GRU_Q, FC6 on the forward update difference F4 feeds GRU_Σ). Hidden states
    start at h_Q = vec(I_m), h_Σ = 0, h_S = vec(I_n) (the reference's ``prior_Q``,
    ``prior_Sigma`` and ``prior_S`` defaults). About 5.2e3 parameters for m = n = 2 and 2.4e4
    for m = n = 3 with the reference's in_mult = 5, out_mult = 40.

    **Architecture 1** (the paper's first design): the selected features, concatenated →
    ReLU(FC(→ input_layer_size)) → GRU (hidden_size) → gain_head: FC(→ output_layer_size), ReLU,
    FC(→ m·n). Defaults from the reference code: input_layer_size = 80(m + n),
    hidden_size = 10(m² + n²), output_layer_size = 4mn; the hidden state starts at 0. About 1e5
    parameters for m = n = 2. The reference's code feeds (F2, F4); the default here is all four.

    Parameters
    ----------
    model : SystemModel
        The nominal model: its f, h and x0_mean are used; its noise covariances are not.
    architecture : {1, 2}, default 2
    normalize_features : bool, default True
        L2-normalize each feature per sample (eps below) before the network.
    eps : float, default 1e-12
        Floor of the feature norms in the normalisation (the reference's value).
    in_mult, out_mult : int, optional
        Architecture 2 only: width multipliers of the input layers and of the gain head
        (default 5 and 40, the reference's ``in_mult_KNet`` and ``out_mult_KNet``).
    features : sequence of {"F1", "F2", "F3", "F4"}, optional
        Architecture 1 only: which features to feed (default all four), used in the order
        F1, F2, F3, F4.
    input_layer_size, hidden_size, output_layer_size : int, optional
        Architecture 1 only: widths of the input layer, the GRU and the gain head's hidden layer.
    gain_init : {"zero", "reference"}, default "zero"
        "reference": every layer gets PyTorch's default random initialisation, as in the
        reference code. "zero": the same, except the gain head's output layer (weights and
        bias) starts at zero, so that K_t = 0 until trained and the untrained filter is the
        nominal model's open-loop predictor. With the reference initialisation the random initial
        gains often make the filter unstable on unstable dynamics (on the 2×2 canonical model the
        float32 estimates overflow to NaN within a few hundred steps for most seeds, and reach
        1e8 within 50 steps for some): huge or non-finite first losses. At "zero" only the
        output layer gets a gradient on the first backward pass; every layer does once it has
        moved (Adam's step size does not depend on the gradients' scale).
    generator : torch.Generator, optional
        Source of the random weight initialisation (PyTorch's default distributions:
        U(±1/√fan_in) for linear layers, U(±1/√hidden) for the GRUs). Without it the global
        generator is used, as ``torch.nn`` layers do.
    dtype : torch.dtype or {"float32", "float64"}, default float32
        Of the parameters. ``.double()`` and ``.float()`` change it later.
    device : optional
        Of the parameters.

    Notes
    -----
    *Dtypes.* The state arithmetic (prior, features, update) runs in the network's dtype and on
    its device; f and h are evaluated in the model's dtype and device, their inputs and outputs
    cast. A float64 model with a float32 network therefore gives float32 estimates.

    *First step.* At t = 0 there is no prediction (x̂_{0|-1} = x̂_0 = x0_mean) and no earlier
    estimate: F3 = F4 = 0, and y_{-1} is taken as h(x̂_0), as in the reference's
    ``InitSequence``, so that F1 = F2 at t = 0.

    *Missing measurements.* A row with a NaN in y_t keeps the prior as its estimate, feeds zeros for
    F1 and F2 (the NaNs are replaced before any arithmetic), keeps its hidden state and its last
    received measurement (for the next F1).

    *Numerics.* The gain is not constrained (nothing is clamped): a badly trained network (or an
    untrained one with ``gain_init="reference"``) can make the filter unstable on unstable
    dynamics. The normalisation's derivative is
    1/eps at a zero feature; the exact zeros produced above cancel in the backward pass.

    *Checkpoints.* ``state_dict()`` plus :meth:`config` rebuild the network with
    ``KalmanNet(model, **config)`` followed by ``load_state_dict``; the model is not part of the
    checkpoint and is passed again at load time.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂_{t|t} (B, n_x);
    filter: y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x), cov None

    Examples
    --------
    >>> import torch
    >>> from kalmannet_ctrl.models.library import linear_canonical
    >>> model = linear_canonical(2)
    >>> net = KalmanNet(model, generator=torch.Generator().manual_seed(0))
    >>> sum(p.numel() for p in net.parameters())
    5208
    >>> traj = model.simulate(20, 4, generator=torch.Generator().manual_seed(1))
    >>> net.filter(traj.y).mean.shape
    torch.Size([4, 20, 2])
    """

    def __init__(
        self,
        model: SystemModel,
        *,
        architecture: int = 2,
        normalize_features: bool = True,
        eps: float = 1e-12,
        in_mult: int | None = None,
        out_mult: int | None = None,
        features: Sequence[str] | None = None,
        input_layer_size: int | None = None,
        hidden_size: int | None = None,
        output_layer_size: int | None = None,
        gain_init: str = "zero",
        generator: torch.Generator | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_options(model, architecture, normalize_features, generator, gain_init)
        dtype = _parse_dtype(dtype)
        self.model = model
        self.gain_init = gain_init
        self.n_x, self.n_y, self.n_u = model.n_x, model.n_y, model.n_u
        self.architecture = int(architecture)
        self.normalize_features = normalize_features
        self.eps = check_positive_float(eps, "eps")
        _check_architecture_options(
            self.architecture,
            arch1={
                "features": features,
                "input_layer_size": input_layer_size,
                "hidden_size": hidden_size,
                "output_layer_size": output_layer_size,
            },
            arch2={"in_mult": in_mult, "out_mult": out_mult},
        )
        if self.architecture == 2:
            self._build_architecture_2(in_mult, out_mult, dtype)
        else:
            self._build_architecture_1(features, input_layer_size, hidden_size, output_layer_size)
        init_device = generator.device if generator is not None else torch.device("cpu")
        self.to(dtype=dtype, device=init_device)
        self._init_weights(generator)
        if device is not None:
            self.to(device=device)

    # -- construction helpers ----------------------------------------------------------------------
    def _build_architecture_2(
        self, in_mult: int | None, out_mult: int | None, dtype: torch.dtype
    ) -> None:
        """The layers and initial hidden states of architecture 2 (see the class docstring)."""
        m, n = self.n_x, self.n_y
        self.in_mult = check_positive_int(5 if in_mult is None else in_mult, "in_mult")
        self.out_mult = check_positive_int(40 if out_mult is None else out_mult, "out_mult")
        k = self.in_mult
        self.fc_f3 = _fc(m, k * m)  # FC5 of the reference
        self.fc_f4 = _fc(m, k * m)  # FC6
        self.fc_obs = _fc(2 * n, 2 * n * k)  # FC7
        self.gru_q = nn.utils.skip_init(nn.GRUCell, k * m, m * m)
        self.gru_sigma = nn.utils.skip_init(nn.GRUCell, m * m + k * m, m * m)
        self.fc_sigma = _fc(m * m, n * n)  # FC1
        self.gru_s = nn.utils.skip_init(nn.GRUCell, n * n + 2 * n * k, n * n)
        d = m * m + n * n
        self.gain_head = nn.Sequential(  # FC2
            nn.utils.skip_init(nn.Linear, d, d * self.out_mult),
            nn.ReLU(),
            nn.utils.skip_init(nn.Linear, d * self.out_mult, m * n),
        )
        self.fc_back_s = _fc(n * n + m * n, m * m)  # FC3
        self.fc_back_sigma = _fc(2 * m * m, m * m)  # FC4
        self.register_buffer("h0_q", torch.eye(m, dtype=dtype).reshape(-1), persistent=False)
        self.register_buffer("h0_sigma", torch.zeros(m * m, dtype=dtype), persistent=False)
        self.register_buffer("h0_s", torch.eye(n, dtype=dtype).reshape(-1), persistent=False)

    def _build_architecture_1(
        self,
        features: Sequence[str] | None,
        input_layer_size: int | None,
        hidden_size: int | None,
        output_layer_size: int | None,
    ) -> None:
        """The layers of architecture 1 (see the class docstring); defaults from the reference."""
        m, n = self.n_x, self.n_y
        self.features = _parse_features(features)
        d_in = sum(m if f in ("F3", "F4") else n for f in self.features)
        self.input_layer_size = check_positive_int(
            80 * (m + n) if input_layer_size is None else input_layer_size,
            "input_layer_size",
        )
        self.hidden_size = check_positive_int(
            10 * (m * m + n * n) if hidden_size is None else hidden_size, "hidden_size"
        )
        self.output_layer_size = check_positive_int(
            4 * m * n if output_layer_size is None else output_layer_size,
            "output_layer_size",
        )
        self.fc_in = _fc(d_in, self.input_layer_size)
        self.gru = nn.utils.skip_init(nn.GRUCell, self.input_layer_size, self.hidden_size)
        self.gain_head = nn.Sequential(
            nn.utils.skip_init(nn.Linear, self.hidden_size, self.output_layer_size),
            nn.ReLU(),
            nn.utils.skip_init(nn.Linear, self.output_layer_size, m * n),
        )

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        """PyTorch's default initialisation of every layer, drawn from ``generator``; then the
        gain head's output layer zeroed if ``gain_init == "zero"``."""
        done = set()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.in_features)
            elif isinstance(module, nn.GRUCell):
                bound = 1.0 / math.sqrt(module.hidden_size)
            else:
                continue
            for p in module.parameters(recurse=False):
                p.uniform_(-bound, bound, generator=generator)
                done.add(id(p))
        assert all(id(p) in done for p in self.parameters())
        if self.gain_init == "zero":
            last = self.gain_head[-1]
            last.weight.zero_()
            last.bias.zero_()

    def config(self) -> dict[str, Any]:
        """The JSON-able constructor arguments: ``KalmanNet(model, **config)`` rebuilds it.

        Holds the architecture, the feature options, the layer sizes and the current dtype
        (as a string); the model is not included and must be passed again.
        """
        cfg: dict[str, Any] = {
            "architecture": self.architecture,
            "normalize_features": self.normalize_features,
            "eps": self.eps,
            "gain_init": self.gain_init,
        }
        if self.architecture == 2:
            cfg.update(in_mult=self.in_mult, out_mult=self.out_mult)
        else:
            cfg.update(
                features=list(self.features),
                input_layer_size=self.input_layer_size,
                hidden_size=self.hidden_size,
                output_layer_size=self.output_layer_size,
            )
        cfg["dtype"] = str(self.dtype).removeprefix("torch.")
        return cfg

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters (and of the estimates)."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The device of the parameters (and of the estimates)."""
        return next(self.parameters()).device

    def extra_repr(self) -> str:
        return (
            f"n_x={self.n_x}, n_y={self.n_y}, architecture={self.architecture}, "
            f"normalize_features={self.normalize_features}"
        )

    # -- the model in the network's dtype ----------------------------------------------------------
    def _f(self, x: Tensor, u: Tensor | None) -> Tensor:
        m = self.model
        out = m.f(x.to(dtype=m.dtype, device=m.device), u)
        return out.to(dtype=x.dtype, device=x.device)

    def _h(self, x: Tensor) -> Tensor:
        m = self.model
        return m.h(x.to(dtype=m.dtype, device=m.device)).to(dtype=x.dtype, device=x.device)

    # -- the gain network --------------------------------------------------------------------------
    def _initial_hidden(self, B: int) -> tuple[Tensor, ...]:
        if self.architecture == 2:
            return tuple(h.expand(B, -1).clone() for h in (self.h0_q, self.h0_sigma, self.h0_s))
        return (torch.zeros(B, self.hidden_size, dtype=self.dtype, device=self.device),)

    def _gain(
        self, feats: tuple[Tensor, Tensor, Tensor, Tensor], hidden: tuple[Tensor, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        """K_t (B, n_x, n_y) and the new hidden states from (F1, F2, F3, F4)."""
        f1, f2, f3, f4 = feats
        B = f1.shape[0]
        if self.architecture == 1:
            chosen = dict(zip(_FEATURES, feats, strict=True))
            x = self.fc_in(torch.cat([chosen[name] for name in self.features], -1))
            (h,) = hidden
            h = self.gru(x, h)
            return self.gain_head(h).reshape(B, self.n_x, self.n_y), (h,)
        h_q, h_sigma, h_s = hidden
        h_q = self.gru_q(self.fc_f3(f3), h_q)
        h_sigma = self.gru_sigma(torch.cat([h_q, self.fc_f4(f4)], -1), h_sigma)
        obs = self.fc_obs(torch.cat([f1, f2], -1))
        h_s = self.gru_s(torch.cat([self.fc_sigma(h_sigma), obs], -1), h_s)
        k = self.gain_head(torch.cat([h_sigma, h_s], -1))
        # backward flow: the gain and h_S correct the Σ-GRU's hidden state
        back = self.fc_back_s(torch.cat([h_s, k], -1))
        h_sigma_next = self.fc_back_sigma(torch.cat([h_sigma, back], -1))
        return k.reshape(B, self.n_x, self.n_y), (h_q, h_sigma_next, h_s)

    def _normalize(self, x: Tensor) -> Tensor:
        return F.normalize(x, p=2.0, dim=-1, eps=self.eps) if self.normalize_features else x

    # -- the protocol ------------------------------------------------------------------------------
    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> KalmanNetState:
        """The state before the first measurement, for ``batch_size`` trajectories.

        Parameters
        ----------
        batch_size : int
        x0_mean : array-like, (n_x,) or (B, n_x), optional
            x̂_0; default the model's ``x0_mean``.
        x0_cov : optional
            Accepted for the :class:`Estimator` protocol and ignored: KalmanNet propagates no
            covariance.

        Shapes
        ------
        -> KalmanNetState with mean (B, n_x), every row fresh
        """
        del x0_cov  # no covariance is propagated
        B, n = check_positive_int(batch_size, "batch_size"), self.n_x
        dtype, device = self.dtype, self.device
        if x0_mean is None:
            mean = self.model.x0_mean.to(dtype=dtype, device=device).expand(B, n)
        else:
            mean = as_tensor(x0_mean, "x0_mean", dtype=dtype, device=device)
            if mean.dim() == 1:
                check_shape(mean, "x0_mean", (n,))
                mean = mean.expand(B, n)
            check_shape(mean, "x0_mean", (B, n))
            check_finite(mean, "x0_mean")
        mean = mean.clone()
        fresh = torch.ones(B, dtype=torch.bool, device=device)
        return KalmanNetState(mean, mean, mean, self._h(mean), self._initial_hidden(B), fresh)

    def step(
        self, state: KalmanNetState, y: Any, u_prev: Any = None
    ) -> tuple[Tensor, KalmanNetState]:
        """Predict with u_{t-1}, compute the gain, update with y_t.

        Parameters
        ----------
        state : KalmanNetState
            From :meth:`init` or the previous step.
        y : array-like, (B, n_y)
            y_t; a NaN anywhere in a row means no measurement for that row (predict only).
        u_prev : array-like, (B, n_u), optional
            u_{t-1}; default zero input. Ignored for fresh rows.

        Returns
        -------
        (Tensor, KalmanNetState)
            x̂_{t|t} (B, n_x) in the network's dtype, and the new state.

        Shapes
        ------
        y (B, n_y), u_prev (B, n_u) -> x̂_{t|t} (B, n_x)
        """
        self._check_state(state)
        B = state.mean.shape[0]
        y = as_tensor(y, "y", dtype=self.dtype, device=self.device)
        if y.dim() != 2 or y.shape[1] != self.n_y:
            raise DimensionError(f"y: expected shape ({B}, {self.n_y}), found {tuple(y.shape)}")
        check_batch("y", y.shape[0], B)
        _check_no_inf(y)
        if u_prev is not None:
            m = self.model
            u_prev = as_tensor(u_prev, "u_prev", dtype=m.dtype, device=m.device)
            check_shape(u_prev, "u_prev", (B, self.n_u))
            check_finite(u_prev, "u_prev")
        return self._step(state, y, u_prev)

    def _step(
        self, state: KalmanNetState, y: Tensor, u_prev: Tensor | None
    ) -> tuple[Tensor, KalmanNetState]:
        # prediction (none for fresh rows: their mean already is x̂_{t|t-1} = x̂_0)
        fresh = state.fresh
        if fresh is not None and bool(fresh.all()):
            prior = state.mean
        else:
            prior = self._f(state.mean, u_prev)
            if fresh is not None:
                prior = torch.where(fresh[:, None], state.mean, prior)
        y_pred = self._h(prior)
        # missing rows: y replaced by ŷ before any arithmetic, so that their innovation is 0
        missing = torch.isnan(y).any(-1, keepdim=True)  # (B, 1)
        y = torch.where(missing, y_pred, y)
        innovation = y - y_pred
        feats = (
            self._normalize(torch.where(missing, torch.zeros_like(y), y - state.prev_y)),
            self._normalize(innovation),
            self._normalize(state.mean - state.prev_mean),
            self._normalize(state.mean - state.prev_prior),
        )
        gain, hidden = self._gain(feats, state.hidden)
        updated = prior + (gain @ innovation.unsqueeze(-1)).squeeze(-1)
        mean = torch.where(missing, prior, updated)
        hidden = tuple(
            torch.where(missing, old, new) for old, new in zip(state.hidden, hidden, strict=True)
        )
        prev_y = torch.where(missing, state.prev_y, y)
        return mean, KalmanNetState(mean, state.mean, prior, prev_y, hidden, None)

    def _check_sequences(self, y: Any, u: Any) -> tuple[Tensor, Tensor | None]:
        return check_sequences(y, u, self.model, y_dtype=self.dtype, device=self.device)

    def _filter_loop(
        self, state: KalmanNetState, y: Tensor, u: Tensor | None
    ) -> FilterResult:
        means = [mean for mean, _ in step_through(self._step, state, y, u)]
        return FilterResult(torch.stack(means, 1), None)

    def forward(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Same as :meth:`filter`.

        Shapes
        ------
        y (B, T, n_y), u (B, T, n_u) -> mean (B, T, n_x)
        """
        return self.filter(y, u, x0_mean=x0_mean, x0_cov=x0_cov)

    def reset(self, state: KalmanNetState, mask: Any) -> KalmanNetState:
        """Restart the rows where ``mask`` is True from the model's x0_mean and initial hidden
        states; the other rows are unchanged.

        Shapes
        ------
        mask : (B,) bool
        """
        self._check_state(state)
        B = state.mean.shape[0]
        mask = torch.as_tensor(mask, dtype=torch.bool, device=state.mean.device).reshape(-1)
        check_batch("mask", mask.shape[0], B)
        if not bool(mask.any()):
            return state
        if bool(mask.all()):
            return self.init(B)
        fresh_state = self.init(B)
        col = mask[:, None]

        def pick(new: Tensor, old: Tensor) -> Tensor:
            return torch.where(col, new, old)

        hidden = tuple(
            pick(new, old) for new, old in zip(fresh_state.hidden, state.hidden, strict=True)
        )
        fresh = mask if state.fresh is None else (mask | state.fresh)
        return KalmanNetState(
            pick(fresh_state.mean, state.mean),
            pick(fresh_state.prev_mean, state.prev_mean),
            pick(fresh_state.prev_prior, state.prev_prior),
            pick(fresh_state.prev_y, state.prev_y),
            hidden,
            fresh,
        )

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, KalmanNetState):
            raise TypeError(
                f"state: expected a KalmanNetState from init(), found {type(state).__name__}"
            )
        n_hidden = 3 if self.architecture == 2 else 1
        if state.mean.dim() != 2 or state.mean.shape[1] != self.n_x:
            raise DimensionError(
                f"state.mean: expected shape (B, {self.n_x}), found {tuple(state.mean.shape)}"
            )
        if len(state.hidden) != n_hidden:
            raise DimensionError(
                f"state.hidden: expected {n_hidden} hidden state(s) for architecture "
                f"{self.architecture}, found {len(state.hidden)}; "
                "was the state made by another network?"
            )
