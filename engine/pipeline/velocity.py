"""Card-testing velocity: declines weighed against attempts and against the number of cards, per source address and
per donor, with a challenge before a refusal.

A campus, an office or a mobile carrier's NAT is one address for hundreds of honest donors, some of whose cards are
declined; a card-testing bot is one address trying many cards, nearly all declined. What tells them apart:

- the **decline ratio** over the address's most recent decided attempts in the window (succeeded, declined or
  failed — one still being charged has not decided; at most ``sample_max`` of them, which also bounds what one check
  reads), smoothed by a minimum sample: the ratio is ``declines / max(attempts, sample_min)``, so that a handful of
  early declines is not a high ratio;
- the **distinct cards declined**: a bot cycles cards; a donor who mistyped retries one. The card's identity is the
  payment-method token the form sends (``pm_…``): with Stripe's single-use PaymentMethods each new card entry is a
  new token, so it is a proxy that over-counts a donor re-entering one card (never under-counts a bot); a processor's
  card fingerprint would be exact, but is only known after the charge.

The verdict for a source (the worse of its address and its donor):

- **allow** below ``declines_min`` declines or below ``challenge_ratio``;
- **challenge** (moderate suspicion): the client must pass the donation page's challenge (hCaptcha / Turnstile,
  verified server-side, ``engine.pipeline.challenge``) and send its token with the donation; a passed challenge
  admits the request. Without a configured verifier no challenge can be passed, so moderate suspicion is allowed;
- **refuse** (clear card testing): a ratio of at least ``refuse_ratio`` over at least ``refuse_cards_min`` distinct
  declined cards — a passed challenge does not help (captcha farms are cheap for a bot that holds stolen cards).

Only attempts that became donations count: a challenged or refused request leaves no row, and a queued donation
failed by the queue's re-check (:func:`refused_sources`; decline code :data:`VELOCITY_DECLINE_CODE`) was never tried
at a processor, so it is no attempt either (else each one failed would dilute its source's ratio back to allowed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

import asyncpg


class Verdict(IntEnum):
    """Ordered: the worse verdict of several wins."""

    ALLOW = 0
    CHALLENGE = 1
    REFUSE = 2


@dataclass(frozen=True)
class VelocityLimits:
    declines_min: int = 5  # no verdict below this many declines in the window
    window_s: int = 600
    sample_min: int = 10  # the ratio's denominator is at least this many attempts
    sample_max: int = 200  # the most recent attempts of a source that are weighed
    challenge_ratio: float = 0.3
    refuse_ratio: float = 0.6
    refuse_cards_min: int = 3  # distinct declined cards: one card retried is never refused
    challenges_enabled: bool = False  # a challenge verifier is configured (else moderate suspicion is allowed)

    def __post_init__(self) -> None:
        if self.declines_min < 1 or self.window_s < 1 or self.refuse_cards_min < 1:
            raise ValueError("declines_min, window_s and refuse_cards_min must be at least 1")
        if not 1 <= self.sample_min <= self.sample_max:
            raise ValueError("sample_min must be between 1 and sample_max")
        if not 0 < self.challenge_ratio <= self.refuse_ratio <= 1:
            raise ValueError("the ratios must satisfy 0 < challenge_ratio <= refuse_ratio <= 1")


@dataclass(frozen=True, slots=True)
class SourceStats:
    """A source's most recent decided attempts in the window (at most ``sample_max``)."""

    attempts: int = 0
    declines: int = 0
    declined_cards: int = 0


def assess(stats: SourceStats, limits: VelocityLimits) -> Verdict:
    if stats.declines < limits.declines_min:
        return Verdict.ALLOW
    ratio = stats.declines / max(stats.attempts, limits.sample_min)
    if ratio >= limits.refuse_ratio and stats.declined_cards >= limits.refuse_cards_min:
        return Verdict.REFUSE
    if ratio >= limits.challenge_ratio:
        return Verdict.CHALLENGE if limits.challenges_enabled else Verdict.ALLOW
    return Verdict.ALLOW


Donor = tuple[str, str, str]  # campaign, election, donor key
Source = tuple[str | None, Donor]  # a donation's client address (None when unknown) and its donor

VELOCITY_DECLINE_CODE = "velocity_exceeded"  # a queued donation failed without a charge: its source is card testing
# A decided attempt: one a processor answered (not one the queue's re-check failed before any processor call).
_DECIDED_ATTEMPT = (
    f"(status IN ('succeeded', 'declined') OR (status = 'failed' AND decline_code IS DISTINCT FROM "
    f"'{VELOCITY_DECLINE_CODE}'))"
)

_NO_DECLINES = SourceStats()


def verdict_of(
    source: Source, by_ip: dict[str, SourceStats], by_donor: dict[Donor, SourceStats], limits: VelocityLimits
) -> Verdict:
    """The worse of the source's address and donor verdicts, from :func:`source_stats`' answer."""
    ip, donor = source
    verdict = assess(by_donor.get(donor, _NO_DECLINES), limits)
    if ip is not None:
        verdict = max(verdict, assess(by_ip.get(ip, _NO_DECLINES), limits))
    return verdict


async def refused_sources(
    connection: asyncpg.Connection | asyncpg.Pool, sources: Sequence[Source], limits: VelocityLimits
) -> list[bool]:
    """Per source, whether it is now clearly card testing (REFUSE), in one round trip. For donations already past
    intake (the durable queue): a CHALLENGE cannot be answered without a client, and the donor passed intake."""
    ips = sorted({ip for ip, _ in sources if ip is not None})
    donors = sorted({donor for _, donor in sources})
    by_ip, by_donor = await source_stats(connection, ips, donors, limits)
    return [verdict_of(source, by_ip, by_donor, limits) is Verdict.REFUSE for source in sources]


def source_stats_sql(ips: str, campaigns: str, elections: str, donor_keys: str, window_s: str, sample_max: str) -> str:
    """The recent attempts of each address and each donor (only sources with declines come back) as rows of
    (kind, n, attempts, declines, declined_cards), n numbering the sources from 1 in their arrays; the arguments name
    the statement's parameters (``$1``), so that intake can read this in the same round trip as its other reads."""
    return f"""SELECT 'ip' AS kind, s.n, r.* FROM unnest({ips}::inet[]) WITH ORDINALITY AS s(ip, n)
           CROSS JOIN LATERAL (
               SELECT count(*) AS attempts, count(*) FILTER (WHERE status = 'declined') AS declines,
                      count(DISTINCT payment_method) FILTER (WHERE status = 'declined') AS declined_cards
                 FROM (SELECT status, payment_method FROM surge.donations
                        WHERE client_ip = s.ip AND {_DECIDED_ATTEMPT}
                          AND created_at > now() - make_interval(secs => {window_s})
                        ORDER BY created_at DESC LIMIT {sample_max}) recent) r
           WHERE r.declines > 0
           UNION ALL
           SELECT 'donor', s.n, r.* FROM unnest({campaigns}::text[], {elections}::text[], {donor_keys}::text[])
                                         WITH ORDINALITY AS s(campaign, election, donor_key, n)
           CROSS JOIN LATERAL (
               SELECT count(*) AS attempts, count(*) FILTER (WHERE status = 'declined') AS declines,
                      count(DISTINCT payment_method) FILTER (WHERE status = 'declined') AS declined_cards
                 FROM (SELECT status, payment_method FROM surge.donations
                        WHERE (campaign, election, donor_key) = (s.campaign, s.election, s.donor_key)
                          AND {_DECIDED_ATTEMPT}
                          AND created_at > now() - make_interval(secs => {window_s})
                        ORDER BY created_at DESC LIMIT {sample_max}) recent) r
           WHERE r.declines > 0"""


def parse_source_stats(
    rows: Iterable[asyncpg.Record], ips: Sequence[str], donors: Sequence[Donor]
) -> tuple[dict[str, SourceStats], dict[Donor, SourceStats]]:
    """The rows of :func:`source_stats_sql` (others are skipped) by address and by donor."""
    by_ip: dict[str, SourceStats] = {}
    by_donor: dict[Donor, SourceStats] = {}
    for row in rows:
        kind = row["kind"]
        if kind == "ip":
            by_ip[ips[row["n"] - 1]] = SourceStats(row["attempts"], row["declines"], row["declined_cards"])
        elif kind == "donor":
            by_donor[donors[row["n"] - 1]] = SourceStats(row["attempts"], row["declines"], row["declined_cards"])
    return by_ip, by_donor


async def source_stats(
    connection: asyncpg.Connection | asyncpg.Pool, ips: Sequence[str], donors: Sequence[Donor], limits: VelocityLimits
) -> tuple[dict[str, SourceStats], dict[Donor, SourceStats]]:
    """One round trip: the recent attempts of each address and each donor (only sources with declines come back)."""
    rows = await connection.fetch(
        source_stats_sql("$1", "$2", "$3", "$4", "$5", "$6"),
        list(ips),
        [d[0] for d in donors],
        [d[1] for d in donors],
        [d[2] for d in donors],
        limits.window_s,
        limits.sample_max,
    )
    return parse_source_stats(rows, ips, donors)


async def campaign_recent_declines(
    connection: asyncpg.Connection | asyncpg.Pool, campaign: str, window_s: int, sample_max: int
) -> SourceStats:
    """A campaign's most recent attempts in the window (at most ``sample_max``, newest first, read backwards along
    the (campaign, created_at) index): the decided ones and the declines among them. ``declined_cards`` is not
    counted (0): the campaign-wide rule weighs the ratio only."""
    row = await connection.fetchrow(
        f"""SELECT count(*) FILTER (WHERE {_DECIDED_ATTEMPT}) AS attempts,
                  count(*) FILTER (WHERE status = 'declined') AS declines
             FROM (SELECT status, decline_code FROM surge.donations
                    WHERE campaign = $1 AND created_at > now() - make_interval(secs => $2)
                    ORDER BY created_at DESC LIMIT $3) recent""",
        campaign,
        window_s,
        sample_max,
    )
    return SourceStats(row["attempts"], row["declines"], 0)
