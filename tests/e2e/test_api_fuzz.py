"""Every operation of the served ``/openapi.json``, fuzzed by schemathesis with the keys of each role: no 5xx, ever.

The engine runs on its own event loop in a thread (schemathesis sends its requests synchronously, with ``requests``)
over a fresh database, as a browser or client would reach it: real HTTP, real PostgreSQL. Each operation gets a
bounded, derandomized number of examples per role (and without a key), positive and negative, plus schemathesis's
coverage cases (boundaries, wrong types, unusual content types). Responses are checked against the schema where
schemathesis checks them. Afterwards the books must still balance: a refused request writes nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from engine.api.openapi import SPEC
from engine.app import create_app
from engine.bootstrap import bootstrap
from engine.keys import Role
from ledger.check import check_ledger
from tests.conftest import TEMPLATE_DATABASE, _admin, _with_database
from tests.e2e.conftest import surge_settings

pytestmark = pytest.mark.slow

EXAMPLES_MAX = 25
ROLES: tuple[Role | None, ...] = (Role.ADMIN, Role.FINANCE, Role.FORM, None)
_coverage_turn = itertools.count()
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@dataclass
class RunningEngine:
    base_url: str
    database_url: str
    keys: dict[Role, str]
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Any) -> Any:
        """Run ``coroutine`` on the engine's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)


@pytest.fixture(scope="module")
def engine(postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEngine]:
    """A served engine on its own loop in a thread, listening on a free port of 127.0.0.1."""
    name = f"surge_fuzz_{uuid.uuid4().hex[:12]}"
    database_url = _with_database(postgres_server_url, name)
    home: Path = tmp_path_factory.mktemp("fuzz")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="engine", daemon=True)
    thread.start()

    async def start() -> tuple[web.AppRunner, int, dict[Role, str]]:
        await _admin(postgres_server_url, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
        connection = await asyncpg.connect(database_url)
        try:
            keys = await bootstrap(connection, create_demo_campaign=True)
        finally:
            await connection.close()
        settings = surge_settings(database_url, home, processor_rate_per_s=1_000_000.0)
        runner = web.AppRunner(create_app(settings, database_url))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return runner, port, keys

    runner, port, keys = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    try:
        yield RunningEngine(f"http://127.0.0.1:{port}", database_url, keys, loop)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=60)
        asyncio.run_coroutine_threadsafe(
            _admin(postgres_server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"), loop
        ).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


# The operations are collected from the document the engine serves (proved equal to the served one below): pytest
# collects one test per operation before any engine runs.
schema = schemathesis.openapi.from_dict(orjson.loads(orjson.dumps(SPEC)))


def test_the_fuzzed_document_is_the_served_one(engine: RunningEngine, http: requests.Session) -> None:
    response = http.get(f"{engine.base_url}/openapi.json")
    assert response.status_code == 200
    assert response.json() == orjson.loads(orjson.dumps(SPEC))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_MAX,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx(case: Any, engine: RunningEngine, http: requests.Session) -> None:
    """Each generated request is sent with the key of every role, and without one. The coverage cases (every enum
    value, every boundary: hundreds for a campaign's currency) are many, so each goes with one role, in turn."""
    roles = ROLES
    if case.meta is not None and case.meta.phase.name == TestPhase.COVERAGE:
        roles = (ROLES[next(_coverage_turn) % len(ROLES)],)
    for role in roles:
        headers = {"Authorization": f"Bearer {engine.keys[role]}"} if role else {}
        case.call_and_validate(base_url=engine.base_url, session=http, headers=headers, checks=CHECKS)


def test_the_books_hold_after_the_fuzz(engine: RunningEngine) -> None:
    async def check() -> Any:
        connection = await asyncpg.connect(engine.database_url)
        try:
            return await check_ledger(connection)
        finally:
            await connection.close()

    report = engine.run(check())
    assert report.ok, report
