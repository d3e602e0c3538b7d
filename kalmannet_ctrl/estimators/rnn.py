"""A data-centric baseline: a GRU that maps measurements (and inputs) to state estimates."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._validation import as_tensor, check_batch, check_positive_int, check_shape
from ..errors import DimensionError
from ..models.base import SystemModel, Trajectory
from .base import FilterResult

__all__ = ["RNNEstimator", "RNNState"]


class RNNState(NamedTuple):
    """Recurrent state of an :class:`RNNEstimator`.

    Shapes
    ------
    hidden : (num_layers, B, hidden_size)
    mean : (B, n_x) the last estimate
    """

    hidden: Tensor
    mean: Tensor


class RNNEstimator(nn.Module):
    """GRU state estimator that knows nothing of the model but its dimensions.

    At step t the network reads (y_t, an observed flag, u_{t−1}) — a missing (NaN) measurement
    is fed as zeros with the flag down — and a linear head maps its hidden state to x̂_t. Inputs
    and outputs are standardised with statistics set by :meth:`set_normalization` (identity
    until then). The data-centric end of the spectrum: the baseline that shows what the model
    knowledge in KalmanNet or a Kalman filter is worth.

    Parameters
    ----------
    model : SystemModel
        Only its dimensions (n_x, n_y, n_u) are used.
    hidden_size : int, default 64
    num_layers : int, default 1
    generator : torch.Generator, optional
        Seeds the weight initialisation.

    Shapes
    ------
    step: y (B, n_y), u_prev (B, n_u) -> x̂ (B, n_x); filter: y (B, T, n_y), u (B, T, n_u) ->
    mean (B, T, n_x), cov None
    """

    def __init__(
        self,
        model: SystemModel,
        *,
        hidden_size: int = 64,
        num_layers: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, SystemModel):
            raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
        self.model = model
        self.n_y, self.n_u = model.n_y, model.n_u
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        n_in = self.n_y + 1 + self.n_u
        self.gru = nn.GRU(n_in, self.hidden_size, self.num_layers, batch_first=True)
        self.head = nn.Linear(self.hidden_size, model.n_x)
        if generator is not None:
            with torch.no_grad():
                for p in self.parameters():
                    bound = 1.0 / self.hidden_size**0.5
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        self.register_buffer("y_mean", torch.zeros(self.n_y))
        self.register_buffer("y_std", torch.ones(self.n_y))
        self.register_buffer("x_mean", torch.zeros(model.n_x))
        self.register_buffer("x_std", torch.ones(model.n_x))

    @property
    def n_x(self) -> int:
        """The state dimension of the model."""
        return self.model.n_x

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the parameters (and of the estimates)."""
        return self.head.weight.dtype

    def set_normalization(self, data: Trajectory) -> None:
        """Standardise inputs and outputs with the statistics of training data (x and y).

        Shapes
        ------
        data : Trajectory with y (B, T, n_y) and x (B, T, n_x)
        """
        with torch.no_grad():
            y = data.y.reshape(-1, self.n_y).to(self.dtype)
            y = y[~torch.isnan(y).any(-1)]
            self.y_mean.copy_(y.mean(0))
            self.y_std.copy_(y.std(0).clamp_min(1e-6))
            if data.x is not None:
                x = data.x.reshape(-1, self.n_x).to(self.dtype)
                self.x_mean.copy_(x.mean(0))
                self.x_std.copy_(x.std(0).clamp_min(1e-6))

    def _inputs(self, y: Tensor, u_prev: Tensor) -> Tensor:
        observed = ~torch.isnan(y).any(-1, keepdim=True)
        z = torch.where(observed, (y - self.y_mean) / self.y_std, torch.zeros_like(y))
        return torch.cat([z, observed.to(y.dtype), u_prev], -1)

    # -- the Estimator protocol ---------------------------------------------------------------
    def init(self, batch_size: int, *, x0_mean: Any = None, x0_cov: Any = None) -> RNNState:
        """Zero hidden state; ``x0_mean``/``x0_cov`` are accepted and unused (data-centric).

        Shapes
        ------
        -> RNNState(hidden (num_layers, B, hidden_size), mean (B, n_x))
        """
        B = check_positive_int(batch_size, "batch_size")
        hidden = torch.zeros(self.num_layers, B, self.hidden_size, dtype=self.dtype)
        return RNNState(hidden, self.x_mean.expand(B, self.n_x).clone())

    def step(self, state: RNNState, y: Any, u_prev: Any = None) -> tuple[Tensor, RNNState]:
        """One step of the GRU on (y_t, observed flag, u_{t-1}) and the head.

        Shapes
        ------
        y : (B, n_y), a NaN row means no measurement; u_prev : (B, n_u) or None (zero input)
        -> x̂_t (B, n_x) and the new state
        """
        if not isinstance(state, RNNState):
            raise TypeError(
                f"state: expected an RNNState from init(), found {type(state).__name__}"
            )
        B = state.mean.shape[0]
        y = as_tensor(y, "y", dtype=self.dtype)
        if y.dim() != 2 or y.shape[1] != self.n_y:
            raise DimensionError(f"y: expected shape ({B}, {self.n_y}), found {tuple(y.shape)}")
        check_batch("y", y.shape[0], B)
        if u_prev is None:
            u_prev = y.new_zeros(B, self.n_u)
        else:
            u_prev = as_tensor(u_prev, "u_prev", dtype=self.dtype)
            check_shape(u_prev, "u_prev", (B, self.n_u))
        out, hidden = self.gru(self._inputs(y, u_prev).unsqueeze(1), state.hidden)
        mean = self.head(out[:, 0]) * self.x_std + self.x_mean
        return mean, RNNState(hidden, mean)

    def filter(
        self, y: Any, u: Any = None, *, x0_mean: Any = None, x0_cov: Any = None
    ) -> FilterResult:
        """Filter a batch of sequences in one pass of the GRU; ``x0_mean``/``x0_cov`` are unused.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov None
        """
        y = as_tensor(y, "y", dtype=self.dtype)
        if y.dim() != 3 or y.shape[2] != self.n_y:
            raise DimensionError(f"y: expected shape (B, T, {self.n_y}), found {tuple(y.shape)}")
        B, T = y.shape[0], y.shape[1]
        u_prev = y.new_zeros(B, T, self.n_u)
        if u is not None and self.n_u > 0:
            u = as_tensor(u, "u", dtype=self.dtype)
            check_shape(u, "u", (B, T, self.n_u))
            u_prev = torch.cat([y.new_zeros(B, 1, self.n_u), u[:, :-1]], 1)
        out, _ = self.gru(self._inputs(y, u_prev), self.init(B).hidden)
        return FilterResult(self.head(out) * self.x_std + self.x_mean, None)

    def forward(self, y: Any, u: Any = None) -> FilterResult:
        """Same as :meth:`filter`.

        Shapes
        ------
        y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), cov None
        """
        return self.filter(y, u)

    def reset(self, state: RNNState, mask: Any) -> RNNState:
        """Restart the rows where ``mask`` is True: zero hidden state, the mean at ``x_mean``.

        Shapes
        ------
        mask : (B,) bool
        """
        mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
        check_batch("mask", mask.shape[0], state.mean.shape[0])
        hidden = torch.where(mask[None, :, None], torch.zeros_like(state.hidden), state.hidden)
        mean = torch.where(mask[:, None], self.x_mean.expand_as(state.mean), state.mean)
        return RNNState(hidden, mean)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (the model is passed again when loading)."""
        return {"hidden_size": self.hidden_size, "num_layers": self.num_layers}
