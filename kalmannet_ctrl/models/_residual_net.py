"""Building blocks of :class:`~kalmannet_ctrl.models.ResidualModel`'s network.

The hidden-layer activations, each with a function that returns the activation and its
derivative at the same pre-activation (for the forward-mode Jacobians of the network), and the
network folded for evaluation (:meth:`~kalmannet_ctrl.models.ResidualModel.inference_weights`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn


def _tanh(z: Tensor) -> Tensor:
    # tanh z = 2 σ(2z) − 1: float64 torch.tanh is about twice as slow on CPUs (80 µs against
    # 38 µs for 256 × 64 entries on one core, torch 2.13); absolute error ~1e-16
    return 2.0 * torch.sigmoid(2.0 * z) - 1.0


def _tanh_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
    a = _tanh(z)
    return a, 1.0 - a * a


def _relu_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
    return torch.relu(z), (z > 0).to(z.dtype)


def _silu_and_grad(z: Tensor) -> tuple[Tensor, Tensor]:
    s = torch.sigmoid(z)
    return nn.functional.silu(z), s * (1.0 + z * (1.0 - s))


# name -> (activation, activation and its derivative at the same pre-activation)
_ACTIVATIONS: dict[
    str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], tuple[Tensor, Tensor]]]
] = {
    "tanh": (_tanh, _tanh_and_grad),
    "relu": (torch.relu, _relu_and_grad),
    "silu": (nn.functional.silu, _silu_and_grad),
}


class _InferenceWeights(NamedTuple):
    """:meth:`ResidualModel.inference_weights`: g_θ(v) = v L + act(… act(v W_1 + b_1) …) H + c."""

    linear: Tensor  # L (n_x + n_u, n_x), the affine path (zero without one)
    bias: Tensor  # c (n_x,)
    hidden: list[tuple[Tensor, Tensor]]  # (W_i (in, out), b_i (out,)) per hidden layer
    head: Tensor | None  # H (width, n_x); None without an MLP
    activation: Callable[[Tensor], Tensor]
