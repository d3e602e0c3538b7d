"""The compare runner: measurements against a hand-written loop, seeding, caching, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kalmannet_ctrl import cli
from kalmannet_ctrl.bench import (
    DEFAULT_METHODS,
    ArtifactCache,
    LocalExecutor,
    Method,
    Results,
    Scenario,
    compare,
    get_method,
)
from kalmannet_ctrl.bench.cache import stable_hash

LINEAR = Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=40)
CARTPOLE_LARGE = Scenario(
    "kalmannet_ctrl/CartPole-v0",
    mismatch={"pole_length": 0.45, "pole_mass": 2.0, "cart_mass": 0.6, "friction": 1.0},
    name="cartpole-large",
)
LQG_METHODS = [get_method("lqg-oracle"), get_method("lqg-nominal")]


class CountingExecutor:
    """Serial executor that records how many cells it was asked to run."""

    def __init__(self) -> None:
        self.ran = 0

    def map(self, fn, tasks):
        for i, task in enumerate(tasks):
            self.ran += 1
            yield i, fn(task)


def hand_loop(scenario: Scenario, method: Method, episodes: int, seed: int):
    """The measurements written out independently: one episode per copy of the vector env."""
    from kalmannet_ctrl.bench import BuildContext

    env = scenario.make()
    controller = method.build(BuildContext(scenario, env, seed, ArtifactCache(None)))
    envs = scenario.make_vec(episodes)
    obs, info = envs.reset(seed=seed)
    T = scenario.steps
    costs, alive, failed = np.zeros(episodes), np.ones(episodes, bool), np.zeros(episodes, bool)
    sq, n = 0.0, 0
    state, start = None, np.ones(episodes, bool)
    for _ in range(T):
        action, state = controller.predict(obs, state, start)
        est = controller.estimate(state).numpy()
        sq += float(((est - info["state"]) ** 2).mean(1)[alive].sum())
        n += int(alive.sum())
        obs, reward, terminated, truncated, info = envs.step(action)
        costs[alive] -= reward[alive]
        failed |= terminated & alive
        alive &= ~(terminated | truncated)
        start = np.zeros(episodes, bool)
    return costs / T, 1 - failed.mean(), 10 * math.log10(sq / n)


@pytest.mark.parametrize("scenario", [LINEAR, CARTPOLE_LARGE], ids=["linear", "cartpole-large"])
def test_cells_match_a_hand_written_loop(scenario: Scenario) -> None:
    results = compare(
        [scenario], LQG_METHODS, episodes=12, seed=5, executor=LocalExecutor(1), progress=False
    )
    for method in LQG_METHODS:
        cell = results.get(scenario.label, method.name)
        per_episode, success, mse_db = hand_loop(scenario, method, 12, 5)
        assert cell.cost == pytest.approx(per_episode.mean(), rel=1e-12)
        assert cell.cost_ci95 == pytest.approx(
            1.96 * per_episode.std(ddof=1) / math.sqrt(12), rel=1e-9
        )
        assert cell.success_rate == pytest.approx(success)
        assert cell.mse_db == pytest.approx(mse_db, rel=1e-9)
        assert cell.episodes == 12 and cell.steps == scenario.steps
    # the large mismatch makes nominal LQG fail sometimes and the gap is relative to the oracle
    oracle, nominal = (results.get(scenario.label, m.name) for m in LQG_METHODS)
    assert oracle.gap_pct == 0.0
    assert nominal.gap_pct == pytest.approx(100 * (nominal.cost - oracle.cost) / oracle.cost)
    if scenario is CARTPOLE_LARGE:
        assert nominal.success_rate < 1.0 and oracle.success_rate == 1.0


def test_same_seed_same_numbers_and_pool_equals_serial() -> None:
    kwargs = dict(episodes=6, progress=False)
    a = compare([LINEAR], LQG_METHODS, seed=1, executor=LocalExecutor(1), **kwargs)
    b = compare([LINEAR], LQG_METHODS, seed=1, executor=LocalExecutor(2), **kwargs)
    c = compare([LINEAR], LQG_METHODS, seed=2, executor=LocalExecutor(1), **kwargs)
    for x, y in zip(a, b, strict=True):
        assert (x.method, x.cost, x.mse_db, x.mse_db_per_step) == (
            y.method,
            y.cost,
            y.mse_db,
            y.mse_db_per_step,
        )
    assert a.cells[0].cost != c.cells[0].cost


def test_methods_that_do_not_apply_are_skipped() -> None:
    lorenz = Scenario("kalmannet_ctrl/Lorenz-v0", max_steps=20)
    methods = [*LQG_METHODS, get_method("ekf-oracle"), get_method("ekf-nominal")]
    results = compare(
        [lorenz, LINEAR], methods, episodes=3, executor=LocalExecutor(1), progress=False
    )
    by_scenario = {s: [c.method for c in results if c.scenario == s] for s in results.scenarios()}
    assert by_scenario[lorenz.label] == ["ekf-oracle", "ekf-nominal"]
    assert by_scenario[LINEAR.label] == ["lqg-oracle", "lqg-nominal"]
    ekf = results.get(lorenz.label, "ekf-nominal")
    assert (
        len(ekf.mse_db_per_step) == 20
        and ekf.mse_db > results.get(lorenz.label, "ekf-oracle").mse_db
    )


def test_resume_and_corrupt_cells_are_recomputed(tmp_path: Path) -> None:
    ex = CountingExecutor()
    first = compare(
        [LINEAR], LQG_METHODS, episodes=4, seed=3, executor=ex, output_dir=tmp_path, progress=False
    )
    assert ex.ran == 2
    cells = sorted((tmp_path / "cells").glob("*.json"))
    assert len(cells) == 2
    # a second run finds every cell
    ex = CountingExecutor()
    again = compare(
        [LINEAR], LQG_METHODS, episodes=4, seed=3, executor=ex, output_dir=tmp_path, progress=False
    )
    assert ex.ran == 0
    assert [c.cost for c in again] == [c.cost for c in first]
    # an interrupted run (one cell missing), a truncated entry and a foreign entry
    cells[0].unlink()
    ex = CountingExecutor()
    compare(
        [LINEAR], LQG_METHODS, episodes=4, seed=3, executor=ex, output_dir=tmp_path, progress=False
    )
    assert ex.ran == 1
    cells[0].write_text(cells[0].read_text()[:50])
    other = json.loads(cells[1].read_text())
    other["key"] = "something-else"
    cells[1].write_text(json.dumps(other))
    ex = CountingExecutor()
    rebuilt = compare(
        [LINEAR], LQG_METHODS, episodes=4, seed=3, executor=ex, output_dir=tmp_path, progress=False
    )
    assert ex.ran == 2
    assert [c.cost for c in rebuilt] == [c.cost for c in first]  # never poisoned


def test_artifact_cache_rebuilds_corrupt_entries(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path)
    built = []

    def build():
        built.append(1)
        return {"w": torch.arange(3.0)}

    def save(obj, folder):
        torch.save(obj, folder / "weights.pt")

    def load(folder):
        return torch.load(folder / "weights.pt", weights_only=True)

    obj, loaded = cache.load_or_build(("s", "m"), build, save, load)
    assert not loaded and len(built) == 1
    obj2, loaded = cache.load_or_build(("s", "m"), build, save, load)
    assert loaded and len(built) == 1 and torch.equal(obj2["w"], obj["w"])
    path = tmp_path / "s" / "m" / "weights.pt"
    path.write_bytes(path.read_bytes()[:20])  # truncated
    obj3, loaded = cache.load_or_build(("s", "m"), build, save, load)
    assert not loaded and len(built) == 2 and torch.equal(obj3["w"], obj["w"])
    assert ArtifactCache(None).load_or_build(("a",), build, save, load)[1] is False


def test_results_round_trip(tmp_path: Path) -> None:
    results = compare([LINEAR], LQG_METHODS, episodes=3, executor=LocalExecutor(1), progress=False)
    results.to_json(tmp_path / "r.json")
    back = Results.from_json(tmp_path / "r.json")
    assert [c.to_dict() for c in back] == [c.to_dict() for c in results]
    csv_text = results.to_csv(tmp_path / "r.csv")
    assert csv_text.splitlines()[0].startswith("scenario,env_id,method")
    assert len(csv_text.splitlines()) == 3
    assert "| LinearSystem" in results.to_markdown() or LINEAR.label in results.to_markdown()
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a results file"):
        Results.from_json(tmp_path / "bad.json")


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="env_id: unknown environment"):
        Scenario("kalmannet_ctrl/Nope-v0")
    with pytest.raises(ValueError, match="mismatch"):
        Scenario("kalmannet_ctrl/LinearSystem-v0", mismatch={"nope": 1.0})
    with pytest.raises(ValueError, match="method: unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(ValueError, match="scenarios: expected at least one"):
        compare([], LQG_METHODS)
    with pytest.raises(TypeError, match="methods: expected Method objects"):
        compare([LINEAR], ["lqg-oracle"])
    with pytest.raises(ValueError, match="episodes"):
        compare([LINEAR], LQG_METHODS, episodes=1)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="output_dir: cannot write"):
        compare([LINEAR], LQG_METHODS, episodes=2, output_dir=blocker / "out", progress=False)


def test_stable_hash_is_stable() -> None:
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    assert LINEAR.key() == Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=40).key()
    assert LINEAR.key() != Scenario("kalmannet_ctrl/LinearSystem-v0", max_steps=41).key()


# -- the command line ------------------------------------------------------------------------------
#: The default methods with the learned-estimator LQG variants not tuned on the closed-loop cost
#: and without the RL policy and the tuned policies (their training takes minutes; the CLI paths
#: are the same, and RL and the tuned policies have their own tests in tests/rl and
#: tests/bench/test_control_methods.py).
QUICK_METHODS = [
    "kalmannet-lqg-state" if m == "kalmannet-lqg" else m
    for m in DEFAULT_METHODS
    if m not in ("learned-noise-lqg", "ppo", "cocp", "unfolded-mpc")
] + ["learned-noise-lqg-state"]


def test_cli_compare_writes_results_and_resumes(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--scenarios", "linear", "--episodes", "3", "--output", str(tmp_path)]
    argv += ["--no-progress", "--no-plots", "--workers", "1", "--seed", "4"]
    argv += ["--methods", *QUICK_METHODS]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "lqg-oracle (oracle)" in out and "lqg-nominal" in out
    for name in ("results.md", "results.csv", "results.json"):
        assert (tmp_path / name).stat().st_size > 0
    first = (tmp_path / "results.csv").read_text()
    assert cli.main(argv) == 0  # resumed from the cells: same numbers
    a = [r.split(",")[5] for r in first.splitlines()[1:]]
    b = [r.split(",")[5] for r in (tmp_path / "results.csv").read_text().splitlines()[1:]]
    assert a == b


def test_cli_sweep(tmp_path: Path, capsys) -> None:
    argv = ["compare", "--scenarios", "linear", "--methods", "lqg-nominal", "--episodes", "2"]
    argv += [
        "--sweep",
        "rotation_A_deg=0,1",
        "--output",
        str(tmp_path),
        "--no-progress",
        "--no-plots",
    ]
    argv += ["--workers", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "rotation_A_deg=0" in out and "rotation_A_deg=1" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "--scenarios", "nope"], "unknown scenario 'nope'"),
        (["compare", "--methods", "nope"], "unknown method 'nope'"),
        (["compare", "--sweep", "rotation_A_deg"], "--sweep: expected KEY=V1,V2"),
        (["compare", "--sweep", "nope=1"], "--sweep"),
        (["compare", "--episodes", "0"], "expected a positive integer"),
        (["compare", "--preset", "tiny"], "unknown preset 'tiny'"),
        (["compare", "--executor", "dask"], "invalid choice"),
    ],
)
def test_cli_argument_errors(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--no-progress"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["compare", "--scenarios", "linear", "--episodes", "2", "--output", str(blocker / "x")]
    assert cli.main([*argv, "--no-progress", "--no-plots"]) == 1
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "train", "list", "demo"])
def test_cli_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: kalmannet-ctrl {command}" in capsys.readouterr().out


def test_cli_list_and_train(tmp_path: Path, capsys) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "kalmannet_ctrl/CartPole-v1" in out and "* lqg-oracle" in out and "cartpole-large" in out
    assert "presets" in out and "quick:" in out and "full:" in out and "total_timesteps=" in out
    # one method per kind (model-based control, model-based estimation, a trained estimator:
    # the GRU, the cheapest to train); the CLI's builds of the others are in the compare test
    argv = ["train", "--scenarios", "linear", "lorenz", "--output", str(tmp_path), "--no-progress"]
    assert cli.main([*argv, "--methods", "lqg-oracle", "ekf-nominal", "rnn"]) == 0
    out = capsys.readouterr().out
    assert "LinearSystem / lqg-oracle" in out and "Lorenz (estimation) / ekf-nominal" in out
    assert "Lorenz (estimation) / rnn" in out
    assert "Lorenz (estimation) / lqg-oracle" not in out and "LinearSystem / rnn" not in out
    assert list((tmp_path / "artifacts").rglob("estimator.pt"))  # the GRU, trained and saved


def _fit_noise(ctx):
    """A small trainable method: estimate the measurement noise variance from a rollout."""

    def train():
        env = ctx.env
        ctx.train_info["env_steps"] = 200
        env.reset(seed=ctx.seed)
        ys = [env.step(np.zeros(env.action_space.shape, np.float32))[0] for _ in range(200)]
        return {"var": torch.tensor(float(np.var(ys)))}

    def save(obj, folder):
        torch.save(obj, folder / "fit.pt")

    def load(folder):
        return torch.load(folder / "fit.pt", weights_only=True)

    fit = ctx.cached(train, save, load)
    assert float(fit["var"]) > 0
    return get_method("lqg-nominal").build(ctx)


FITTED = Method("fitted-test", _fit_noise, "test method with a cached artefact", config={"n": 200})


def test_trained_artefacts_are_cached_per_scenario_method_config_and_seed(tmp_path: Path) -> None:
    compare(
        [LINEAR],
        [FITTED],
        episodes=2,
        seed=0,
        executor=LocalExecutor(1),
        output_dir=tmp_path,
        progress=False,
    )
    files = sorted((tmp_path / "artifacts").rglob("fit.pt"))
    assert len(files) == 1
    # the cell is forgotten: the artefact is loaded (not rewritten), with its training record
    stamp = files[0].stat().st_mtime_ns
    for cell in (tmp_path / "cells").glob("*.json"):
        cell.unlink()
    again = compare(
        [LINEAR],
        [FITTED],
        episodes=2,
        seed=0,
        executor=LocalExecutor(1),
        output_dir=tmp_path,
        progress=False,
    )
    assert again.cells[0].train_env_steps == 200
    assert files[0].stat().st_mtime_ns == stamp
    assert files[0].parent.name == "seed-0" and files[0].parent.parent.name.startswith(
        "fitted-test-"
    )
    assert files[0].parent.parent.parent.name == LINEAR.key()
    first = files[0].read_bytes()
    # a new seed trains again; the cells of seed 0 are found, its artefact is reused by train
    compare(
        [LINEAR],
        [FITTED],
        episodes=2,
        seed=1,
        executor=LocalExecutor(1),
        output_dir=tmp_path,
        progress=False,
    )
    assert len(sorted((tmp_path / "artifacts").rglob("fit.pt"))) == 2
    files[0].write_bytes(first[:10])  # corrupt: rebuilt when needed
    for cell in (tmp_path / "cells").glob("*.json"):
        cell.unlink()
    results = compare(
        [LINEAR],
        [FITTED],
        episodes=2,
        seed=0,
        executor=LocalExecutor(1),
        output_dir=tmp_path,
        progress=False,
    )
    assert (
        results.cells[0].train_env_steps == 200
    )  # trained again, not loaded from the corrupt copy
    assert torch.load(files[0], weights_only=True)["var"] > 0


@pytest.mark.slow
def test_learned_estimators_train_cache_and_beat_the_nominal_filter(tmp_path: Path) -> None:
    """The learned methods train on zero-input rollouts (small budgets here) and beat the
    nominal EKF's MSE on Lorenz by a wide margin; a second run loads them from the cache."""
    import dataclasses

    lorenz = Scenario("kalmannet_ctrl/Lorenz-v0", max_steps=100, name="lorenz")
    small = {"episodes": 40, "fit_steps": 30}
    methods = [get_method("ekf-nominal")] + [
        dataclasses.replace(get_method(n), config={**get_method(n).config, **small})
        for n in ("learned-noise", "kalmannet")
    ]
    run = dict(episodes=20, executor=LocalExecutor(1), progress=False, output_dir=tmp_path)
    results = compare([lorenz], methods, **run)
    nominal = results.get("lorenz", "ekf-nominal").mse_db
    for name in ("learned-noise", "kalmannet"):
        cell = results.get("lorenz", name)
        assert cell.mse_db < nominal - 3.0, (name, cell.mse_db, nominal)
        assert cell.train_env_steps == 40 * 100
    for cell in (tmp_path / "cells").glob("*.json"):
        cell.unlink()
    again = compare([lorenz], methods, **run)
    for name in ("learned-noise", "kalmannet"):
        assert again.get("lorenz", name).mse_db == results.get("lorenz", name).mse_db
        assert again.get("lorenz", name).build_s < results.get("lorenz", name).build_s


class _ZeroTorque:
    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.zeros((len(observation), 1), dtype=np.float32), None


ZERO_TORQUE = Method("zero-torque-test", lambda ctx: _ZeroTorque(), "no input")


def test_success_is_the_envs_criterion_not_only_the_absence_of_failure() -> None:
    """A hanging pendulum never fails (it cannot) but never succeeds (it is never swung up)."""
    pendulum = Scenario("kalmannet_ctrl/Pendulum-v0", max_steps=120)
    results = compare(
        [pendulum, LINEAR],
        [ZERO_TORQUE],
        episodes=4,
        seed=0,
        executor=LocalExecutor(1),
        progress=False,
    )
    assert results.get(pendulum.label, ZERO_TORQUE.name).success_rate == 0.0
    assert results.get(LINEAR.label, ZERO_TORQUE.name).success_rate == 1.0


#: What the settings of the test method below read: a table outside its config.
_TABLE = {"LinearSystem": {"n": 200}}


def _table_settings(env_id: str, config) -> dict:
    return dict(_TABLE["LinearSystem"])


def test_methods_settings_are_part_of_the_cache_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A method's ``settings`` (what it reads outside its config, e.g. an RL method's
    hyperparameter entry) key its cells and artefacts: a changed entry trains again, an
    unchanged one is loaded; methods without settings keep the keys of their config alone."""
    from kalmannet_ctrl.bench.runner import CellTask
    from kalmannet_ctrl.rl.hyperparams import HYPERPARAMS

    method = Method("fitted-table", _fit_noise, "test", config={"n": 200}, settings=_table_settings)

    def run() -> list[Path]:
        compare(
            [LINEAR],
            [method],
            episodes=2,
            seed=0,
            executor=LocalExecutor(1),
            output_dir=tmp_path,
            progress=False,
        )
        return sorted((tmp_path / "artifacts").rglob("fit.pt"))

    first = run()
    assert len(first) == 1 and len(list((tmp_path / "cells").glob("*.json"))) == 1
    assert run() == first and len(list((tmp_path / "cells").glob("*.json"))) == 1  # cached
    monkeypatch.setitem(_TABLE, "LinearSystem", {"n": 300})
    second = run()
    assert len(second) == 2 and len(list((tmp_path / "cells").glob("*.json"))) == 2
    # the registered RL methods read the hyperparameter table so
    ppo = get_method("ppo")
    key = CellTask(LINEAR, ppo, 2, 0, None).key()
    entry = dict(HYPERPARAMS[("LinearSystem", "ppo")], gamma=0.5)
    monkeypatch.setitem(HYPERPARAMS, ("LinearSystem", "ppo"), entry)
    assert CellTask(LINEAR, ppo, 2, 0, None).key() != key
    assert ppo.key_config(LINEAR.env_id)["settings"]["gamma"] == 0.5
    # without settings: the config alone (the keys of caches written before settings existed)
    lqg = get_method("lqg-nominal")
    assert lqg.settings is None and lqg.key_config(LINEAR.env_id) == dict(lqg.config)
