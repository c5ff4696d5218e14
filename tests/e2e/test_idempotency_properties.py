"""Property: whatever sequence of requests and retries a client sends, each Idempotency-Key yields at most one
donation and one charge — the first body wins, identical replays return it, changed bodies get 409."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Surge, donation

_examples = itertools.count()

# A request: (which key, which body variant, sent alone or as a burst of concurrent copies).
requests = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2), st.booleans()),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=requests)
async def test_each_key_yields_one_donation_whatever_the_retries(unthrottled_surge: Surge, sequence: list) -> None:
    surge = unthrottled_surge
    example = next(_examples)
    first_body: dict[int, int] = {}
    donation_for_key: dict[int, str] = {}
    for key_index, variant, burst in sequence:
        key = f"prop-{example}-{key_index}"
        # Each key has its own donor, so limits never interfere with what is being tested.
        body = donation(1000 + variant, first_name=f"P{example}x{key_index}")
        copies = 3 if burst else 1
        answers = await asyncio.gather(*(surge.donate(body, key=key) for _ in range(copies)))
        expected_variant = first_body.setdefault(key_index, variant)
        for status, answer in answers:
            if variant != expected_variant:
                assert status == 409 and answer["error"]["code"] in (
                    "idempotency_key_reused",
                    "idempotency_in_progress",
                )
                continue
            assert status in (201, 409), answer
            if status == 201:
                assert donation_for_key.setdefault(key_index, answer["id"]) == answer["id"]
                assert answer["amount"] == 1000 + expected_variant
    rows = await surge.pool.fetch(
        "SELECT idempotency_key, amount_minor FROM surge.donations WHERE idempotency_key LIKE $1",
        f"prop-{example}-%",
    )
    assert len(rows) == len(first_body)
    assert {row["idempotency_key"]: row["amount_minor"] for row in rows} == {
        f"prop-{example}-{k}": 1000 + v for k, v in first_body.items()
    }
    charged = await surge.pool.fetchval(
        "SELECT count(*) FROM simulator.charges WHERE donation_id = ANY($1::text[])",
        list(donation_for_key.values()),
    )
    assert charged == len(donation_for_key)
