"""What a comparison's method is: a name, a build function and its settings, and what the
build function gets (:class:`BuildContext`: the scenario, its env, the seed, the cache and the
method's config); the registry of methods by name."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .._io import atomic_write_text
from ..errors import ParameterError
from .cache import ArtifactCache, stable_hash
from .scenario import Scenario

T = TypeVar("T")

__all__ = [
    "FAMILIES",
    "METHODS",
    "TRAIN_SEED",
    "BuildContext",
    "Method",
    "get_method",
    "register_method",
]

#: The config key every method accepts: its training seed (default: the comparison's seed).
TRAIN_SEED = "train_seed"


@dataclass
class BuildContext:
    """What a method's ``build`` gets.

    Attributes
    ----------
    scenario : Scenario
    env : PartiallyKnownEnv
        A single env of the scenario (its ``nominal_model``, ``true_model``, ``cost`` and spaces).
    seed : int
        The training seed: the method config's ``train_seed`` (:data:`TRAIN_SEED`) when it has
        one, else the comparison's seed (which seeds the evaluation episodes either way, so
        that controllers trained with different seeds meet the same episodes).
    cache : ArtifactCache
        Where trained artefacts live (folder per scenario, method, config and seed).
    """

    scenario: Scenario
    env: Any
    seed: int
    cache: ArtifactCache
    train_info: dict[str, Any] = field(default_factory=dict)
    method: Method | None = None

    @property
    def config(self) -> Mapping[str, Any]:
        """The method's settings (empty without a method)."""
        return {} if self.method is None else self.method.config

    def options(
        self,
        *names: str,
        required: tuple[str, ...] = (),
        accepted: tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """The config's entries among ``names`` (keywords of a training function or a solver:
        what the config leaves out takes that function's default, so each default is stated
        once, in its signature).

        Parameters
        ----------
        names : str
            The keys wanted.
        required : tuple of str
            Keys the config must hold.
        accepted : tuple of str, optional
            Every key the method's build reads (default ``names``); any other key is an error,
            so that a misspelt setting is never silently ignored.

        Raises
        ------
        ParameterError
            If the config holds a key outside ``accepted`` or lacks one of ``required``.
        """
        cfg = {k: v for k, v in self.config.items() if k != TRAIN_SEED}
        unknown = sorted(set(cfg) - set(names if accepted is None else accepted))
        if unknown:
            raise ParameterError(
                f"config: method {self.method_name!r} has no settings {unknown}; "
                f"it reads {sorted(names if accepted is None else accepted)}"
            )
        missing = [k for k in required if k not in cfg]
        if missing:
            raise ParameterError(f"config: method {self.method_name!r} needs {missing}")
        return {k: cfg[k] for k in names if k in cfg}

    def train(
        self, trainer: Callable[..., tuple[Any, Mapping[str, Any]]], *args: Any, **kw: Any
    ) -> Any:
        """Run one of the library's trainers on this scenario and record what it used.

        Calls ``trainer(env_id, *args, seed=seed, env_kwargs=..., progress=False, **kw)`` (the
        signature :func:`~kalmannet_ctrl.training.learned_lqg`,
        :func:`~kalmannet_ctrl.training.train_neural_mpc` and :func:`~kalmannet_ctrl.rl.train_rl`
        share), copies its ``env_steps`` and ``train_s`` (and a ``learning_curve``, when it
        returns one) into :attr:`train_info` and returns the trained controller.
        """
        ctrl, info = trainer(
            self.scenario.env_id,
            *args,
            seed=self.seed,
            env_kwargs=self.scenario.make_kwargs(),
            progress=False,
            **kw,
        )
        self.train_info.update(env_steps=int(info["env_steps"]), train_s=float(info["train_s"]))
        if info.get("learning_curve"):
            self.train_info["learning_curve"] = list(info["learning_curve"])
        return ctrl

    @property
    def method_name(self) -> str:
        return "method" if self.method is None else self.method.name

    def cached(
        self,
        build: Callable[[], Any],
        save: Callable[[Any, Path], None],
        load: Callable[[Path], Any],
    ) -> Any:
        """A trained artefact of this method for this scenario, seed and config.

        Loaded from ``cache`` when a readable copy exists (a corrupt one is rebuilt), else
        built with ``build()`` and stored with ``save(obj, folder)``; ``load(folder)`` must raise
        on anything it cannot read. What ``build`` put in ``train_info`` (e.g. ``env_steps``,
        the training data used) is stored beside the artefact and restored with it;
        ``train_info["loaded"]`` tells which happened.
        """
        config = (
            dict(self.config)
            if self.method is None
            else self.method.key_config(self.scenario.env_id)
        )
        parts = (
            self.scenario.key(),
            f"{self.method_name}-{stable_hash(config, 8)}",
            f"seed-{self.seed}",
        )
        info_file = "train_info.json"

        def save_all(obj: Any, folder: Path) -> None:
            save(obj, folder)
            atomic_write_text(folder / info_file, json.dumps(self.train_info, default=str))

        def load_all(folder: Path) -> Any:
            info = json.loads((folder / info_file).read_text())
            if not isinstance(info, dict):
                raise ValueError(f"{info_file}: expected a JSON object")
            obj = load(folder)
            self.train_info.update(info)
            return obj

        obj, loaded = self.cache.load_or_build(parts, build, save_all, load_all)
        self.train_info["loaded"] = loaded
        return obj


#: The spectrum of model-based deep learning (Shlezinger, Eldar & Boyd), from the model to the
#: data: the families a method belongs to.
FAMILIES = ("model-based", "learned optimization", "deep unfolding", "DNN-aided", "data-centric")


@dataclass(frozen=True)
class Method:
    """A named way to build a controller for a scenario.

    Parameters
    ----------
    name : str
        Unique name (used on the command line and in tables).
    build : callable
        ``build(ctx: BuildContext) -> controller``; module-level (picklable).
    description : str
    applies : callable, optional
        ``applies(env) -> bool``: whether the method makes sense for a scenario's env; cells
        where it does not are skipped. Default: always.
    oracle : bool
        Whether the method uses the true model (the reference of the gap to the oracle).
    config : mapping
        Settings that change the result (part of the cache keys). Every method accepts
        ``train_seed`` (an int): the seed of its training, where the comparison's seed would be
        used otherwise; the evaluation episodes keep the comparison's seed.
    family : str
        Where the method sits on the spectrum of model-based deep learning, one of
        :data:`FAMILIES` (the colours of the figures).
    baseline : bool
        Whether it is the model-based method on the nominal model that the gap closed is
        measured from (the scenario's 0 %; its oracle is 100 %).
    measure : {"cost", "mse"}
        What the gap closed compares: the closed-loop cost (control), or the estimation MSE
        in dB (estimation-only methods, whose cost is that of zero input).
    settings : callable, optional
        ``settings(env_id, config) -> JSON-able``: what the method reads from outside its
        config for a scenario's env, e.g. the RL methods' entry of the hyperparameter table;
        module-level (picklable). Part of the cache keys, so that a changed table entry
        retrains the method instead of loading what the old entry trained.
    """

    name: str
    build: Callable[[BuildContext], Any]
    description: str = ""
    applies: Callable[[Any], bool] | None = None
    oracle: bool = False
    config: Mapping[str, Any] = field(default_factory=dict)
    family: str = "model-based"
    baseline: bool = False
    measure: str = "cost"
    settings: Callable[[str, Mapping[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family: expected one of {FAMILIES}, found {self.family!r}")
        if self.measure not in ("cost", "mse"):
            raise ValueError(f"measure: expected 'cost' or 'mse', found {self.measure!r}")
        seed = self.config.get(TRAIN_SEED, 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParameterError(
                f"config: method {self.name!r} has train_seed {seed!r}; expected an integer"
            )

    def train_seed(self, seed: int) -> int:
        """The seed of this method's training in a comparison seeded ``seed``."""
        return int(self.config.get(TRAIN_SEED, seed))

    def key_config(self, env_id: str) -> dict[str, Any]:
        """What the cache keys hold of this method on ``env_id``: its config and, with
        ``settings``, what those read from elsewhere (under ``"settings"``)."""
        config = dict(self.config)
        if self.settings is not None:
            config["settings"] = self.settings(env_id, self.config)
        return config


METHODS: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Add ``method`` to :data:`METHODS` (the names the CLI and :func:`get_method` know)."""
    if not isinstance(method, Method):
        raise TypeError(f"method: expected a Method, found {type(method).__name__}")
    if method.name in METHODS and not overwrite:
        raise ValueError(f"method: a method named {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method called ``name``."""
    return lookup(METHODS, name, "method")


def lookup(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or a ValueError naming the ``what`` and the names there are."""
    try:
        return table[name]
    except KeyError:
        known = sorted(table)
        raise ValueError(f"{what}: unknown {what} {name!r}; expected one of {known}") from None
