"""Model predictive path integral control (MPPI): sampling-based planning for MPC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..._validation import as_tensor, check_positive_float, check_positive_int, shape_str
from ...errors import DimensionError, ParameterError
from ...models.base import SystemModel
from .solver import Plan, PlanRequest, Setup, Solver, finite

if TYPE_CHECKING:
    from .problem import MPC

__all__ = ["MPPI", "MPPISetup"]


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MPPI(Solver):
    """Model predictive path integral control (Williams et al., 2017).

    ``samples`` input sequences are drawn around the mean plan (Gaussian, std ``noise_std``,
    clipped to the bounds; the mean plan itself is one of them), rolled out on the model, and
    averaged with weights exp(−J / ``temperature``); ``iterations`` updates per step. The
    action is the first input of the mean plan (``deterministic=True``) or of one sequence
    drawn with those weights. A global method: it finds e.g. a pendulum's swing-up.

    Parameters
    ----------
    samples : int
        K >= 2 sampled input sequences.
    temperature : float
        λ > 0, in units of the cost J.
    noise_std : float or array-like (n_u,), optional
        Standard deviation of the input perturbations (in the input's units). Default: a
        quarter of the bound width high − low where it is finite, 1 elsewhere.
    iterations : int
        MPPI updates per step (>= 1).
    seed : int, optional
        Seed of a ``torch.Generator`` created for each MPC this solver is bound to (so two
        MPCs built with one solver draw the same, independent streams).
    generator : torch.Generator, optional
        The source of the sampling noise, shared by every MPC this solver is bound to
        (exclusive with ``seed``). Default: torch's global generator.
    rollout_dtype : torch.dtype, optional
        The dtype of the sampled rollouts and their costs (default: the model's).
        ``torch.float32`` halves the arithmetic of MPPI's inner loop (the network layers of a
        :class:`~kalmannet_ctrl.models.ResidualModel` take about half the time); the sample
        weights depend on cost differences far above float32's resolution. The plan and the
        action stay in the model's dtype. The model's ``f`` must compute in that dtype (the
        library's pendulum and cart-pole models and ResidualModel do; a LinearGaussianModel,
        whose matrices are float64, does not), else ParameterError when the MPC is built.

    Raises
    ------
    TypeError
        For settings of the wrong type (a non-integer ``samples``/``iterations``/``seed``, a
        ``generator`` that is not a ``torch.Generator``, a ``rollout_dtype`` that is not a
        floating ``torch.dtype``).
    ParameterError
        If ``samples`` < 2, ``iterations`` < 1, ``temperature`` <= 0 or ``noise_std`` has
        an entry that is not finite and > 0.
    DimensionError
        If ``noise_std`` is neither a scalar nor a vector.
    ValueError
        If both ``seed`` and ``generator`` are given.

    Shapes
    ------
    noise_std : () or (n_u,); per update: samples (B, K, H, n_u), rollouts (B, K, H + 1, n_x)

    Notes
    -----
    A generator is drawn from, so an MPC built with ``seed`` gives the same actions run after
    run only when rebuilt (or its ``setup.generator`` reseeded) for each run.

    Examples
    --------
    >>> import torch
    >>> MPPI(samples=64, seed=0, rollout_dtype=torch.float32)
    MPPI(samples=64, temperature=1.0, noise_std=None, iterations=1, seed=0, generator=None, \
rollout_dtype=torch.float32)
    """

    name: ClassVar[str] = "mppi"
    samples: int = 256
    temperature: float = 1.0
    noise_std: Any = None
    iterations: int = 1
    seed: int | None = None
    generator: torch.Generator | None = None
    rollout_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "samples", check_positive_int(self.samples, "samples", minimum=2))
        put(self, "temperature", check_positive_float(self.temperature, "temperature"))
        put(self, "noise_std", _check_noise_std(self.noise_std))
        put(self, "iterations", check_positive_int(self.iterations, "iterations"))
        if self.seed is not None and self.generator is not None:
            raise ValueError("seed, generator: pass one of them, not both")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(
                f"generator: expected a torch.Generator, found {type(self.generator).__name__}"
            )
        if self.seed is not None:
            if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
                raise TypeError(f"seed: expected an integer, found {type(self.seed).__name__}")
            put(self, "seed", int(self.seed))
        dtype = self.rollout_dtype
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"rollout_dtype: expected a floating torch.dtype, found {dtype!r}")

    def check(self, model: SystemModel, *, cost_state: bool) -> None:
        """The model's ``f`` must compute in ``rollout_dtype`` (when it is given).

        Raises
        ------
        ParameterError
            If ``f`` fails on, or does not return, ``rollout_dtype`` inputs.

        Shapes
        ------
        probes f on x (1, n_x), u (1, n_u) in ``rollout_dtype``
        """
        dtype = self.rollout_dtype
        if dtype is None:
            return
        x = torch.zeros(1, model.n_x, dtype=dtype, device=model.device)
        u = torch.zeros(1, model.n_u, dtype=dtype, device=model.device)
        try:
            with torch.no_grad():
                out_dtype = model.f(x, u).dtype
        except RuntimeError as exc:
            raise ParameterError(
                f"rollout_dtype: the model's f fails on {dtype} inputs ({exc}); use the model's "
                f"dtype {model.dtype}"
            ) from exc
        if out_dtype != dtype:
            raise ParameterError(
                f"rollout_dtype: the model's f returns {out_dtype} for {dtype} inputs (it holds "
                f"{model.dtype} tensors); use the model's dtype"
            )

    def bind(self, problem: MPC) -> MPPISetup:
        """The noise scale and cost weights of ``problem`` in ``rollout_dtype``, and the
        generator (a new one seeded with ``seed``, or ``generator``).

        Raises
        ------
        DimensionError
            If ``noise_std`` is a vector whose length is not the model's n_u.
        ParameterError
            If ``noise_std`` has an entry that is not > 0 in the model's dtype.

        Shapes
        ------
        problem : horizon H, n_x, n_u -> MPPISetup (noise_std (n_u,))
        """
        return MPPISetup(self, problem)


class MPPISetup(Setup):
    """:class:`MPPI` bound to one problem.

    Attributes
    ----------
    rollout_dtype : torch.dtype
        The dtype of the rollouts (the model's unless the solver says otherwise).
    noise_std : Tensor, (n_u,)
        In ``rollout_dtype``.
    generator : torch.Generator or None
        This MPC's noise source (None: torch's global generator).

    Shapes
    ------
    plan: x0 (B, n_x), warm (B, H, n_u) -> plan (B, H, n_u), u (B, n_u)
    """

    solver: MPPI

    def __init__(self, solver: MPPI, problem: MPC) -> None:
        super().__init__(solver, problem)
        to = dict(dtype=problem.dtype, device=problem.device)
        std = _noise_std(solver.noise_std, problem.input_bounds, problem.n_u, to)
        self.rollout_dtype = problem.dtype if solver.rollout_dtype is None else solver.rollout_dtype
        self.weights = problem.weights(self.rollout_dtype)  # cast once, here
        self.noise_std = std.to(self.rollout_dtype)
        if solver.seed is not None:
            self.generator = torch.Generator(device=problem.device).manual_seed(solver.seed)
        else:
            self.generator = solver.generator

    def plan(self, request: PlanRequest) -> Plan:
        """``iterations`` MPPI updates of the mean plan from ``request.warm`` (its
        ``trajectory`` is not used); the action is the mean plan's first input or, with
        ``deterministic=False``, the first input of a sequence drawn with the last update's
        weights.

        Shapes
        ------
        x0 (B, n_x), warm (B, H, n_u) -> plan (B, H, n_u), u (B, n_u)
        """
        problem, solver = self.problem, self.solver
        x0, warm = request.x0, request.warm
        generator = request.generator or self.generator
        B, Hh, m = warm.shape
        K = solver.samples
        dtype, rdtype = problem.dtype, self.rollout_dtype
        mean = problem.clip_plan(warm.to(rdtype))
        x_rep = x0.to(rdtype).unsqueeze(1).expand(B, K, -1).reshape(B * K, -1)
        for _ in range(solver.iterations):
            noise = torch.randn(B, K, Hh, m, dtype=rdtype, device=mean.device, generator=generator)
            noise[:, 0] = 0.0  # the mean plan is one of the samples
            U = problem.clip_plan(torch.addcmul(mean.unsqueeze(1), noise, self.noise_std))
            X = problem.rollout(x_rep, U.view(B * K, Hh, m)).view(B, K, Hh + 1, -1)
            costs = finite(problem.plan_cost(X, U))  # (B, K)
            weights = torch.softmax(-costs / solver.temperature, dim=1)
            mean = torch.einsum("bk,bkhm->bhm", weights, U)
        if request.deterministic:
            u = mean[:, 0]
        else:
            pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
            u = U[torch.arange(B, device=U.device), pick, 0]
        return Plan(mean.to(dtype), u.to(dtype), None, solver.iterations)


def _check_noise_std(noise_std: Any) -> float | tuple[float, ...] | None:
    """``noise_std`` as a float or a tuple of floats, each finite and > 0 (or None)."""
    if noise_std is None:
        return None
    std = as_tensor(noise_std, "noise_std", dtype=torch.float64, device="cpu").detach()
    if std.dim() > 1 or (std.dim() == 1 and std.numel() == 0):
        raise DimensionError(
            f"noise_std: expected a scalar or a vector (n_u,), found {shape_str(tuple(std.shape))}"
        )
    if not bool((torch.isfinite(std) & (std > 0)).all()):
        raise ParameterError(f"noise_std: expected finite values > 0, found {std.tolist()}")
    return float(std) if std.dim() == 0 else tuple(std.tolist())


def _noise_std(
    noise_std: float | tuple[float, ...] | None,
    bounds: tuple[Tensor, Tensor] | None,
    n_u: int,
    to: dict[str, Any],
) -> Tensor:
    """The (n_u,) noise scale in the model's dtype: ``noise_std``, or from the bound widths."""
    if noise_std is None:
        std = torch.ones(n_u, **to)
        if bounds is not None:
            width = bounds[1] - bounds[0]
            std = torch.where(torch.isfinite(width) & (width > 0), 0.25 * width, std)
        return std
    std = as_tensor(noise_std, "noise_std", **to)
    if std.dim() == 0:
        std = std.expand(n_u).clone()
    if std.shape != (n_u,):
        raise DimensionError(
            f"noise_std: expected a scalar or shape ({n_u},), found {shape_str(tuple(std.shape))}"
        )
    if not bool((torch.isfinite(std) & (std > 0)).all()):
        raise ParameterError(f"noise_std: expected finite values > 0, found {std.tolist()}")
    return std
