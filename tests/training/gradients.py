"""A gradient check shared by the training tests: autograd against central differences."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch


def assert_gradient_matches_central_differences(
    loss: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    *,
    h: float = 1e-6,
    rel: float = 1e-5,
    abs: float = 1e-9,
) -> None:
    """d loss / d params by autograd equals (loss(p + h e_i) − loss(p − h e_i)) / 2h, entry by
    entry (float64 parameters, changed in place and restored)."""
    grads = torch.autograd.grad(loss(), list(params))
    for p, g in zip(params, grads, strict=True):
        flat, gflat = p.data.view(-1), g.reshape(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            with torch.no_grad():
                flat[i] = old + h
                up = loss()
                flat[i] = old - h
                down = loss()
                flat[i] = old
            assert float(gflat[i]) == pytest.approx(float(up - down) / (2 * h), rel=rel, abs=abs)
