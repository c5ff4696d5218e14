"""Intake: one group-committed transaction records a batch of donation intents.

Per item it claims the idempotency key (unique per API key), checks card-testing velocity (``velocity``: declines
weighed against attempts and cards; a challenge before a refusal), and places a hold on the
donor's election aggregate — or answers why not. Items are planned in order against the locked aggregate rows, so
two donations of one donor in one batch see each other; across transactions and processes the aggregate row lock
serialises them, and the table's CHECK refuses any aggregate above the limit whatever the code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import asyncpg
import orjson

from engine.campaigns import Campaign
from engine.pipeline.donation_request import DonationRequest
from engine.pipeline.donations import DONATION_COLUMNS, Donation
from engine.pipeline.velocity import (
    Donor,
    SourceStats,
    VelocityLimits,
    Verdict,
    parse_source_stats,
    source_stats_sql,
    verdict_of,
)


class IntakeOutcome(StrEnum):
    ACCEPTED = "accepted"
    REPLAY = "replay"  # same key, same body: the existing donation is returned
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"  # same key, different body
    LIMIT_EXCEEDED = "limit_exceeded"
    EMPLOYER_REQUIRED = "employer_required"  # the aggregate passes the itemization threshold
    VELOCITY_EXCEEDED = "velocity_exceeded"  # clear card testing from this source or donor: refused
    CHALLENGE_REQUIRED = "challenge_required"  # suspicious source: admitted only with a passed challenge


@dataclass(frozen=True, slots=True)
class IntakeItem:
    donation_id: str
    api_key_id: str
    idempotency_key: str
    request: DonationRequest
    campaign: Campaign
    status: str  # "charging" when this request will charge it now, "queued" for the durable queue
    next_attempt_at: datetime  # lease end for "charging", due time for "queued"
    processor: str | None
    client_ip: str | None
    created_at: datetime
    challenge_passed: bool = False  # the client sent a challenge token the verifier accepted
    campaign_challenge: bool = False  # the campaign asks every donor for the challenge now (pipeline.challenge)


@dataclass(frozen=True, slots=True)
class IntakeResult:
    outcome: IntakeOutcome
    donation: Donation | None = None  # the existing one for REPLAY / IDEMPOTENCY_MISMATCH
    aggregate_minor: int | None = None  # donor's election aggregate (posted + held) before this donation
    room_minor: int | None = None  # how much more the donor may give this election


async def commit_intake(
    connection: asyncpg.Connection, items: Sequence[IntakeItem], velocity: VelocityLimits
) -> list[IntakeResult]:
    """Inside a transaction under ``INDEX_LOOKUPS_ONLY`` (engine/database.py), which the pipeline's batcher sends
    with its BEGIN. Two statements: what the batch needs to know (and the donors' rows locked), then the writes."""
    context = await _read_and_lock(connection, items, velocity)
    results: list[IntakeResult | None] = [None] * len(items)
    fresh: list[int] = []
    claimed: dict[tuple[str, str], IntakeItem] = {}
    for index, item in enumerate(items):
        key = (item.api_key_id, item.idempotency_key)
        donation = context.existing.get(key)
        if donation is not None:
            same = donation.request_fingerprint == item.request.fingerprint
            results[index] = IntakeResult(
                IntakeOutcome.REPLAY if same else IntakeOutcome.IDEMPOTENCY_MISMATCH, donation
            )
        elif key in claimed:
            # The same key twice in one batch: the later one is a concurrent retry of an intent still in flight.
            same = claimed[key].request.fingerprint == item.request.fingerprint
            results[index] = IntakeResult(IntakeOutcome.REPLAY if same else IntakeOutcome.IDEMPOTENCY_MISMATCH)
        else:
            claimed[key] = item
            fresh.append(index)
    fresh = _apply_velocity(context, items, fresh, results, velocity)
    accepted, holds = _plan_holds(context, items, fresh, results)
    if accepted:
        await _insert_donations(connection, [items[i] for i in accepted], holds)
    return [r if r is not None else IntakeResult(IntakeOutcome.ACCEPTED) for r in results]


def _donor(item: IntakeItem) -> Donor:
    return (item.campaign.slug, item.campaign.election, item.request.donor_key)


@dataclass(frozen=True, slots=True)
class _Context:
    existing: dict[tuple[str, str], Donation]  # the donations already holding a key of the batch
    by_ip: dict[str, SourceStats]
    by_donor: dict[Donor, SourceStats]
    totals: dict[Donor, int]  # each donor's aggregate (posted + held), its row locked
    caps: dict[Donor, int]


# One round trip for everything intake reads: the keys already taken, each source's recent attempts (velocity) and
# every donor's aggregate row — created when missing and locked (the update on conflict takes the row lock and
# returns the row), in key order stated by the ORDER BY rather than left to the plan: COLLATE "C" is the code-point
# order Python sorts by, so concurrent batches (of any process) lock rows in one order: no deadlock. Donors of items
# refused later (replays, velocity) are locked too: cheaper than a second round trip. The limit is the campaign's
# current one, read here rather than copied once when the row was created, so that a changed limit reaches donors who
# already gave. The row keeps it for the table's CHECK (the last line of defence); a limit lowered below what a donor
# already gave is stored as that total, which admits nothing more.
_READ_AND_LOCK = f"""
    WITH locked AS (
        INSERT INTO surge.contribution_aggregates AS a (campaign, election, donor_key, limit_minor)
        SELECT d.campaign, d.election, d.donor_key, c.contribution_limit_minor
          FROM unnest($4::text[], $5::text[], $6::text[]) AS d(campaign, election, donor_key)
          JOIN surge.campaigns c ON c.slug = d.campaign
         ORDER BY d.campaign COLLATE "C", d.election COLLATE "C", d.donor_key COLLATE "C"
        ON CONFLICT (campaign, election, donor_key)
        DO UPDATE SET limit_minor = greatest(EXCLUDED.limit_minor, a.posted_minor + a.held_minor)
        RETURNING campaign, election, donor_key, posted_minor + held_minor AS total, limit_minor)
    SELECT 'aggregate' AS kind, NULL::bigint AS n, NULL::bigint AS attempts, NULL::bigint AS declines,
           NULL::bigint AS declined_cards, campaign, election, donor_key, total, limit_minor, NULL::text AS id
      FROM locked
    UNION ALL
    SELECT 'existing', k.n, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.id
      FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(api_key_id, idempotency_key, n)
      JOIN surge.donations d ON (d.api_key_id, d.idempotency_key) = (k.api_key_id, k.idempotency_key)
    UNION ALL
    SELECT v.kind, v.n, v.attempts, v.declines, v.declined_cards, NULL, NULL, NULL, NULL, NULL, NULL
      FROM ({source_stats_sql("$3", "$4", "$5", "$6", "$7", "$8")}) v"""


async def _read_and_lock(
    connection: asyncpg.Connection, items: Sequence[IntakeItem], velocity: VelocityLimits
) -> _Context:
    ips = sorted({ip for item in items if (ip := item.client_ip)})
    donors = sorted({_donor(item) for item in items})
    rows = await connection.fetch(
        _READ_AND_LOCK,
        [i.api_key_id for i in items],
        [i.idempotency_key for i in items],
        ips,
        [d[0] for d in donors],
        [d[1] for d in donors],
        [d[2] for d in donors],
        velocity.window_s,
        velocity.sample_max,
    )
    totals: dict[Donor, int] = {}
    caps: dict[Donor, int] = {}
    taken: list[str] = []
    for row in rows:
        kind = row["kind"]
        if kind == "aggregate":
            donor = (row["campaign"], row["election"], row["donor_key"])
            totals[donor], caps[donor] = row["total"], row["limit_minor"]
        elif kind == "existing":
            taken.append(row["id"])
    by_ip, by_donor = parse_source_stats(rows, ips, donors)
    existing: dict[tuple[str, str], Donation] = {}
    if taken:  # a retried request: rare, so its whole row is read only then
        for row in await connection.fetch(
            f"SELECT {DONATION_COLUMNS} FROM surge.donations WHERE id = ANY($1::text[])", taken
        ):
            existing[(row["api_key_id"], row["idempotency_key"])] = Donation.from_row(row)
    return _Context(existing, by_ip, by_donor, totals, caps)


def _apply_velocity(
    context: _Context,
    items: Sequence[IntakeItem],
    fresh: list[int],
    results: list[IntakeResult | None],
    velocity: VelocityLimits,
) -> list[int]:
    kept = []
    for index in fresh:
        item = items[index]
        verdict = verdict_of((item.client_ip, _donor(item)), context.by_ip, context.by_donor, velocity)
        if item.campaign_challenge:
            verdict = max(verdict, Verdict.CHALLENGE)
        if verdict is Verdict.REFUSE:
            results[index] = IntakeResult(IntakeOutcome.VELOCITY_EXCEEDED)
        elif verdict is Verdict.CHALLENGE and not item.challenge_passed:
            results[index] = IntakeResult(IntakeOutcome.CHALLENGE_REQUIRED)
        else:
            kept.append(index)
    return kept


Holds = dict[Donor, int]  # per donor: the amount to hold


def _plan_holds(
    context: _Context,
    items: Sequence[IntakeItem],
    fresh: list[int],
    results: list[IntakeResult | None],
) -> tuple[list[int], Holds]:
    """Decide, in order, which items fit under their donor's (locked) aggregate; the holds are written with the
    donations (:func:`_insert_donations`)."""
    totals, caps = dict(context.totals), context.caps
    accepted = []
    deltas: Holds = {}
    for index in fresh:
        item = items[index]
        donor = _donor(item)
        total = totals[donor]
        after = total + item.request.amount_minor
        if after > caps[donor]:
            results[index] = IntakeResult(
                IntakeOutcome.LIMIT_EXCEEDED, aggregate_minor=total, room_minor=max(0, caps[donor] - total)
            )
        elif after > item.campaign.itemization_threshold_minor and not item.request.has_employer_and_occupation:
            results[index] = IntakeResult(IntakeOutcome.EMPLOYER_REQUIRED, aggregate_minor=total)
        else:
            totals[donor] = after
            deltas[donor] = deltas.get(donor, 0) + item.request.amount_minor
            accepted.append(index)
    return accepted, deltas


async def _insert_donations(connection: asyncpg.Connection, items: list[IntakeItem], holds: Holds) -> None:
    """The accepted donations and their holds on the (already locked) aggregate rows: one statement."""
    keys = sorted(holds)
    await connection.execute(
        """WITH held AS (
               UPDATE surge.contribution_aggregates a
                  SET held_minor = a.held_minor + d.delta, updated_at = now()
                 FROM unnest($19::text[], $20::text[], $21::text[], $22::bigint[])
                      AS d(campaign, election, donor_key, delta)
                WHERE (a.campaign, a.election, a.donor_key) = (d.campaign, d.election, d.donor_key))
           INSERT INTO surge.donations (id, api_key_id, idempotency_key, request_fingerprint, campaign, election,
               donor_key, amount_minor, currency, payment_method, donor, metadata, status, processor,
               next_attempt_at, client_ip, created_at, updated_at, refcode)
           SELECT id, api_key_id, idempotency_key, fingerprint, campaign, election, donor_key, amount, currency,
                  payment_method, donor::jsonb, metadata::jsonb, status, processor, next_attempt_at, client_ip,
                  created_at, created_at, refcode
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], $7::text[],
                         $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::timestamptz[], $16::inet[], $17::timestamptz[], $18::text[])
                  AS d(id, api_key_id, idempotency_key, fingerprint, campaign, election, donor_key, amount, currency,
                       payment_method, donor, metadata, status, processor, next_attempt_at, client_ip,
                       created_at, refcode)""",
        [i.donation_id for i in items],
        [i.api_key_id for i in items],
        [i.idempotency_key for i in items],
        [i.request.fingerprint for i in items],
        [i.campaign.slug for i in items],
        [i.campaign.election for i in items],
        [i.request.donor_key for i in items],
        [i.request.amount_minor for i in items],
        [i.request.currency for i in items],
        [i.request.payment_method for i in items],
        [orjson.dumps(i.request.donor).decode() for i in items],
        [orjson.dumps(i.request.metadata).decode() for i in items],
        [i.status for i in items],
        [i.processor for i in items],
        [i.next_attempt_at for i in items],
        [i.client_ip for i in items],
        [i.created_at for i in items],
        [i.request.refcode for i in items],  # attribution (the donation page's ?refcode=)
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [holds[k] for k in keys],
    )
