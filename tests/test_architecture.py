"""The part of the layering (docs/architecture.md) that import-linter cannot see from the
repository root: the lower layers never import the environments (``kalmannet_ctrl.envs``) or
Gymnasium, so models, estimators and controllers see observations, never env classes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER = ("models", "estimators", "controllers")


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the modules a file of ``package`` imports (relative ones resolved)."""
    pkg = package.split(".")
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
    return names


def forbidden(names: set[str]) -> list[str]:
    return sorted(
        m
        for m in names
        if m.split(".")[0] in ("gymnasium", "envs") or m.startswith("kalmannet_ctrl.envs")
    )


@pytest.mark.parametrize("layer", LOWER)
def test_lower_layers_do_not_import_environments(layer: str) -> None:
    offenders = {}
    for path in sorted((ROOT / "kalmannet_ctrl" / layer).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        package = ".".join(parts[:-1])
        found = forbidden(imported_modules(path.read_text(), package))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_scan_catches_imports_of_the_environments() -> None:
    source = (
        "import numpy\nfrom ..envs import core\nimport gymnasium as gym\n"
        "from kalmannet_ctrl.envs.cartpole import CartPoleEnv\nfrom ..models import base\n"
    )
    names = imported_modules(source, "kalmannet_ctrl.controllers")
    assert forbidden(names) == [
        "gymnasium",
        "kalmannet_ctrl.envs",
        "kalmannet_ctrl.envs.cartpole",
        "kalmannet_ctrl.envs.cartpole.CartPoleEnv",
        "kalmannet_ctrl.envs.core",
    ]
    assert "kalmannet_ctrl.models.base" in names


def test_making_an_env_loads_no_layer_above_models() -> None:
    """``gym.make`` of our ids imports kalmannet_ctrl.envs; that must not pull in estimators,
    controllers, training, rl or bench (a fresh interpreter, so nothing is loaded already)."""
    code = (
        "import sys, gymnasium as gym, kalmannet_ctrl.envs\n"
        "gym.make('kalmannet_ctrl/CartPole-v0').reset(seed=0)\n"
        "layers = ('estimators', 'controllers', 'training', 'rl', 'bench', 'cli')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[:2][-1] in layers\n"
        "             and m.startswith('kalmannet_ctrl.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
