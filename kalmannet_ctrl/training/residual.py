"""Data and training for residual dynamics models (the learned part of neural MPC).

- :class:`Transitions`: one-step transitions (x_t, u_t, x_{t+1});
- :func:`collect_transitions`: closed-loop transitions from an environment, labelled with the true
  states (``info["state"]``) or with an estimator's estimates;
- :func:`fit_residual`: fits :class:`~kalmannet_ctrl.models.ResidualModel`'s g_θ to the nominal
  model's one-step errors;
- :func:`one_step_mse`: the one-step prediction error of any model on transitions.

A fitted :class:`~kalmannet_ctrl.models.ResidualModel` is saved with
:func:`~kalmannet_ctrl.training.save_checkpoint` and loaded with
``load_checkpoint(path, ResidualModel, nominal)``: the nominal model is not stored in the file and
is passed again (a model whose name, dimensions or named parameters differ from the one it was
trained with is refused with a :class:`~kalmannet_ctrl.errors.CheckpointError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from .._progress import bar
from .._validation import (
    as_tensor,
    check_finite,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from ..errors import DimensionError, NotPositiveDefiniteError, ParameterError
from ..estimators.base import Estimator
from ..models.base import SystemModel, Trajectory
from ..models.residual import ResidualModel, _residual_scale
from .fit import FitResult, _optimize, _step
from .rollout import Rollout, check_controller, check_exploration_std, run_episodes

__all__ = ["Transitions", "collect_transitions", "fit_residual", "one_step_mse"]

_WEIGHTINGS = ("std", "process_cov")
_SCHEDULES = ("cosine", "constant")


class Transitions(NamedTuple):
    """One-step transitions x_{t+1} ≈ f(x_t, u_t), stacked over time and episodes.

    Shapes
    ------
    x : (N, n_x)  states x_t
    u : (N, n_u)  inputs u_t applied at x_t
    x_next : (N, n_x)  the states x_{t+1} they led to

    Examples
    --------
    >>> import torch
    >>> from kalmannet_ctrl.models import pendulum
    >>> traj = pendulum().simulate(5, 3, generator=torch.Generator().manual_seed(0))
    >>> data = Transitions.from_trajectory(traj)
    >>> data.x.shape, data.u.shape, data.x_next.shape
    (torch.Size([12, 2]), torch.Size([12, 1]), torch.Size([12, 2]))
    >>> Transitions.concat([data, data]).x.shape
    torch.Size([24, 2])
    """

    x: Tensor
    u: Tensor
    x_next: Tensor

    @classmethod
    def concat(cls, parts: Sequence[Transitions]) -> Transitions:
        """All rows of several :class:`Transitions`, in order.

        Shapes
        ------
        parts : each (N_i, ·) -> (Σ N_i, ·)
        """
        parts = list(parts)
        if not parts:
            raise ValueError("parts: expected at least one Transitions, found none")
        for i, p in enumerate(parts):
            if not isinstance(p, tuple) or len(p) != 3:
                raise TypeError(
                    f"parts[{i}]: expected a Transitions (x, u, x_next), found {type(p).__name__}"
                )
        try:
            return cls(*(torch.cat([p[k] for p in parts]) for k in range(3)))
        except RuntimeError as exc:
            raise DimensionError(f"parts: the transitions do not stack ({exc})") from exc

    @classmethod
    def from_trajectory(cls, traj: Trajectory, mask: Any = None) -> Transitions:
        """Every consecutive pair (x_t, u_t, x_{t+1}) of trajectories.

        Parameters
        ----------
        traj : Trajectory
            With states x; inputs u (zero input when None).
        mask : bool array-like, (B, T), optional
            The steps that belong to an episode; a pair is kept when both of its steps do. For
            :func:`~kalmannet_ctrl.training.env_rollouts` data, whose episodes that end early
            are padded, pass ``torch.isfinite(traj.y).all(-1)``. Default: every step (e.g.
            ``SystemModel.simulate``'s trajectories).

        Shapes
        ------
        traj : x (B, T, n_x), u (B, T, n_u) with T >= 2, mask (B, T) -> (N, ·), N = B (T − 1)
        without a mask
        """
        if not isinstance(traj, Trajectory) or traj.x is None:
            raise TypeError("traj: expected a Trajectory with states x (B, T, n_x)")
        x, u = traj.x, traj.u
        if x.dim() != 3 or x.shape[1] < 2:
            raise DimensionError(f"traj.x: expected shape (B, T >= 2, n_x), found {tuple(x.shape)}")
        n_x = x.shape[2]
        if u is None:
            u = x.new_zeros(*x.shape[:2], 0)
        if mask is None:
            return cls(
                x[:, :-1].reshape(-1, n_x),
                u[:, :-1].reshape(-1, u.shape[2]),
                x[:, 1:].reshape(-1, n_x),
            )
        mask = torch.as_tensor(mask, device=x.device)
        if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
            raise DimensionError(
                f"mask: expected a bool tensor of shape {tuple(x.shape[:2])}, found "
                f"{mask.dtype} {tuple(mask.shape)}"
            )
        pair = mask[:, :-1] & mask[:, 1:]
        return cls(x[:, :-1][pair], u[:, :-1][pair], x[:, 1:][pair])

    def subset(self, idx: Any) -> Transitions:
        """The rows ``idx`` (an index tensor, a boolean mask or a slice)."""
        return Transitions(self.x[idx], self.u[idx], self.x_next[idx])


# -- data collection -------------------------------------------------------------------------------
def collect_transitions(
    env: Any,
    controller: Any = None,
    *,
    episodes: int,
    exploration_std: float = 0.0,
    states: Any = "privileged",
    seed: int = 0,
    steps: int | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Transitions:
    """Run closed-loop episodes in an environment and return their one-step transitions.

    Each episode starts at a reset and runs for ``steps`` steps or until it terminates or is
    truncated; only transitions inside an episode are kept (none spans a reset or an autoreset;
    the transition into a terminal state is kept).

    Parameters
    ----------
    env : str, gymnasium.Env or gymnasium.vector.VectorEnv
        A registered id (run as ``episodes`` copies of its native vector env), a single env
        (episodes run one after the other) or a vector env such as
        :class:`~kalmannet_ctrl.envs.PartiallyKnownVectorEnv` (``num_envs`` episodes at a time,
        the surplus of the last batch discarded). Envs passed in are reset (seeded) and stepped
        but not closed. Vector envs must use the ``NEXT_STEP`` or ``DISABLED`` autoreset mode.
    controller : optional
        Anything with Stable-Baselines3's ``predict(observation, state, episode_start,
        deterministic)`` (e.g. :class:`~kalmannet_ctrl.controllers.LQG`), called with
        ``deterministic=True`` on the measurements; ``None`` for zero input, ``"random"`` for
        actions uniform in the action space.
    episodes : int
        Number of episodes.
    exploration_std : float
        Gaussian exploration noise added to every action, relative to the bounds: standard
        deviation ``exploration_std · (high − low) / 2`` per input (a fraction of the half-range
        of the action space, which must then be bounded); the result is clipped to the bounds
        (the convention of :mod:`kalmannet_ctrl.training.rollout`).
    states : "privileged" or Estimator
        The state labels: the true states ``info["state"]``, or the filtered estimates x̂_{t|t}
        of an estimator (e.g. a Kalman filter, EKF or KalmanNet on the nominal model) run on the
        measurements and applied inputs. Estimated labels are noisy and, with a mismatched model,
        biased; a residual fitted on them learns the filter's errors as well as the dynamics.
    seed : int
        Seeds the env's first reset (later batches continue its random stream) and the
        exploration noise and random actions.
    steps : int, optional
        Maximum episode length; default the env's time limit (required if it has none).
    env_kwargs : mapping, optional
        Passed to ``gymnasium.make_vec`` when ``env`` is an id (e.g. ``{"mismatch": {...}}``).
    progress : bool
        Show a progress bar over env steps.

    Returns
    -------
    Transitions
        float64 tensors, episode by episode in time order; ``u`` holds the actions the env
        applied (noise added, clipped, rounded to the env's float32).

    Shapes
    ------
    -> x (N, n_x), u (N, n_u), x_next (N, n_x), N = the total number of steps taken in episodes

    Examples
    --------
    >>> data = collect_transitions("kalmannet_ctrl/Pendulum-v0", "random", episodes=2, steps=10)
    >>> data.x.shape, data.u.shape
    (torch.Size([20, 2]), torch.Size([20, 1]))
    """
    import kalmannet_ctrl.envs  # noqa: F401  (registers the environments)

    episodes = check_positive_int(episodes, "episodes")
    exploration_std = check_exploration_std(exploration_std)
    estimator = _check_states(states)
    controller = check_controller(controller)
    if env_kwargs is not None and not isinstance(env, str):
        raise ValueError("env_kwargs: only used when env is an id; configure the env instead")
    if steps is not None:
        steps = check_positive_int(steps, "steps")
    envs, owned = _as_vector_env(env, episodes, steps, env_kwargs)
    try:
        T = steps if steps is not None else _time_limit(env, envs)
        E = envs.num_envs
        rng = np.random.default_rng(seed)
        n_batches = -(-episodes // E)
        parts = []
        pbar = bar(desc="collect", total=n_batches * T, enabled=progress, unit="step")
        for k in range(n_batches):
            roll = run_episodes(
                envs,
                controller,
                T,
                seed=seed if k == 0 else None,
                exploration_std=exploration_std,
                rng=rng,
                bar=pbar,
            )
            keep = min(E, episodes - k * E)
            parts.append(_label(roll, keep, estimator))
        pbar.close()
    finally:
        if owned:
            envs.close()
    return Transitions.concat(parts)


def _check_states(states: Any) -> Any:
    if isinstance(states, str):
        if states != "privileged":
            raise ParameterError(f"states: expected 'privileged' or an estimator, found {states!r}")
        return None
    if not isinstance(states, Estimator):
        raise TypeError(
            "states: expected 'privileged' or an estimator with filter(y, u), "
            f"found {type(states).__name__}"
        )
    return states


def _as_vector_env(
    env: Any, episodes: int, steps: int | None, env_kwargs: Mapping[str, Any] | None
) -> tuple[gym.vector.VectorEnv, bool]:
    """(vector env, whether it was made here and is to be closed here)."""
    if isinstance(env, str):
        kwargs = dict(env_kwargs or {})
        if steps is not None:
            kwargs["max_episode_steps"] = steps
        return gym.make_vec(env, num_envs=episodes, **kwargs), True
    if isinstance(env, gym.vector.VectorEnv):
        envs = env
    elif isinstance(env, gym.Env):
        # the lambda hands over the user's env itself; the wrapper is never closed here
        envs = gym.vector.SyncVectorEnv([lambda: env])
    else:
        raise TypeError(
            f"env: expected an env id, a gymnasium.Env or a VectorEnv, found {type(env).__name__}"
        )
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    if mode == gym.vector.AutoresetMode.SAME_STEP:
        raise ValueError(
            "env: the SAME_STEP autoreset mode hides the terminal states; "
            "use a vector env with AutoresetMode.NEXT_STEP"
        )
    return envs, False


def _time_limit(env: Any, envs: gym.vector.VectorEnv) -> int:
    for obj in (env, envs):
        limit = getattr(obj, "max_episode_steps", None)
        spec = getattr(obj, "spec", None)
        if limit is None and spec is not None:
            limit = spec.max_episode_steps
        if limit is not None:
            return check_positive_int(limit, "steps")
    raise ParameterError("steps: the env has no time limit; pass steps")


def _label(roll: Rollout, keep: int, estimator: Any) -> Transitions:
    """The transitions of the first ``keep`` copies of a rollout, with their state labels."""
    run = roll.running[:keep]
    u = roll.u[:keep]
    if estimator is None:
        if roll.x is None:
            raise ValueError(
                "states: the env reports no info['state']; pass an estimator as states to label "
                "the transitions with estimated states"
            )
        xs = roll.x[:keep]
    else:
        T = u.shape[1]
        observed = np.concatenate([np.ones((keep, 1), dtype=bool), run], 1)  # y_t in the episode
        y = np.where(observed[..., None], roll.y[:keep], np.nan)
        u_f = np.concatenate([u, np.zeros((keep, 1, u.shape[2]))], 1)
        with torch.no_grad():
            mean = estimator.filter(torch.as_tensor(y), torch.as_tensor(u_f)).mean
        xs = mean.detach().to(device="cpu", dtype=torch.float64).numpy()
        if roll.x is not None and xs.shape[2] != roll.x.shape[2]:
            raise DimensionError(
                f"states: the estimator estimates {xs.shape[2]} states, the env has "
                f"{roll.x.shape[2]}"
            )
        assert xs.shape[1] == T + 1
    return Transitions(
        torch.as_tensor(xs[:, :-1][run]),
        torch.as_tensor(u[run]),
        torch.as_tensor(xs[:, 1:][run]),
    )


# -- fitting ---------------------------------------------------------------------------------------
def fit_residual(
    model: ResidualModel,
    data: Transitions,
    *,
    val: Transitions | None = None,
    val_fraction: float = 0.1,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    grad_clip: float | None = 10.0,
    weighting: str = "std",
    lr_schedule: str = "cosine",
    val_every: int = 100,
    patience: int | None = None,
    normalize: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Fit the residual g_θ of ``model`` to one-step transitions, keeping the best weights.

    Minimises the weighted one-step prediction error of f̂ = f_nominal + g_θ,

    - ``weighting="std"`` (default): mean over rows and state dimensions of
      ((x_next − f̂(x, u))_d / s_d)², s_d the standard deviation of the nominal model's error
      x_next − f_nominal(x, u) in dimension d on the training data (floored at 1e-6 max_d s_d).
      The untrained model scores 1 + (mean error / s_d)² averaged over d, and a residual that
      explains a fraction ρ of the nominal error's variance about 1 − ρ;
    - ``weighting="process_cov"``: (x_next − f̂)ᵀ Σ⁻¹ (x_next − f̂) / n_x with Σ the nominal
      process covariance (the Gaussian likelihood; Σ must be positive definite),

    with Adam on minibatches (drawn with replacement), gradient clipping, a cosine-annealed (or
    constant) learning rate, and validation every ``val_every`` steps; the model is left with the
    weights of the best validation loss. f_nominal is evaluated once per row beforehand.

    Parameters
    ----------
    model : ResidualModel
        Trained in place.
    data : Transitions
        Training transitions, at least 2 rows after the validation split.
    val : Transitions, optional
        Validation transitions. Default: a random ``val_fraction`` of ``data`` (seeded by
        ``seed``) is held out; with ``val_fraction=0`` the training data is used.
    steps, batch_size, lr, weight_decay : optimisation settings (Adam).
    grad_clip : float or None
        Clip the gradient's global norm.
    weighting : {"std", "process_cov"}
    lr_schedule : {"cosine", "constant"}
    val_every : int
    patience : int, optional
        Stop after this many validations without improvement.
    normalize : bool
        First call ``model.set_normalization`` on the training data (input statistics and
        output scale; it preserves the function, so it is safe on a trained model).
    seed : int
        Seeds the validation split and the minibatch order (the weights' initialisation is the
        model's ``generator``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    FitResult
        As :func:`~kalmannet_ctrl.training.fit`: losses in the units above. A non-finite loss or
        gradient stops training, restores the best weights and is reported
        (``nonfinite_step`` and a ``RuntimeWarning``).

    Shapes
    ------
    data, val : x (N, n_x), u (N, n_u), x_next (N, n_x)
    """
    if not isinstance(model, ResidualModel):
        raise TypeError(f"model: expected a ResidualModel, found {type(model).__name__}")
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    val_every = check_positive_int(val_every, "val_every")
    if patience is not None:
        patience = check_positive_int(patience, "patience")
    lr = check_positive_float(lr, "lr")
    weight_decay = check_nonnegative_float(weight_decay, "weight_decay")
    if grad_clip is not None:
        grad_clip = check_positive_float(grad_clip, "grad_clip")
    if weighting not in _WEIGHTINGS:
        raise ParameterError(f"weighting: expected one of {_WEIGHTINGS}, found {weighting!r}")
    if lr_schedule not in _SCHEDULES:
        raise ParameterError(f"lr_schedule: expected one of {_SCHEDULES}, found {lr_schedule!r}")
    val_fraction = check_nonnegative_float(val_fraction, "val_fraction")
    if val_fraction >= 1.0:
        raise ParameterError(f"val_fraction: expected a number in [0, 1), found {val_fraction}")
    train = _check_transitions(data, "data", model)
    if val is not None:
        val = _check_transitions(val, "val", model)
    elif val_fraction > 0:
        N = train.x.shape[0]
        n_val = max(1, round(val_fraction * N))
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(int(seed)))
        train, val = train.subset(perm[n_val:]), train.subset(perm[:n_val])
    if train.x.shape[0] < 2:
        raise DimensionError(
            f"data: expected at least 2 training transitions, found {train.x.shape[0]}"
        )
    if val is None:
        val = train
    if normalize:
        model.set_normalization(*train)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model: has no trainable parameters")

    nominal = model.nominal
    with torch.no_grad():
        r_train = train.x_next - nominal.f(train.x, train.u)
        r_val = val.x_next - nominal.f(val.x, val.u)
    whiten = _whitening(weighting, r_train, nominal)

    def loss_on(x: Tensor, u: Tensor, r: Tensor) -> Tensor:
        return whiten(r - model.residual(x, u)).square().mean()

    def train_step(idx: Tensor, opt: torch.optim.Optimizer) -> float:
        opt.zero_grad(set_to_none=True)
        return _step(loss_on(train.x[idx], train.u[idx], r_train[idx]), opt, grad_clip)

    def validate() -> float:
        with torch.no_grad():
            return float(loss_on(val.x, val.u, r_val))

    model.train()
    result = _optimize(
        model,
        params,
        train_step,
        validate,
        n_train=train.x.shape[0],
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        val_every=val_every,
        patience=patience,
        seed=seed,
        progress=progress,
        lr_schedule=lr_schedule,
        name="fit_residual",
    )
    model.eval()
    return result


def one_step_mse(model: SystemModel, data: Transitions) -> Tensor:
    """Mean squared one-step prediction error of ``model`` per state dimension.

    ``mean over rows of (x_next − model.f(x, u))²``; any SystemModel (e.g. the nominal model,
    the true model and a :class:`~kalmannet_ctrl.models.ResidualModel`, for comparison).

    Shapes
    ------
    data : x (N, n_x), u (N, n_u), x_next (N, n_x) -> (n_x,)
    """
    if not isinstance(model, SystemModel):
        raise TypeError(f"model: expected a SystemModel, found {type(model).__name__}")
    data = _check_transitions(data, "data", model)
    with torch.no_grad():
        return (data.x_next - model.f(data.x, data.u)).square().mean(0)


def _whitening(weighting: str, r: Tensor, nominal: SystemModel) -> Any:
    if weighting == "std":
        scale = _residual_scale(r)
        return lambda e: e / scale
    cov = nominal.process_cov
    L, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        raise NotPositiveDefiniteError(
            "weighting: 'process_cov' needs a positive definite nominal process_cov, found a "
            f"singular one (eigenvalues {torch.linalg.eigvalsh(cov).tolist()}); "
            "use weighting='std'"
        )
    n_x = cov.shape[0]
    return lambda e: torch.linalg.solve_triangular(L, e.mT, upper=False).mT / math.sqrt(n_x)


def _check_transitions(data: Any, name: str, model: SystemModel) -> Transitions:
    """``data`` as a Transitions of finite float64 tensors with the model's dimensions."""
    if not isinstance(data, tuple) or len(data) != 3:
        raise TypeError(
            f"{name}: expected a Transitions (x, u, x_next), found {type(data).__name__}"
        )
    x, u, x_next = data
    dtype, device = model.dtype, model.device
    x = as_tensor(x, f"{name}.x", dtype=dtype, device=device)
    if x.dim() != 2 or x.shape[1] != model.n_x or x.shape[0] < 1:
        raise DimensionError(
            f"{name}.x: expected shape (N, {model.n_x}) with N >= 1, found {tuple(x.shape)}"
        )
    N = x.shape[0]
    if u is None and model.n_u == 0:
        u = x.new_zeros(N, 0)
    u = as_tensor(u, f"{name}.u", dtype=dtype, device=device)
    if tuple(u.shape) != (N, model.n_u):
        raise DimensionError(f"{name}.u: expected shape ({N}, {model.n_u}), found {tuple(u.shape)}")
    x_next = as_tensor(x_next, f"{name}.x_next", dtype=dtype, device=device)
    if tuple(x_next.shape) != (N, model.n_x):
        raise DimensionError(
            f"{name}.x_next: expected shape ({N}, {model.n_x}), found {tuple(x_next.shape)}"
        )
    for label, t in (("x", x), ("u", u), ("x_next", x_next)):
        check_finite(t, f"{name}.{label}")
    return Transitions(x, u, x_next)
