"""Search spaces, budgets and settings are checked before any data is read or trial is run."""

from __future__ import annotations

import pytest
from omegaconf import open_dict

from recstack.config import compose, config_dir
from recstack.tuning.budget import format_duration, parse_duration
from recstack.tuning.space import accepted_keys, parse_space
from recstack.tuning.tune import TuneSettings, check_budget, tune


@pytest.mark.parametrize(
    ("text", "seconds"), [("20m", 1200.0), ("90s", 90.0), ("1.5h", 5400.0), ("45", 45.0), (30, 30.0)]
)
def test_parse_duration(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["20x", "m", "-5m", "0s", "", "1h30m"])
def test_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"budget="):
        parse_duration(text)


@pytest.mark.parametrize("model", sorted(p.stem for p in (config_dir() / "tune").glob("*.yaml")))
def test_every_shipped_space_is_valid(model: str) -> None:
    cfg = compose("tune", [f"model={model}"])
    params = parse_space(cfg.tune.space, cfg.model, cfg.get("fit"), source=model)
    assert params and cfg.tune.model == model
    TuneSettings.from_config(cfg)


def test_shipped_spaces_cover_the_main_models() -> None:
    assert {"mf", "lightgcn", "ease", "itemknn"} <= {p.stem for p in (config_dir() / "tune").glob("*.yaml")}


def test_a_budget_below_one_trial_names_the_minimum() -> None:
    settings = TuneSettings.from_config(compose("tune", ["model=mf", "budget=10s"]))
    with pytest.raises(ValueError, match=r"budget=10s is too small for even one mf trial: the minimum is 30s"):
        check_budget(settings)


def test_an_unknown_model_parameter_fails_before_any_data_is_read(tmp_path) -> None:
    cfg = compose("tune", ["model=mf", f"study_root={tmp_path}", "data.source.data_home=/nonexistent"])
    with open_dict(cfg):
        cfg.tune.space["model.dropout"] = {"type": "float", "low": 0.0, "high": 0.5}
    with pytest.raises(
        ValueError, match=r"unknown search parameter 'model.dropout'.*accepted: \[.*'model.reg_weight'.*'fit.lr'"
    ):
        tune(cfg)  # no split given and a data home that does not exist: the space is checked first
    assert not list(tmp_path.iterdir())  # no study was created


def test_training_settings_are_refused_for_a_closed_form_model() -> None:
    cfg = compose("tune", ["model=ease"])
    with pytest.raises(ValueError, match=r"unknown search parameter 'fit.lr'.*closed form.*accepted: \['model.l2'"):
        parse_space({"fit.lr": {"type": "float", "low": 1e-4, "high": 1e-2}}, cfg.model, cfg.fit, source="ease")
    assert "model.l2" in accepted_keys(cfg.model, cfg.fit) and "model.n_items" not in accepted_keys(cfg.model, cfg.fit)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "float", "low": 1.0}, "numeric `low` and `high`"),
        ({"type": "float", "low": 2.0, "high": 1.0}, "low < high"),
        ({"type": "float", "low": 0.0, "high": 1.0, "log": True}, "log scale needs low > 0"),
        ({"type": "int", "low": 1.5, "high": 4}, "whole `low` and `high`"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "uniform", "low": 1, "high": 2}, "expected {type: float|int|categorical"),
        ({"type": "float", "low": 1, "high": 2, "lo": 3}, r"unknown field\(s\) \['lo'\]"),
    ],
)
def test_bad_distributions_are_refused(spec: dict, message: str) -> None:
    cfg = compose("tune", ["model=ease"])
    with pytest.raises(ValueError, match=message):
        parse_space({"model.l2": spec}, cfg.model, cfg.fit, source="ease")
