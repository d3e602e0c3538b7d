"""Gymnasium environments with partially known dynamics (``kalmannet_ctrl.envs``).

The environments themselves are registered under ids ``kalmannet_ctrl/<Name>-v0``; this package
is importable now so that ``import kalmannet_ctrl.envs`` works in every installation.
"""

__all__: list[str] = []
