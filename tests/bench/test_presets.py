"""Presets: data that name the methods and each learned method's budget per preset."""

from __future__ import annotations

import pytest

from kalmannet_ctrl.bench import DEFAULT_METHODS, METHODS, PRESETS, get_method, get_preset
from kalmannet_ctrl.bench.context import FAMILIES
from kalmannet_ctrl.bench.presets import BUDGETS, DEFAULT_PRESET


def test_full_budgets_are_the_registered_configs():
    for name, budgets in BUDGETS.items():
        method = get_method(name)
        for key, value in budgets["full"].items():
            assert method.config[key] == value, (name, key)
        assert PRESETS["full"].method(name).config == method.config


def test_quick_preset_overrides_only_the_budget_keys():
    quick = get_preset("quick")
    for name in quick.methods:
        method, registered = quick.method(name), get_method(name)
        changed = {k for k in method.config if method.config[k] != registered.config.get(k)}
        assert changed <= set(BUDGETS.get(name, {}).get("quick", {})), name
        assert method.build is registered.build


def test_every_preset_covers_the_spectrum_on_control_scenarios():
    for preset in PRESETS.values():
        families = {get_method(m).family for m in preset.methods if get_method(m).measure == "cost"}
        assert set(FAMILIES) <= families  # deep unfolding included: the unfolded MPC
        assert all(m in METHODS for m in preset.methods)
    assert PRESETS[DEFAULT_PRESET].methods == DEFAULT_METHODS
    assert all(m.family in FAMILIES for m in METHODS.values())


def test_unknown_preset_and_family_are_named():
    with pytest.raises(ValueError, match="'tiny'"):
        get_preset("tiny")
    with pytest.raises(ValueError, match="family"):
        type(get_method("rnn"))("x", get_method("rnn").build, family="deep")


def test_the_command_line_trains_each_method_with_its_presets_budget():
    from kalmannet_ctrl import cli

    parser = cli.build_parser()
    for preset in ("quick", "full"):
        args = parser.parse_args(["compare", "--preset", preset, "--scenarios", "linear"])
        _, methods, chosen = cli._grid(args, parser)
        assert chosen is PRESETS[preset]
        assert [m.name for m in methods] == list(PRESETS[preset].methods)
        for m in methods:
            for key, value in BUDGETS.get(m.name, {}).get(preset, {}).items():
                assert m.config[key] == value
    args = parser.parse_args(["compare", "--methods", "kalmannet-lqg", "sac"])
    _, methods, _ = cli._grid(args, parser)
    assert [m.name for m in methods] == ["kalmannet-lqg", "sac"]
    assert methods[1].config["total_timesteps"] == BUDGETS["sac"]["quick"]["total_timesteps"]


def test_the_tuned_policies_run_in_every_preset_on_kalmannet_lqgs_env_steps():
    for preset in PRESETS.values():
        reference = preset.method("kalmannet-lqg").config
        for name, family in (("cocp", "learned optimization"), ("unfolded-mpc", "deep unfolding")):
            assert name in preset.methods
            config = preset.method(name).config
            assert get_method(name).family == family
            assert name in BUDGETS and preset.name in BUDGETS[name]
            env_steps = config["episodes"] * config["steps"]
            assert env_steps == reference["episodes"] * reference["steps"] == 10_000
    quick, full = PRESETS["quick"].method("cocp").config, PRESETS["full"].method("cocp").config
    assert quick["tune_steps"] < full["tune_steps"]
