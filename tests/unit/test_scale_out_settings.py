"""The scale-out settings (README "Running at scale"): read from the environment, refused with a message naming the
variable when unusable; and the shared budget's stated per-second bound."""

from __future__ import annotations

import pytest

from engine.database import PLANNER_SETTINGS, pool_options, session_url
from engine.pipeline.budget import lease_max, per_second_bound, shared_burst
from engine.settings import ConfigError, load_settings


def test_scale_out_settings_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://surge@pgbouncer:6432/surge",
            "SURGE_DATABASE_PGBOUNCER": "true",
            "SURGE_DIRECT_DATABASE_URL": "postgresql://surge@primary:5432/surge",
            "SURGE_REPLICA_URL": "postgresql://surge@pgbouncer:6432/surge_replica",
            "SURGE_PROCESSOR_BUDGET": "shared",
            "SURGE_REDIS_URL": "redis://cache:6379/0",
        }
    )
    assert settings.processor_budget == "shared" and settings.redis_url == "redis://cache:6379/0"
    assert pool_options(settings) == {"statement_cache_size": 0}
    assert session_url(settings, "postgresql://surge@pgbouncer:6432/surge") == settings.direct_database_url
    assert settings.replica_url == "postgresql://surge@pgbouncer:6432/surge_replica"


def test_the_defaults_keep_one_host_as_it_was() -> None:
    settings = load_settings({})
    assert settings.processor_budget == "local" and pool_options(settings) == {"server_settings": PLANNER_SETTINGS}
    assert session_url(settings, "postgresql://x/db") == "postgresql://x/db"


@pytest.mark.parametrize(
    ("environment", "named"),
    [
        ({"SURGE_PROCESSOR_BUDGET": "global"}, "SURGE_PROCESSOR_BUDGET"),
        ({"SURGE_REDIS_URL": "http://cache"}, "SURGE_REDIS_URL"),
        ({"SURGE_DATABASE_PGBOUNCER": "true"}, "SURGE_DIRECT_DATABASE_URL"),
        ({"SURGE_REPLICA_URL": "mysql://replica"}, "SURGE_REPLICA_URL"),
    ],
)
def test_unusable_scale_out_settings_are_refused_by_name(environment: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environment)


def test_the_stated_bound_is_the_bucket_plus_what_each_node_holds() -> None:
    assert shared_burst(30.0) == 6 and lease_max(30.0) == 2
    assert per_second_bound(30.0, 3) == 30 + 6 + 3 * 2
    assert per_second_bound(100.0, 10) == 100 + 20 + 10 * 4
