"""One training loop for every trainable estimator."""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._progress import bar
from .._validation import as_tensor, check_covariance, check_positive_int
from ..errors import DimensionError, MissingDependencyError
from ..models.base import Trajectory
from ._segments import (
    check_segment,
    first_rows,
    map_tensors,
    record_filter,
    resume,
    run_segments,
    split_starts,
    window,
)

__all__ = ["FitResult", "estimation_loss", "fit", "state_error"]

log = logging.getLogger(__name__)

LOSSES = ("state", "measurement", "nll")


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes
    ----------
    best_val_loss : float
        The lowest validation loss seen (the weights left in the estimator are those).
    best_step : int
        The optimisation step at which it was reached (0: the initial weights).
    steps : int
        Optimisation steps run.
    stopped_early : bool
        Validation stopped improving for ``patience`` checks.
    nonfinite_step : int or None
        The step whose loss or gradient was not finite, after which training stopped and the best
        weights were restored; None if it never happened.
    history : list of dict
        ``{"step", "train_loss", "val_loss"}`` at each validation.
    wall_s : float
        Training wall time in seconds.
    """

    best_val_loss: float
    best_step: int
    steps: int
    stopped_early: bool
    nonfinite_step: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def _as_data(data: Any, name: str, loss: str) -> Trajectory:
    if isinstance(data, Trajectory):
        x, y, u = data
    elif isinstance(data, Mapping):
        x, y, u = data.get("x"), data["y"], data.get("u")
    else:
        raise TypeError(f"{name}: expected a Trajectory (x, y, u), found {type(data).__name__}")
    if y.dim() != 3:
        raise DimensionError(f"{name}.y: expected shape (B, T, n_y), found {tuple(y.shape)}")
    if loss == "state" and (x is None or x.shape[:2] != y.shape[:2]):
        raise DimensionError(f"{name}.x: state labels (B, T, n_x) are needed for loss='state'")
    return Trajectory(x, y, u)


def _check_weight(weight: Any, name: str) -> Tensor:
    """A state-error weight: a finite, symmetric, positive semidefinite (n, n) matrix."""
    w = as_tensor(weight, name, dtype=torch.float64)
    check_covariance(w, name, semidefinite=True)
    return w


def _batch(data: Trajectory, idx: Tensor) -> Trajectory:
    return Trajectory(
        None if data.x is None else data.x[idx],
        data.y[idx],
        None if data.u is None or data.u.shape[-1] == 0 else data.u[idx],
    )


def state_error(estimate: Tensor, x: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean squared state error: mean of (x̂ − x)² over every entry, or, with ``weight`` W
    (n_x, n_x, positive semidefinite), mean over time steps of (x̂ − x)' W (x̂ − x) / n_x.

    Shapes
    ------
    estimate, x : (..., n_x), weight : (n_x, n_x) -> scalar
    """
    err = estimate - x.to(estimate.dtype)
    if weight is None:
        return (err**2).mean()
    W = weight.to(dtype=err.dtype, device=err.device)
    return ((err @ W) * err).sum(-1).mean() / err.shape[-1]


def estimation_loss(
    estimator: nn.Module,
    data: Trajectory,
    loss: str = "state",
    *,
    state_weight: Tensor | None = None,
) -> Tensor:
    """The training objective on a batch.

    ``"state"``: MSE between the estimates x̂_{t|t} and the labels x_t (the KalmanNet paper's
    loss), weighted by ``state_weight`` W when given (see :func:`state_error`; e.g. the weight
    K'(R + B'PB)K of an LQR, under which the loss is the excess control cost of acting on the
    estimate instead of the state). ``"measurement"`` (no labels needed): MSE between y_t and
    the nominal model's prediction h(f(x̂_{t-1|t-1}, u_{t-1})), t >= 1, skipping missing
    measurements.
    ``"nll"``: the estimator's own ``nll(y, u)`` (e.g. the innovations' likelihood of a
    :class:`~kalmannet_ctrl.estimators.LearnedNoiseKalmanFilter`).
    """
    if loss == "nll":
        if not hasattr(estimator, "nll"):
            raise TypeError(
                f"loss: 'nll' needs an estimator with nll(), found {type(estimator).__name__}"
            )
        return estimator.nll(data.y, data.u)
    res = estimator.filter(data.y, data.u)
    mean = res.mean
    if loss == "state":
        return state_error(mean, data.x, state_weight)
    model = estimator.model
    B, T = mean.shape[0], mean.shape[1]
    if T < 2:
        raise DimensionError("loss: 'measurement' needs sequences of at least 2 steps")
    prev = mean[:, :-1].reshape(-1, model.n_x).to(model.dtype)
    u_prev = None
    if data.u is not None and model.n_u > 0:
        u_prev = data.u[:, :-1].reshape(-1, model.n_u).to(model.dtype)
    y_hat = model.h(model.f(prev, u_prev)).reshape(B, T - 1, model.n_y)
    y = data.y[:, 1:].to(y_hat.dtype)
    observed = ~torch.isnan(y).any(-1, keepdim=True)
    err = torch.where(observed, y - y_hat, torch.zeros_like(y_hat))
    return (err**2).sum() / (observed.sum() * model.n_y).clamp_min(1)


def fit(
    estimator: nn.Module,
    train: Any,
    val: Any = None,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    loss: str = "state",
    val_every: int = 50,
    patience: int | None = None,
    seed: int = 0,
    tbptt: int | None = None,
    state_weight: Any = None,
    progress: bool = True,
    log_dir: str | None = None,
    segment: int | None = None,
) -> FitResult:
    """Train ``estimator`` on trajectories with Adam, keeping the best validation weights.

    Parameters
    ----------
    estimator : nn.Module
        Any trainable estimator with ``filter(y, u) -> FilterResult`` (and ``model`` for
        ``loss="measurement"``, ``nll`` for ``loss="nll"``).
    train, val : Trajectory
        x (B, T, n_x) labels (needed for ``loss="state"``), y (B, T, n_y), u (B, T, n_u).
        Without ``val`` the training set is also used for validation.
    steps, batch_size, lr, weight_decay :
        Optimisation: Adam with this learning rate and weight decay, minibatches drawn with a
        generator seeded by ``seed``.
    grad_clip : float or None
        Clip the gradient's global norm (backprop through time can explode).
    loss : {"state", "measurement", "nll"}
        See :func:`estimation_loss`; ``"measurement"`` trains without state labels.
    val_every : int
        Validate every so many steps (and at the end); the best weights are kept.
    patience : int, optional
        Stop after this many validations without improvement.
    seed : int
        Seeds the minibatch order (the weights' initialisation is the caller's).
    tbptt : int, optional
        Truncated backpropagation through time: each minibatch is run with ``step`` in chunks
        of this many time steps, with an optimiser update after each chunk and the recurrent
        state detached between chunks (``loss="state"`` only). Default: full backpropagation
        through whole sequences.
    state_weight : array-like, (n_x, n_x), optional
        Weight W of the state error for ``loss="state"``: positive semidefinite, symmetric
        (see :func:`state_error`). Default: the plain MSE.
    progress : bool
        Show a progress bar.
    log_dir : str, optional
        Write TensorBoard scalars there (needs the ``tensorboard`` package).
    segment : int, optional
        Train on segments of this many steps instead of whole sequences (``loss="state"``
        only): each minibatch holds ``batch_size`` segments starting at random steps t of the
        training sequences (t ≤ T − ``segment``), each resumed from the estimator's state at t,
        recorded along the whole sequences without gradients and refreshed at every validation
        (in the same pass when ``train`` and ``val`` have the same shapes). An update then costs
        ``segment`` sequential steps instead of T, at any batch size. Default: whole sequences.

    Returns
    -------
    FitResult
        The estimator is left with its best validation weights. A non-finite loss or gradient
        stops training, restores the best weights and is reported (``nonfinite_step`` and a
        warning) instead of leaving a NaN model.

    Shapes
    ------
    train, val : x (B, T, n_x), y (B, T, n_y), u (B, T, n_u); a minibatch (batch_size, T, ·),
    or (batch_size, segment, ·) with ``segment``
    """
    if not isinstance(estimator, nn.Module):
        raise TypeError(f"estimator: expected a torch.nn.Module, found {type(estimator).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, found {loss!r}")
    params = [p for p in estimator.parameters() if p.requires_grad]
    if not params:
        raise ValueError("estimator: has no trainable parameters")
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_every = check_positive_int(val_every, "val_every")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr: expected a finite number > 0, found {lr}")
    if tbptt is not None:
        tbptt = check_positive_int(tbptt, "tbptt")
        if loss != "state":
            raise ValueError(f"tbptt: truncated backpropagation needs loss='state', found {loss!r}")
    weight = None
    if state_weight is not None:
        if loss != "state":
            raise ValueError(f"state_weight: needs loss='state', found {loss!r}")
        weight = _check_weight(state_weight, "state_weight")
    train = _as_data(train, "train", loss)
    if weight is not None and train.x is not None and weight.shape[0] != train.x.shape[-1]:
        raise DimensionError(
            f"state_weight: expected shape ({train.x.shape[-1]}, {train.x.shape[-1]}) for "
            f"n_x = {train.x.shape[-1]} states, found {tuple(weight.shape)}"
        )
    val = train if val is None else _as_data(val, "val", loss)
    segment = _check_fit_segment(segment, loss, tbptt, train)
    writer = _writer(log_dir)

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        batch = _batch(train, idx)
        if tbptt is not None:
            return _tbptt_update(estimator, batch, tbptt, opt, params, grad_clip, weight)
        opt.zero_grad(set_to_none=True)
        return _step(estimation_loss(estimator, batch, loss, state_weight=weight), opt, grad_clip)

    def validate() -> float:
        with torch.no_grad():
            return float(estimation_loss(estimator, val, loss, state_weight=weight))

    n_train = train.y.shape[0]
    if segment is not None:
        train_step, validate, n_train = _segment_objective(
            estimator, train, val, segment, weight, grad_clip
        )
    return _optimize(
        estimator,
        params,
        train_step,
        validate,
        n_train=n_train,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_every=val_every,
        patience=patience,
        seed=seed,
        progress=progress,
        writer=writer,
    )


def _check_fit_segment(segment: Any, loss: str, tbptt: int | None, train: Trajectory) -> int | None:
    segment = check_segment(segment)
    if segment is None:
        return None
    if loss != "state":
        raise ValueError(f"segment: training on segments needs loss='state', found {loss!r}")
    if tbptt is not None:
        raise ValueError("segment: pass either tbptt or segment, not both")
    T = train.y.shape[1]
    if segment > T:
        raise DimensionError(f"segment: expected at most the sequences' {T} steps, found {segment}")
    return segment


def _segment_objective(
    estimator: nn.Module,
    train: Trajectory,
    val: Trajectory,
    segment: int,
    weight: Tensor | None,
    grad_clip: float | None,
) -> tuple[Callable[[Tensor, torch.optim.Optimizer], float], Callable[[], float], int]:
    """``fit``'s segment mode: (train_step, validate, number of starting points)."""
    E, T = train.y.shape[0], train.y.shape[1]
    starts = T - segment + 1
    has_u = train.u is not None and train.u.shape[-1] > 0
    joint = val is not train and all(
        (a is None) == (b is None) and (a is None or a.shape[1:] == b.shape[1:])
        for a, b in zip(train, val, strict=True)
    )
    both = (
        Trajectory(
            *(None if a is None else torch.cat([a, b]) for a, b in zip(train, val, strict=True))
        )
        if joint
        else train
    )
    recorded: dict[str, Any] = {}

    def validate() -> float:
        mean, states = record_filter(estimator, both.y, both.u if has_u else None)
        recorded["states"] = first_rows(states, E) if joint else states
        with torch.no_grad():
            if joint:
                return float(state_error(mean[E:], val.x, weight))
            if val is train:
                return float(state_error(mean, train.x, weight))
            return float(estimation_loss(estimator, val, "state", state_weight=weight))

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        rows, times = split_starts(idx, starts)
        state = resume(recorded["states"], rows, times, estimator.reset)
        u = window(train.u, rows, times, segment) if has_u else None
        u_before = train.u[rows, (times - 1).clamp_min(0)] if has_u else None
        opt.zero_grad(set_to_none=True)
        mean = run_segments(estimator, state, window(train.y, rows, times, segment), u, u_before)
        value = state_error(mean, window(train.x, rows, times, segment), weight)
        return _step(value, opt, grad_clip)

    return train_step, validate, E * starts


def _optimize(
    module: nn.Module,
    params: list[Tensor],
    train_step: Callable[[Tensor, torch.optim.Optimizer], float],
    validate: Callable[[], float],
    *,
    n_train: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    val_every: int,
    patience: int | None,
    seed: int,
    progress: bool,
    writer: Any = None,
    lr_schedule: str = "constant",
    name: str = "fit",
) -> FitResult:
    """The loop shared by the training functions: Adam on minibatches, best weights kept.

    ``train_step(idx, opt)`` runs one update on the rows ``idx`` (drawn with replacement by a
    generator seeded by ``seed``) and returns its loss, or NaN (without updating) when the loss or
    a gradient is not finite, which stops training. ``validate()`` returns the validation loss,
    evaluated before training, every ``val_every`` steps and at the end; ``module`` is left with
    the weights of the best one. ``lr_schedule="cosine"`` anneals the learning rate to zero over
    ``steps``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    # foreach: the same arithmetic as the per-tensor loop (bit for bit), a few ops per step
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        if lr_schedule == "cosine"
        else None
    )
    best = validate()
    if not math.isfinite(best):
        raise ValueError(f"val: the initial validation loss is not finite ({best})")
    best_state = copy.deepcopy(module.state_dict())
    best_step, history, since_best = 0, [], 0
    nonfinite_step, stopped_early, step, running = None, False, 0, math.nan
    start = time.perf_counter()
    pbar = bar(range(1, steps + 1), desc=name, enabled=progress)
    for step in pbar:
        idx = torch.randint(n_train, (min(batch_size, n_train),), generator=gen)
        v = train_step(idx, opt)
        if not math.isfinite(v):
            nonfinite_step = step
            break
        if scheduler is not None:
            scheduler.step()
        running = v if math.isnan(running) else 0.9 * running + 0.1 * v
        if step % val_every == 0 or step == steps:
            current = validate()
            history.append({"step": step, "train_loss": running, "val_loss": current})
            if writer is not None:
                writer.add_scalar("loss/train", running, step)
                writer.add_scalar("loss/val", current, step)
            pbar.set_postfix(train=f"{running:.4g}", val=f"{current:.4g}")
            if math.isfinite(current) and current < best:
                best, best_state, best_step, since_best = (
                    current,
                    copy.deepcopy(module.state_dict()),
                    step,
                    0,
                )
            else:
                since_best += 1
                if not math.isfinite(current):
                    nonfinite_step = step
                    break
                if patience is not None and since_best >= patience:
                    stopped_early = True
                    break
    pbar.close()
    if writer is not None:
        writer.close()
    module.load_state_dict(best_state)
    if nonfinite_step is not None:
        warnings.warn(
            f"{name}: the loss became non-finite at step {nonfinite_step}; training stopped and "
            f"the best weights (validation loss {best:.6g} at step {best_step}) were restored",
            RuntimeWarning,
            stacklevel=3,
        )
    return FitResult(
        best_val_loss=best,
        best_step=best_step,
        steps=step,
        stopped_early=stopped_early,
        nonfinite_step=nonfinite_step,
        history=history,
        wall_s=time.perf_counter() - start,
    )


def _step(value: Tensor, opt: torch.optim.Optimizer, grad_clip: float | None) -> float:
    """One update of ``opt``'s parameters on the loss ``value``: its value, or NaN (no update)
    when it or a gradient is not finite."""
    params = [p for group in opt.param_groups for p in group["params"]]
    if not bool(torch.isfinite(value)) or not _update(value, opt, params, grad_clip):
        return math.nan
    return float(value.detach())


def _update(
    value: Tensor, opt: torch.optim.Optimizer, params: list, grad_clip: float | None
) -> bool:
    """Backward and one optimiser step; False (no step) when a gradient is not finite.

    The gradients' global norm (which the clip needs anyway) is the finiteness check: one
    reduction over every parameter instead of one check per tensor. Only a norm that is not
    finite is looked at tensor by tensor: finite gradients whose norm overflows are still a step
    (clipped to zero, as the clip does).
    """
    value.backward()
    grads = [p.grad for p in params if p.grad is not None]
    if grad_clip is not None:
        norm = nn.utils.clip_grad_norm_(params, grad_clip, foreach=True)
    else:
        norm = nn.utils.get_total_norm(grads, foreach=True)
    if not bool(torch.isfinite(norm)) and not all(bool(torch.isfinite(g).all()) for g in grads):
        return False
    opt.step()
    return True


def _tbptt_update(
    estimator: nn.Module,
    batch: Trajectory,
    k: int,
    opt: torch.optim.Optimizer,
    params: list,
    grad_clip: float | None,
    weight: Tensor | None = None,
) -> float:
    """One pass over a minibatch in chunks of ``k`` steps; the mean loss (NaN if not finite)."""
    B, T = batch.y.shape[0], batch.y.shape[1]
    state = estimator.init(B)
    total, count = 0.0, 0
    for start in range(0, T, k):
        opt.zero_grad(set_to_none=True)
        means = []
        for t in range(start, min(start + k, T)):
            u_prev = None if batch.u is None or t == 0 else batch.u[:, t - 1]
            x_hat, state = estimator.step(state, batch.y[:, t], u_prev)
            means.append(x_hat)
        chunk = torch.stack(means, 1)
        value = state_error(chunk, batch.x[:, start : start + len(means)], weight)
        if not bool(torch.isfinite(value)) or not _update(value, opt, params, grad_clip):
            return math.nan
        state = map_tensors(Tensor.detach, state)
        total += float(value.detach()) * len(means)
        count += len(means)
    return total / count


def _writer(log_dir: str | None) -> Any:
    if log_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingDependencyError(
            "log_dir: TensorBoard logging needs the tensorboard package: pip install tensorboard"
        ) from exc
    return SummaryWriter(log_dir)
