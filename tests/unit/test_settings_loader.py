"""toolkit.settings: the one environment-settings reader of the engine and the adapters."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from engine.settings import ENVIRONMENT, ConfigError, Settings, load_settings
from toolkit.settings import (
    EnvironmentSettings,
    SettingsError,
    boolean,
    choice,
    custom,
    integer,
    number,
    optional,
    path,
    required,
    text,
)


def _window(raw: str) -> tuple[int, int]:
    start, separator, end = raw.partition("-")
    if not separator:
        raise ValueError("not START-END")
    return int(start), int(end)


EXAMPLE = EnvironmentSettings(
    "EXAMPLE_",
    {
        "name": text(),
        "count": integer(),
        "ratio": number(),
        "enabled": boolean(),
        "mode": choice("fast", "slow"),
        "cap": optional(number()),
        "home": path(),
        "window": custom(_window, "START-END"),
        "token": required(text(), "the account's token"),
    },
    names={"token": "EXAMPLE_TOKEN_SECRET"},
)


def test_every_type_is_read_from_its_prefixed_variable() -> None:
    values = EXAMPLE.read(
        {
            "EXAMPLE_NAME": "north",
            "EXAMPLE_COUNT": "12",
            "EXAMPLE_RATIO": "0.25",
            "EXAMPLE_ENABLED": "Yes",
            "EXAMPLE_MODE": "SLOW",
            "EXAMPLE_CAP": "off",
            "EXAMPLE_HOME": "~/surge",
            "EXAMPLE_WINDOW": "5-9",
            "EXAMPLE_TOKEN_SECRET": "t0k",
            "OTHER_COUNT": "not mine",
        }
    )

    assert values == {
        "name": "north",
        "count": 12,
        "ratio": 0.25,
        "enabled": True,
        "mode": "slow",
        "cap": None,
        "home": Path("~/surge").expanduser(),
        "window": (5, 9),
        "token": "t0k",
    }


def test_unset_and_blank_variables_are_left_to_the_defaults() -> None:
    assert EXAMPLE.read({"EXAMPLE_TOKEN_SECRET": " t ", "EXAMPLE_COUNT": "", "EXAMPLE_RATIO": "   "}) == {"token": "t"}


def test_variable_names_follow_the_prefix_unless_named() -> None:
    assert EXAMPLE.name("count") == "EXAMPLE_COUNT"
    assert EXAMPLE.variables["token"] == "EXAMPLE_TOKEN_SECRET"
    assert set(EXAMPLE.variables) == set(EXAMPLE.readers)


@pytest.mark.parametrize(
    ("variable", "raw", "message"),
    [
        ("EXAMPLE_COUNT", "many", "EXAMPLE_COUNT must be an integer, got 'many'"),
        ("EXAMPLE_COUNT", "2.5", "EXAMPLE_COUNT must be an integer, got '2.5'"),
        ("EXAMPLE_RATIO", "half", "EXAMPLE_RATIO must be a number, got 'half'"),
        ("EXAMPLE_ENABLED", "maybe", "EXAMPLE_ENABLED must be true or false, got 'maybe'"),
        ("EXAMPLE_MODE", "medium", "EXAMPLE_MODE must be one of fast, slow, got 'medium'"),
        ("EXAMPLE_CAP", "lots", "EXAMPLE_CAP must be a number or none/off/unlimited, got 'lots'"),
        ("EXAMPLE_WINDOW", "5", "EXAMPLE_WINDOW must be START-END, got '5' (not START-END)"),
    ],
)
def test_a_bad_value_names_its_variable_and_what_was_expected(variable: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        EXAMPLE.read({"EXAMPLE_TOKEN_SECRET": "t", variable: raw})

    assert raised.value.problems == (message,)
    assert message in str(raised.value)


def test_every_problem_is_reported_at_once_under_the_heading() -> None:
    with pytest.raises(SettingsError) as raised:
        EXAMPLE.read({"EXAMPLE_COUNT": "x", "EXAMPLE_ENABLED": "2"}, heading="invalid example settings")

    assert raised.value.problems == (
        "EXAMPLE_COUNT must be an integer, got 'x'",
        "EXAMPLE_ENABLED must be true or false, got '2'",
        "EXAMPLE_TOKEN_SECRET is required (the account's token)",
    )
    assert str(raised.value).startswith("invalid example settings:\n  EXAMPLE_COUNT")


def test_the_callers_error_type_is_raised() -> None:
    class ExampleError(SettingsError):
        pass

    with pytest.raises(ExampleError):
        EXAMPLE.read({}, error=ExampleError)


def test_a_settings_error_from_one_message_lists_it_as_its_problem() -> None:
    error = SettingsError("SURGE_PORT is taken")

    assert (str(error), error.problems) == ("SURGE_PORT is taken", ("SURGE_PORT is taken",))
    assert isinstance(error, ValueError)


def test_the_environment_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXAMPLE_TOKEN_SECRET", "from-os")

    assert EXAMPLE.read()["token"] == "from-os"


def test_the_engine_reads_one_variable_per_setting() -> None:
    assert set(ENVIRONMENT.readers) == {item.name for item in fields(Settings)}
    assert ENVIRONMENT.variables["database_url"] == "DATABASE_URL"
    assert ENVIRONMENT.variables["pool_size_max"] == "SURGE_POOL_SIZE_MAX"


def test_engine_settings_from_the_environment_then_flags(tmp_path: Path) -> None:
    environment = {
        "SURGE_HOME": str(tmp_path),
        "SURGE_PORT": "9000",
        "SURGE_BATCH_DELAY_MS": "0.5",
        "SURGE_TRUST_FORWARDED_FOR": "on",
        "SURGE_PROCESSORS": "main=stripe,simulated",
        "DATABASE_URL": "postgresql://db/surge",
    }

    settings = load_settings(environment, port=9100, workers=None)

    assert (settings.home, settings.port, settings.batch_delay_ms) == (tmp_path, 9100, 0.5)
    assert settings.trust_forwarded_for is True
    assert settings.processor_specs() == [("main", "stripe"), ("simulated", "simulated")]
    assert settings.database_url == "postgresql://db/surge"


def test_bad_engine_variables_are_all_named() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"SURGE_PORT": "eighty", "SURGE_TRUST_FORWARDED_FOR": "maybe"})

    assert raised.value.problems == (
        "SURGE_PORT must be an integer, got 'eighty'",
        "SURGE_TRUST_FORWARDED_FOR must be true or false, got 'maybe'",
    )


def test_each_pipeline_batcher_has_its_own_minimum_and_delay() -> None:
    from engine.app import batcher_limits

    settings = load_settings(
        {"SURGE_BATCH_DELAY_MS": "1.5", "SURGE_SETTLE_BATCH_SIZE_MIN": "8", "SURGE_SETTLE_BATCH_DELAY_MS": "2"}
    )
    intake, settle = batcher_limits(settings, "intake"), batcher_limits(settings, "settle")
    assert (intake.batch_size_min, intake.batch_delay_ms) == (1, 1.5)  # the shared delay, its own minimum
    assert (settle.batch_size_min, settle.batch_delay_ms) == (8, 2.0)


def test_a_batch_minimum_above_the_maximum_is_refused() -> None:
    with pytest.raises(ConfigError, match="SURGE_INTAKE_BATCH_SIZE_MIN"):
        load_settings({"SURGE_INTAKE_BATCH_SIZE_MIN": "20", "SURGE_BATCH_SIZE_MAX": "10"})
