"""Docstring fragments shared by the controllers, filled in by
:func:`kalmannet_ctrl._docstrings.fill` (a placeholder ``%(name)s`` alone on a docstring line)."""

from __future__ import annotations

__all__ = ["BASE_SHAPES", "FEEDBACK_FIELDS", "SCALAR_PLANT"]

#: The Shapes of a controller on :class:`~kalmannet_ctrl.controllers.base.BaseController`, and
#: where its ``predict``, ``step`` and ``estimate`` are documented.
BASE_SHAPES = """
predict: observation (n_y,) or (B, n_y) -> action (n_u,) or (B, n_u);
step: y (B, n_y) -> u (B, n_u) (see :class:`~kalmannet_ctrl.controllers.base.BaseController`
for ``predict``, ``step``, ``estimate`` and their errors)
"""

#: The Attributes entries of the recurrent state of a controller with an estimator in the loop
#: (``estimator_state``, ``u_prev``).
FEEDBACK_FIELDS = """
estimator_state :
    The estimator's state (e.g. a ``GaussianState``) after the last measurement.
u_prev : Tensor, (B, n_u)
    The action returned at the last call (within the input bounds): the input the plant
    received, used by the estimator's next prediction. Zero for rows that start an episode.
"""

#: The set-up of the examples: the scalar unstable plant x_{t+1} = 1.1 x_t + u_t + w_t,
#: y_t = x_t + v_t, as ``m``, and the stage cost x'x + 0.1 u'u, as ``cost``.
SCALAR_PLANT = """
>>> import numpy as np
>>> from kalmannet_ctrl.models import LinearGaussianModel, QuadraticCost
>>> m = LinearGaussianModel(A=[[1.1]], B=[[1.0]], C=[[1.0]], process_cov=[[0.1]],
...                         measurement_cov=[[0.5]])
>>> cost = QuadraticCost(Q=[[1.0]], R=[[0.1]])
"""
