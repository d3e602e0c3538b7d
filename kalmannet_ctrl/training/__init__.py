"""Training: datasets from models and environments, one fit loop, checkpoints, closed-loop
training of estimators and policies."""

from .checkpoint import load_checkpoint, save_checkpoint
from .closed_loop import closed_loop_cost, control_weight, fit_closed_loop
from .datasets import env_rollouts, split, trajectories
from .fit import FitResult, estimation_loss, fit
from .lqg_pipeline import learned_lqg
from .neural_mpc import prediction_error_cov, train_neural_mpc
from .policy_pipeline import tune_policy_on_env
from .residual import Transitions, collect_transitions, fit_residual, one_step_mse
from .tune_policy import tune_policy

__all__ = [
    "FitResult",
    "Transitions",
    "closed_loop_cost",
    "collect_transitions",
    "control_weight",
    "env_rollouts",
    "estimation_loss",
    "fit",
    "fit_closed_loop",
    "fit_residual",
    "learned_lqg",
    "load_checkpoint",
    "one_step_mse",
    "prediction_error_cov",
    "save_checkpoint",
    "split",
    "train_neural_mpc",
    "trajectories",
    "tune_policy",
    "tune_policy_on_env",
]
