"""Truncated training segments started from recorded recurrent states.

A sequential training loop (backpropagation through a filter or a closed loop) pays per-op
overhead at every step of its sequences, almost independently of the batch: at the batch sizes
of these loops the cost of an update grows with the length of the sequences, not their number.
Training on many short segments in parallel, each started from a state recorded along full-length
sequences run without gradients, makes an update cost the segment's length instead of the
sequence's (Williams & Peng 1990's truncated backpropagation through time, with the starting
points drawn at random instead of in order, so that a minibatch mixes every time step).

The recurrent states here are trees: a tensor whose first dimension is the batch, a tuple or
NamedTuple of trees, or None. :func:`stack_states` stacks a list of them along time and
:func:`take_states` gathers rows at given (row, time) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .._validation import check_positive_int
from ..errors import DimensionError


def stack_states(states: Sequence[Any], batch_size: int) -> Any:
    """The trees ``states`` (one per time step) stacked along a new time dimension 1.

    A leaf whose first dimension is not ``batch_size`` (a covariance shared by the batch) is
    broadcast to every row first; None stays None (it must be None at every step).

    Shapes
    ------
    states : T trees with leaves (B, ...) or shared (...) -> one tree with leaves (B, T, ...)
    """
    first = states[0]
    if first is None:
        if any(s is not None for s in states):
            raise TypeError("states: a field is None at some steps and not at others")
        return None
    if isinstance(first, Tensor):
        if not all(isinstance(s, Tensor) for s in states):
            raise TypeError("states: a field is a tensor at some steps and not at others")
        rows = [
            s if s.dim() > 0 and s.shape[0] == batch_size else s.expand(batch_size, *s.shape)
            for s in states
        ]
        return torch.stack(rows, 1)
    if isinstance(first, tuple):
        if not all(isinstance(s, tuple) and len(s) == len(first) for s in states):
            raise TypeError("states: the recurrent states do not share one structure")
        fields = [stack_states([s[k] for s in states], batch_size) for k in range(len(first))]
        return type(first)(*fields) if hasattr(first, "_fields") else tuple(fields)
    raise TypeError(f"states: cannot record a field of type {type(first).__name__}")


def map_tensors(fn: Callable[[Tensor], Tensor], tree: Any) -> Any:
    """``tree`` with ``fn`` applied to every tensor leaf (tuples and NamedTuples rebuilt; any
    other leaf, None included, kept as it is)."""
    if isinstance(tree, Tensor):
        return fn(tree)
    if isinstance(tree, tuple):
        fields = [map_tensors(fn, t) for t in tree]
        return type(tree)(*fields) if hasattr(tree, "_fields") else tuple(fields)
    return tree


def take_states(tree: Any, rows: Tensor, times: Tensor) -> Any:
    """The entries ``[rows[i], times[i]]`` of every leaf of a stacked tree (:func:`stack_states`).

    Shapes
    ------
    tree : leaves (B, T, ...), rows, times : (N,) -> leaves (N, ...)
    """
    return map_tensors(lambda t: t[rows, times], tree)


def first_rows(tree: Any, n: int) -> Any:
    """The first ``n`` rows of every leaf of a tree of batched tensors.

    Shapes
    ------
    tree : leaves (B, ...) -> leaves (n, ...)
    """
    return map_tensors(lambda t: t[:n], tree)


def check_segment(segment: Any, name: str = "segment") -> int | None:
    """``segment``: None (whole sequences) or a positive int (the segments' length)."""
    return None if segment is None else check_positive_int(segment, name)


def split_starts(idx: Tensor, horizon: int) -> tuple[Tensor, Tensor]:
    """Flat indices into ``(rows, horizon)`` recorded steps as (row, time) pairs.

    Shapes
    ------
    idx : (N,) -> rows (N,), times (N,)
    """
    if horizon < 1:
        raise DimensionError(f"horizon: expected at least one recorded step, found {horizon}")
    return torch.div(idx, horizon, rounding_mode="floor"), idx % horizon


def record_filter(estimator: Any, y: Tensor, u: Tensor | None) -> tuple[Tensor, Any]:
    """Run ``estimator.step`` along whole sequences without gradients, recording its states.

    Returns the estimates x̂_{t|t} and the states after every step (stacked,
    :func:`stack_states`): ``states[:, t]`` is the state a segment starting at t + 1 resumes.

    Shapes
    ------
    y : (B, T, n_y), u : (B, T, n_u) or None -> mean (B, T, n_x), states with leaves (B, T, ...)
    """
    B, T = y.shape[0], y.shape[1]
    state = estimator.init(B)
    means, states = [], []
    with torch.no_grad():
        for t in range(T):
            u_prev = None if u is None or t == 0 else u[:, t - 1]
            mean, state = estimator.step(state, y[:, t], u_prev)
            means.append(mean)
            states.append(state)
    return torch.stack(means, 1), stack_states(states, B)


def resume(states: Any, rows: Tensor, times: Tensor, reset: Callable[[Any, Tensor], Any]) -> Any:
    """The recorded states before step ``times`` of sequences ``rows``: the state recorded
    after step t − 1, or a fresh start where t = 0 (``reset(state, mask)``: an estimator's
    ``reset``, a controller's ``reset_rows``).

    Shapes
    ------
    states : leaves (B, T, ...), rows, times : (N,) -> a state of batch size N
    """
    state = take_states(states, rows, (times - 1).clamp_min(0))
    start = times == 0
    if bool(start.any()):
        state = reset(state, start)
    return state


def run_segments(
    estimator: Any, state: Any, y: Tensor, u: Tensor | None, u_before: Tensor | None
) -> Tensor:
    """``estimator.step`` along segments from ``state``; ``u_before`` is the input applied just
    before the first step (ignored for fresh rows).

    Shapes
    ------
    y : (N, L, n_y), u : (N, L, n_u) or None, u_before : (N, n_u) or None -> mean (N, L, n_x)
    """
    means = []
    for t in range(y.shape[1]):
        u_prev = u_before if t == 0 else (None if u is None else u[:, t - 1])
        mean, state = estimator.step(state, y[:, t], u_prev)
        means.append(mean)
    return torch.stack(means, 1)


def window(seq: Tensor, rows: Tensor, times: Tensor, length: int) -> Tensor:
    """``seq[rows[i], times[i] : times[i] + length]`` for every i.

    Shapes
    ------
    seq : (B, T, ...), rows, times : (N,) -> (N, length, ...)
    """
    offsets = times[:, None] + torch.arange(length, device=times.device)
    return seq[rows[:, None], offsets]
