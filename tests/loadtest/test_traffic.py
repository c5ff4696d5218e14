"""The traffic mix: shares as configured, distinct donors and addresses, one address for the bot, valid bytes."""

from __future__ import annotations

import collections
import statistics

import orjson

from loadtest.traffic import CARD_TESTING_ADDRESS, Kind, Target, TrafficMix, TrafficPlan


def _plan(count: int = 20_000, mix: TrafficMix | None = None) -> list:
    plan = TrafficPlan(mix or TrafficMix(), Target("127.0.0.1", 8000, "pk_test"), seed=5, run_id="abcd")
    return plan.requests([n / 100 for n in range(count)], duration_s=count / 100)


def _parse(data: bytes) -> tuple[dict[str, str], dict]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/donations HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert int(headers["Content-Length"]) == len(body)
    return headers, orjson.loads(body)


def test_shares_follow_the_mix() -> None:
    planned = _plan()
    kinds = collections.Counter(r.kind for r in planned)
    regular = len(planned) - kinds[Kind.CARD_TESTING]
    assert kinds[Kind.CARD_TESTING] == 60
    assert abs(kinds[Kind.DECLINE] / regular - 0.04) < 0.008
    assert abs(kinds[Kind.INVALID] / regular - 0.02) < 0.006
    assert abs(sum(r.impatient for r in planned) / regular - 0.02) < 0.006


def test_requests_are_well_formed_with_unique_keys_and_skewed_amounts() -> None:
    planned = _plan(5_000)
    keys, amounts = set(), []
    for request in planned:
        headers, body = _parse(request.data)
        if request.kind is Kind.INVALID:
            continue
        keys.add(headers["Idempotency-Key"])
        assert body["amount"] == request.amount_minor
        amounts.append(body["amount"])
    assert len(keys) == len([r for r in planned if r.kind is not Kind.INVALID])
    assert statistics.median(amounts) <= 5000 and max(amounts) <= 350_000 and max(amounts) >= 100_000


def test_loyal_donors_repeat_and_the_bot_has_one_address() -> None:
    planned = _plan(10_000)
    by_address = collections.Counter()
    bot_addresses = set()
    for request in planned:
        headers, _ = _parse(request.data)
        if request.kind is Kind.CARD_TESTING:
            bot_addresses.add(headers["X-Forwarded-For"])
        else:
            by_address[headers["X-Forwarded-For"]] += 1
    assert bot_addresses == {CARD_TESTING_ADDRESS}
    assert by_address.most_common(1)[0][1] > 50  # a loyal donor gives again and again: the limit will bind
    assert len(by_address) > 4_000  # and most donors are distinct


def test_clean_mix_is_valid_donations_only() -> None:
    planned = _plan(2_000, TrafficMix.clean())
    assert {r.kind for r in planned} == {Kind.DONATION} and not any(r.impatient for r in planned)
