"""Training: datasets from models and environments, one fit loop, checkpoints."""

from .checkpoint import load_checkpoint, save_checkpoint
from .datasets import env_rollouts, split, trajectories
from .fit import FitResult, estimation_loss, fit

__all__ = [
    "FitResult",
    "env_rollouts",
    "estimation_loss",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "split",
    "trajectories",
]
