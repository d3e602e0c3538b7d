"""A nominal model plus learned residual dynamics, the prediction model of neural MPC.

    f̂(x, u) = f_nominal(x, u) + g_θ(x, u),    h(x) = h_nominal(x)

g_θ is a small network: an affine path plus a multilayer perceptron on standardised inputs, both
initialised to zero so that the untrained model is exactly the nominal one. Train it with
:func:`kalmannet_ctrl.training.fit_residual` on transitions collected with
:func:`kalmannet_ctrl.training.collect_transitions`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import as_tensor, check_finite, check_positive_int, check_shape
from ..errors import CheckpointError, DimensionError, ParameterError
from ._residual_net import _ACTIVATIONS, _InferenceWeights
from .base import _COPIED, SystemModel

__all__ = ["ResidualModel"]


class ResidualModel(SystemModel, nn.Module):
    """The nominal model plus a learned residual: f̂(x, u) = f_nominal(x, u) + g_θ(x, u).

    Both a :class:`SystemModel` (usable by every estimator, by ``simulate`` and by MPC) and a
    ``torch.nn.Module`` (trained with :func:`~kalmannet_ctrl.training.fit_residual`, saved with
    :func:`~kalmannet_ctrl.training.save_checkpoint`). The measurement function, the noise
    covariances, the initial distribution, ``dt`` and the dtype (float64) are the nominal
    model's.

    The residual acts on standardised inputs z = ([x; u] − mean) / std and is scaled per state
    dimension by ``output_scale``::

        g_θ(x, u) = output_scale ⊙ (W z + b + MLP(z))

    The affine path W z + b represents any linear mismatch (ΔA x + ΔB u + c) exactly; the MLP
    (``hidden`` layers with ``activation``, then a linear output layer) the rest. W, b and the
    MLP's output layer start at zero, so the untrained model equals the nominal one exactly.
    The normalisation statistics are buffers (saved in the ``state_dict``), set from data by
    :meth:`set_normalization`, which preserves the function (the weights are re-expressed in the
    new coordinates), so it may be called again on a trained model.

    Parameters
    ----------
    nominal : SystemModel
        The designer's model. It is held, not copied, and not saved in checkpoints (pass it again
        to :func:`~kalmannet_ctrl.training.load_checkpoint`).
    hidden : sequence of int, default (64, 64)
        Widths of the MLP's hidden layers; ``()`` for the affine path alone.
    activation : {"tanh", "relu", "silu"}
        Of the hidden layers (tanh is evaluated as 2σ(2z) − 1, faster in float64).
    linear : bool, default True
        Include the affine path W z + b.
    generator : torch.Generator, optional
        Draws the MLP's hidden-layer weights (PyTorch's default uniform initialisation).
    nominal_check : mapping, optional
        A description of the nominal model the weights were trained with (written by
        :meth:`config`); when given, ``nominal`` must match it (name, dimensions and named
        parameters), else :class:`~kalmannet_ctrl.errors.CheckpointError`. Checkpoints use it
        to refuse a residual trained on another nominal model.

    Attributes
    ----------
    nominal : SystemModel
    input_mean, input_std : Tensor, (n_x + n_u,)
        Normalisation of [x; u] (buffers).
    output_scale : Tensor, (n_x,)
        Scale of the residual in each state dimension (buffer).

    Notes
    -----
    Device and dtype are the nominal model's; ``.to()`` would move the network only, so build
    the nominal model on the target device instead and keep float64. :meth:`f` does no argument
    validation (it runs inside MPC's inner loop); :meth:`set_normalization` and the training
    functions check their inputs. The Jacobians df̂/dx (:meth:`f_jacobian`) and df̂/du
    (:meth:`input_jacobian`) are exact and batched: the nominal model's plus the network's,
    computed by forward-mode through the layers (:meth:`f_and_jacobians` gives f, df/dx and
    df/du in one pass).

    Shapes
    ------
    f : x (B, n_x), u (B, n_u) or None -> (B, n_x); h : x (B, n_x) -> (B, n_y);
    f_jacobian : -> (B, n_x, n_x); input_jacobian : -> (B, n_x, n_u)

    Examples
    --------
    >>> import torch
    >>> from kalmannet_ctrl.models import pendulum
    >>> nominal = pendulum()
    >>> model = ResidualModel(nominal, hidden=(16,), generator=torch.Generator().manual_seed(0))
    >>> x, u = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    >>> bool((model.f(x, u) == nominal.f(x, u)).all())  # untrained: the nominal model
    True
    >>> model.f_jacobian(x, u).shape
    torch.Size([5, 2, 2])
    """

    def __init__(
        self,
        nominal: SystemModel,
        *,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        linear: bool = True,
        generator: torch.Generator | None = None,
        nominal_check: Mapping[str, Any] | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(nominal, SystemModel):
            raise TypeError(f"nominal: expected a SystemModel, found {type(nominal).__name__}")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
            raise TypeError(
                f"hidden: expected a sequence of layer widths, found {type(hidden).__name__}"
            )
        widths = tuple(check_positive_int(h, f"hidden[{i}]") for i, h in enumerate(hidden))
        if activation not in _ACTIVATIONS:
            raise ParameterError(
                f"activation: expected one of {sorted(_ACTIVATIONS)}, found {activation!r}"
            )
        if not isinstance(linear, bool):
            raise TypeError(f"linear: expected a bool, found {type(linear).__name__}")
        if not linear and not widths:
            raise ParameterError(
                "hidden: with linear=False at least one hidden layer is needed (nothing to learn)"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator or None, found {type(generator).__name__}"
            )
        SystemModel.__init__(
            self, **nominal._system_args(factory=None, name=f"residual({nominal.name})")
        )
        self.nominal = nominal
        if nominal_check is not None:
            _check_nominal(nominal, nominal_check)
        self.hidden = widths
        self.activation = activation
        self.use_linear = linear
        self._act, self._act_and_grad = _ACTIVATIONS[activation]
        n_x, n_in = self.n_x, self.n_x + self.n_u
        dtype, device = self.dtype, self.device
        factory = {"dtype": dtype, "device": device}
        self.register_buffer("input_mean", torch.zeros(n_in, **factory))
        self.register_buffer("input_std", torch.ones(n_in, **factory))
        self.register_buffer("output_scale", torch.ones(n_x, **factory))
        self.linear_path = nn.Linear(n_in, n_x, **factory) if linear else None
        layers, width = [], n_in
        for h in widths:
            layers.append(nn.Linear(width, h, **factory))
            width = h
        self.mlp_layers = nn.ModuleList(layers)
        self.mlp_head = nn.Linear(width, n_x, **factory) if widths else None
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator | None) -> None:
        for layer in self.mlp_layers:
            bound = 1.0 / math.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        for layer in (self.linear_path, self.mlp_head):
            if layer is not None:
                layer.weight.zero_()
                layer.bias.zero_()

    # -- the model -------------------------------------------------------------------------------
    def residual(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """The learned part g_θ(x, u) alone (no validation, differentiable in θ).

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None (zero input) -> (B, n_x)
        """
        z = self._inputs(x, u)
        out = None
        if self.linear_path is not None:
            out = nn.functional.linear(z, self.linear_path.weight, self.linear_path.bias)
        if self.mlp_head is not None:
            a = z
            for layer in self.mlp_layers:
                a = self._act(nn.functional.linear(a, layer.weight, layer.bias))
            mlp = nn.functional.linear(a, self.mlp_head.weight, self.mlp_head.bias)
            out = mlp if out is None else out + mlp
        return out * self.output_scale

    def f(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """f_nominal(x, u) + g_θ(x, u).

        With gradients off (MPC's planning), g_θ is evaluated with :meth:`inference_weights`,
        the same function in fewer operations; with gradients on, through the layers as
        :meth:`residual` (differentiable in θ).

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None (zero input) -> (B, n_x)
        """
        u = self._input(u, x)
        if torch.is_grad_enabled():
            return self.nominal.f(x, u) + self.residual(x, u)
        return self.rollout_step(x.dtype)(x, u)

    def rollout_step(self, dtype: torch.dtype | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """f̂ for many calls without gradients (MPC's rollouts), on the folded network.

        The folded weights (:meth:`inference_weights` in ``dtype``, default the model's) are
        looked up once, when this is called: the returned function does not see later changes of
        the parameters, so get a new one per rollout. With gradients on it is :meth:`f` (the
        differentiable layers).

        Shapes
        ------
        step(x (B, n_x), u (B, n_u)) -> (B, n_x)
        """
        if torch.is_grad_enabled():
            return self.f
        w = self.inference_weights(dtype)
        nominal_step = self.nominal.rollout_step(dtype)
        linear, bias, hidden, head, act = w

        def step(x: Tensor, u: Tensor) -> Tensor:
            v = torch.cat([x, u], -1)
            lead = v.shape[:-1]
            if v.dim() != 2:
                v = v.reshape(-1, v.shape[-1])
            out = torch.addmm(bias, v, linear)
            if head is not None:
                a = v
                for weight, b in hidden:
                    a = act(torch.addmm(b, a, weight))
                out = torch.addmm(out, a, head)
            return nominal_step(x, u) + out.view(*lead, -1)

        return step

    def inference_weights(self, dtype: torch.dtype | None = None) -> _InferenceWeights:
        """The network folded for evaluation on raw [x; u] (no gradients; cached per dtype).

        The normalisation, the output scale and the affine path are folded into the layers, and
        tanh(z) = 2σ(2z) − 1 into their weights (σ is ~4× faster than tanh in float64 on CPUs),
        so that, with v = [x; u] and s_0 = v,

            s_i = act(s_{i−1} W_i + b_i),    g_θ = v L + s_n H + c

        (act = σ for tanh networks; row vectors, weights stored transposed). Equal to
        :meth:`residual` up to rounding. Recomputed when a parameter or buffer changed
        (in-place updates such as optimizer steps and ``load_state_dict`` included). ``dtype``
        (default: the model's, float64) casts the folded weights, e.g. to float32 for
        :class:`~kalmannet_ctrl.controllers.MPC`'s ``rollout_dtype``: :meth:`f` then computes
        the network in the dtype of its inputs.

        Shapes
        ------
        -> linear L (n_x + n_u, n_x), bias c (n_x,), hidden [(W_i (in, out), b_i (out,))],
        head H (width, n_x) or None
        """
        dtype = self.dtype if dtype is None else dtype
        # the cache is valid while every tensor the folding read is in place, unmodified; they
        # are looked up in their modules' dicts (much cheaper than parameters(): this runs at
        # every step of a rollout)
        cached = self.__dict__.get("_folded")
        if cached is not None and all(
            table[name] is t and t._version == version for table, name, t, version in cached[0]
        ):
            by_dtype = cached[1]
        else:
            slots = [(mod._parameters, name) for mod in self.modules() for name in mod._parameters]
            slots += [(self._buffers, n) for n in ("input_mean", "input_std", "output_scale")]
            with torch.no_grad():
                by_dtype = {self.dtype: self._fold()}
            key = [(table, name, table[name], table[name]._version) for table, name in slots]
            self.__dict__["_folded"] = (key, by_dtype)
        if dtype not in by_dtype:
            w = by_dtype[self.dtype]
            by_dtype[dtype] = _InferenceWeights(
                w.linear.to(dtype),
                w.bias.to(dtype),
                [(W.to(dtype), b.to(dtype)) for W, b in w.hidden],
                None if w.head is None else w.head.to(dtype),
                w.activation,
            )
        return by_dtype[dtype]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_folded", None)  # a cache, rebuilt on first use
        return state

    def _fold(self) -> _InferenceWeights:
        inv_std = 1.0 / self.input_std
        shift = self.input_mean * inv_std  # z = v / std − shift
        scale = self.output_scale
        n_in, n_x = self.n_x + self.n_u, self.n_x
        linear = torch.zeros(n_in, n_x, dtype=self.dtype, device=self.device)
        bias = torch.zeros(n_x, dtype=self.dtype, device=self.device)
        if self.linear_path is not None:
            W, b = self.linear_path.weight, self.linear_path.bias
            linear = (W * inv_std).mT * scale
            bias = (b - W @ shift) * scale
        hidden: list[tuple[Tensor, Tensor]] = []
        head = None
        tanh = self.activation == "tanh"
        activation = torch.sigmoid if tanh else self._act
        if self.mlp_head is not None:
            # each layer's input as an affine function of the previous stored output s:
            # a = α ⊙ s − β, so that W a + b = (W diag α) s + (b − W β). First layer: s = v,
            # a = z (α = 1/std, β = mean/std); after a tanh layer s = σ(2·pre), a = 2s − 1
            # (α = 2, β = 1); after another activation a = s.
            alpha, beta = inv_std, shift
            for layer in self.mlp_layers:
                W = layer.weight * alpha
                b = layer.bias - layer.weight @ beta
                if tanh:  # store σ(2·pre): double the pre-activation
                    W, b = 2.0 * W, 2.0 * b
                hidden.append((W.mT.contiguous(), b.contiguous()))
                ones = torch.ones(layer.out_features, dtype=self.dtype, device=self.device)
                alpha, beta = (2.0 * ones, ones) if tanh else (ones, 0.0 * ones)
            Wh, bh = self.mlp_head.weight, self.mlp_head.bias
            head = ((Wh * alpha).mT * scale).contiguous()
            bias = bias + (bh - Wh @ beta) * scale
        return _InferenceWeights(linear.contiguous(), bias.contiguous(), hidden, head, activation)

    def forward(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        """Same as :meth:`f`.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> (B, n_x)
        """
        return self.f(x, u)

    def h(self, x: Tensor) -> Tensor:
        """The nominal measurement function.

        Shapes
        ------
        x : (B, n_x) -> (B, n_y)
        """
        return self.nominal.h(x)

    def h_jacobian(self, x: Tensor) -> Tensor:
        """The nominal dh/dx.

        Shapes
        ------
        x : (B, n_x) -> (B, n_y, n_x)
        """
        return self.nominal.h_jacobian(x)

    # exact df̂/dx and df̂/du: documented by SystemModel and by the Notes of the class docstring
    def f_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        u = self._input(u, x)
        return self.nominal.f_jacobian(x, u) + self._residual_jacobians(x, u)[1]

    def input_jacobian(self, x: Tensor, u: Tensor | None = None) -> Tensor:
        u = self._input(u, x)
        return self.nominal.input_jacobian(x, u) + self._residual_jacobians(x, u)[2]

    def f_and_jacobians(self, x: Tensor, u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """f̂(x, u), df̂/dx and df̂/du with a single pass through the network.

        Shapes
        ------
        x : (B, n_x), u : (B, n_u) or None -> ((B, n_x), (B, n_x, n_x), (B, n_x, n_u))
        """
        u = self._input(u, x)
        g, gx, gu = self._residual_jacobians(x, u)
        f, fx, fu = self.nominal.f_and_jacobians(x, u)
        return f + g, fx + gx, fu + gu

    def _inputs(self, x: Tensor, u: Tensor | None) -> Tensor:
        if u is None:
            u = x.new_zeros(*x.shape[:-1], self.n_u)
        return (torch.cat([x, u], -1) - self.input_mean) / self.input_std

    def _residual_jacobians(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """g (.., n_x), dg/dx (.., n_x, n_x), dg/du (.., n_x, n_u) by forward mode.

        The Jacobians are carried transposed, d(layer output)/dz as (.., n_in, width), so that
        each layer's product is a single matrix multiplication over all rows.
        """
        z = self._inputs(x, u)
        out = None
        JT = None  # d out / d z, transposed: (.., n_in, n_x)
        if self.linear_path is not None:
            W = self.linear_path.weight
            out = nn.functional.linear(z, W, self.linear_path.bias)
            JT = W.mT.expand(*z.shape[:-1], *W.mT.shape)
        if self.mlp_head is not None:
            a, JTa = z, None  # JTa = (d a / d z)ᵀ; None: the identity
            for layer in self.mlp_layers:
                pre = nn.functional.linear(a, layer.weight, layer.bias)
                JTpre = layer.weight.mT if JTa is None else JTa @ layer.weight.mT
                a, d = self._act_and_grad(pre)
                JTa = d.unsqueeze(-2) * JTpre
            head = self.mlp_head
            mlp = nn.functional.linear(a, head.weight, head.bias)
            out = mlp if out is None else out + mlp
            JT_mlp = JTa @ head.weight.mT
            JT = JT_mlp if JT is None else JT + JT_mlp
        scale = self.output_scale
        J = (JT / self.input_std.unsqueeze(-1) * scale).mT
        n_x = self.n_x
        return out * scale, J[..., :n_x], J[..., n_x:]

    # -- normalisation ---------------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, x: Any, u: Any = None, x_next: Any = None) -> None:
        """Standardise the inputs with the statistics of data, preserving the function.

        ``input_mean``/``input_std`` become the mean and standard deviation of [x; u] (a
        dimension whose std is below 1e-8 · ``max(1, |mean|)`` keeps std 1), and, when ``x_next`` is
        given, ``output_scale`` the standard deviation of the nominal model's one-step error
        x_next − f_nominal(x, u) in each state dimension (floored at 1e-6 times the largest, so
        a dimension the nominal model predicts exactly stays nearly fixed). The weights are
        re-expressed in the new coordinates, so f̂ is unchanged (up to round-off): the call is
        safe on a trained model. ``model.set_normalization(*transitions)`` accepts a
        :class:`~kalmannet_ctrl.training.Transitions`.

        Shapes
        ------
        x : (N, n_x), u : (N, n_u) or None, x_next : (N, n_x) or None; N >= 2
        """
        x = as_tensor(x, "x", dtype=self.dtype, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.n_x:
            raise DimensionError(f"x: expected shape (N, {self.n_x}), found {tuple(x.shape)}")
        N = x.shape[0]
        if N < 2:
            raise DimensionError(f"x: expected at least 2 rows to fit statistics, found {N}")
        check_finite(x, "x")
        if u is None:
            u = x.new_zeros(N, self.n_u)
        u = as_tensor(u, "u", dtype=self.dtype, device=self.device)
        check_shape(u, "u", (N, self.n_u))
        check_finite(u, "u")
        v = torch.cat([x, u], -1)
        mean = v.mean(0)
        std = v.std(0)
        std = torch.where(std > 1e-8 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        scale = self.output_scale.clone()
        if x_next is not None:
            x_next = as_tensor(x_next, "x_next", dtype=self.dtype, device=self.device)
            check_shape(x_next, "x_next", (N, self.n_x))
            check_finite(x_next, "x_next")
            scale = _residual_scale(x_next - self.nominal.f(x, u))
        self._renormalize(mean, std, scale)

    def _renormalize(self, mean: Tensor, std: Tensor, scale: Tensor) -> None:
        """Set new statistics and re-express the weights so that g_θ is unchanged.

        With z = (v − m)/s and z' = (v − m')/s', an affine map P z + q equals
        P diag(s'/s) z' + P (m' − m)/s + q; the output factor c → c' multiplies the layers that
        feed the output by c/c'.
        """
        ratio = std / self.input_std
        shift = (mean - self.input_mean) / self.input_std
        first = [self.linear_path] + ([self.mlp_layers[0]] if len(self.mlp_layers) else [])
        for layer in first:
            if layer is None:
                continue
            layer.bias.add_(layer.weight @ shift)
            layer.weight.mul_(ratio)
        out_ratio = (self.output_scale / scale).unsqueeze(-1)
        last = [self.linear_path, self.mlp_head]
        for layer in last:
            if layer is None:
                continue
            layer.weight.mul_(out_ratio)
            layer.bias.mul_(out_ratio[:, 0])
        self.input_mean.copy_(mean)
        self.input_std.copy_(std)
        self.output_scale.copy_(scale)

    # -- copies and checkpoints ------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments: ``ResidualModel(nominal, **config)`` rebuilds it.

        Holds the architecture and a description of the nominal model (``nominal_check``);
        the nominal model itself is not saved and must be passed again.
        """
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "linear": self.use_linear,
            "nominal_check": _describe(self.nominal),
        }

    def replace(self, **changes: Any) -> ResidualModel:
        """A copy with the same weights around ``nominal.replace(**changes)``.

        Changes the nominal model's covariances, x_0 distribution, ``dt``, ``params``,
        ``factory`` or name (e.g. the process covariance set to the learned model's one-step
        error covariance); :func:`~kalmannet_ctrl.models.misstate_noise` works through it.

        Shapes
        ------
        changes : as in :meth:`SystemModel.replace` -> ResidualModel of the same dimensions
        """
        # the arguments SystemModel's replace takes for every model (what the nominal one holds)
        unknown = sorted(set(changes) - set(_COPIED))
        if unknown:
            raise TypeError(
                f"replace: unknown argument(s) {unknown} for ResidualModel; "
                f"expected some of {sorted(_COPIED)}"
            )
        cfg = self.config()
        del cfg["nominal_check"]
        copy = type(self)(self.nominal.replace(**changes), **cfg)
        copy.load_state_dict(self.state_dict())
        copy.train(self.training)
        return copy

    def __repr__(self) -> str:
        return (
            f"ResidualModel(nominal={self.nominal.name!r}, n_x={self.n_x}, n_u={self.n_u}, "
            f"n_y={self.n_y}, hidden={self.hidden}, activation={self.activation!r}, "
            f"linear={self.use_linear})"
        )


def _residual_scale(r: Tensor) -> Tensor:
    """Per-dimension std of one-step errors r (N, n_x), floored at 1e-6 times the largest."""
    scale = r.std(0)
    floor = 1e-6 * float(scale.max())
    return scale.clamp_min(floor if floor > 0 else 1.0)


def _describe(model: SystemModel) -> dict[str, Any]:
    """Name, dimensions and (JSON-able) named parameters of a model."""
    try:
        params = json.loads(json.dumps(model.params))
    except (TypeError, ValueError):
        params = None
    return {
        "name": model.name,
        "n_x": model.n_x,
        "n_u": model.n_u,
        "n_y": model.n_y,
        "params": params,
    }


def _check_nominal(model: SystemModel, expected: Mapping[str, Any]) -> None:
    found = _describe(model)
    for key in ("n_x", "n_u", "n_y", "name", "params"):
        want = expected.get(key)
        if key == "params" and (want is None or found[key] is None):
            continue
        if want != found[key]:
            raise CheckpointError(
                f"nominal: the residual was trained on a nominal model with {key} = {want!r}, "
                f"found {found[key]!r}; pass the nominal model it was trained with"
            )
