"""Refunds and disputes against donations made during the run, as finance staff and card holders cause them.

Refunds go through the engine's API with a finance key, as staff would issue them: full, partial, two partials,
and pairs sent at the same moment with one ``Idempotency-Key`` (a double click). Each is retried with backoff and
the same key until the engine gives a final answer. Disputes are opened and closed at the simulated processor (the
card holder's bank), whose events reach the engine only as webhooks. What the engine acknowledged is kept for the
audit: every refund answered 200/202, and any key that was answered with two different refunds.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from adapters.simulated import SimulatedProcessor, SimulatorError

REFUND_KINDS = ("full", "partial", "two_partials", "same_key_at_once", "partial_same_key_at_once")
RETRY_DELAYS_S = (0.3, 0.6, 1.2, 2.4, 4.0, 4.0)
_RETRIED_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
_DATABASE_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass
class MoneyLog:
    refunds_acknowledged: dict[str, dict[str, Any]] = field(default_factory=dict)  # refund id → donation, amount, …
    refund_answers: dict[str, int] = field(default_factory=dict)  # HTTP status → count (final answers)
    key_conflicts: list[str] = field(default_factory=list)  # one key, two different refunds: a double refund
    disputes: dict[int, dict[str, Any]] = field(default_factory=dict)  # schedule index → dispute id, donation, outcome
    skipped: list[str] = field(default_factory=list)  # actions that found nothing to act on (or no database)

    def summary(self) -> dict[str, Any]:
        return {
            "refunds_acknowledged": len(self.refunds_acknowledged),
            "refund_answers": dict(sorted(self.refund_answers.items())),
            "key_conflicts": self.key_conflicts[:20],
            "disputes": list(self.disputes.values()),
            "skipped": self.skipped[:20],
        }


class MoneyActions:
    def __init__(
        self,
        url: str,
        finance_key: str,
        pool: asyncpg.Pool,
        processor: SimulatedProcessor,
        acknowledged: Callable[[], Mapping[str, int]],
        seed: int,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {finance_key}", "Content-Type": "application/json"}
        self._pool = pool
        self._processor = processor
        self._acknowledged = acknowledged
        self._rng = random.Random(f"surge-chaos-money-{seed}")
        self._used: set[str] = set()
        self._session: aiohttp.ClientSession | None = None
        self.log = MoneyLog()

    async def __aenter__(self) -> MoneyActions:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()

    # ---- refunds ---------------------------------------------------------------------------------------------------

    async def refund_batch(self, size: int) -> int:
        donations = await self._pick(size, undisputed=True)
        work = []
        for index, (donation_id, amount) in enumerate(donations):
            kind = REFUND_KINDS[(index + self._rng.randrange(len(REFUND_KINDS))) % len(REFUND_KINDS)]
            work.append(self._refund_kind(kind, donation_id, amount))
        await asyncio.gather(*work)
        return len(donations)

    async def _refund_kind(self, kind: str, donation_id: str, amount_minor: int) -> None:
        partial = max(1, amount_minor // 3)
        if kind == "full":
            await self._refund(donation_id, None, self._key())
        elif kind == "partial":
            await self._refund(donation_id, partial, self._key())
        elif kind == "two_partials":
            await self._refund(donation_id, partial, self._key())
            await self._refund(donation_id, partial, self._key())
        else:
            key = self._key()
            amount = None if kind == "same_key_at_once" else partial
            answers = await asyncio.gather(
                self._refund(donation_id, amount, key), self._refund(donation_id, amount, key)
            )
            ids = {answer for answer in answers if answer is not None}
            if len(ids) > 1:
                self.log.key_conflicts.append(f"key {key} on {donation_id} answered with refunds {sorted(ids)}")

    def _key(self) -> str:
        return f"chaos-refund-{secrets.token_hex(6)}"

    async def _refund(self, donation_id: str, amount_minor: int | None, key: str) -> str | None:
        """POST one refund, retried with backoff and the same key; the refund id when acknowledged."""
        if self._session is None:
            raise RuntimeError("use MoneyActions as an async context manager")
        body = b"{}" if amount_minor is None else b'{"amount": %d}' % amount_minor
        headers = {**self._headers, "Idempotency-Key": key}
        status = 0
        answer: Any = None
        for delay_s in (*RETRY_DELAYS_S, None):
            try:
                async with self._session.post(
                    f"{self._url}/v1/donations/{donation_id}/refunds", data=body, headers=headers
                ) as response:
                    status = response.status
                    answer = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                status = 0
            if status not in _RETRIED_STATUSES and status != 0:
                break
            if delay_s is None:
                break
            await asyncio.sleep(delay_s)  # backoff before retrying with the same key
        self.log.refund_answers[str(status)] = self.log.refund_answers.get(str(status), 0) + 1
        if status in (200, 202) and isinstance(answer, dict) and isinstance(answer.get("id"), str):
            refund_id = answer["id"]
            self.log.refunds_acknowledged[refund_id] = {
                "donation": donation_id,
                "amount": answer.get("amount"),
                "status": answer.get("status"),
                "key": key,
            }
            return refund_id
        return None

    # ---- disputes --------------------------------------------------------------------------------------------------

    async def open_dispute(self, index: int) -> str | None:
        picked = await self._pick(1, undisputed=True, unrefunded=True)
        if not picked:
            return None
        donation_id, _ = picked[0]
        try:
            async with self._pool.acquire() as connection:
                reference = await connection.fetchval(
                    "SELECT processor_reference FROM surge.donations WHERE id = $1", donation_id
                )
            event = await self._processor.create_dispute(reference)
        except (*_DATABASE_ERRORS, SimulatorError) as error:
            self.log.skipped.append(f"dispute {index}: {type(error).__name__}")
            return None
        self.log.disputes[index] = {"dispute": event.object_id, "donation": donation_id, "closed": None}
        return event.object_id

    async def close_dispute(self, index: int, won: bool) -> bool:
        opened = self.log.disputes.get(index)
        if opened is None:
            self.log.skipped.append(f"dispute {index}: never opened, nothing to close")
            return False
        for delay_s in (*RETRY_DELAYS_S, None):
            try:
                await self._processor.close_dispute(opened["dispute"], won)
            except _DATABASE_ERRORS:
                if delay_s is None:
                    self.log.skipped.append(f"dispute {index}: could not be closed (database unavailable)")
                    return False
                await asyncio.sleep(delay_s)
                continue
            opened["closed"] = "won" if won else "lost"
            return True
        return False

    # ---- choosing donations ----------------------------------------------------------------------------------------

    async def _pick(self, count: int, *, undisputed: bool, unrefunded: bool = False) -> list[tuple[str, int]]:
        candidates = [d for d in self._acknowledged() if d not in self._used]
        if not candidates:
            self.log.skipped.append("no acknowledged donation yet")
            return []
        try:
            async with self._pool.acquire() as connection:
                rows = await connection.fetch(
                    """SELECT id, amount_minor FROM surge.donations
                        WHERE id = ANY($1::text[]) AND status = 'succeeded' AND processor_reference IS NOT NULL
                          AND (NOT $2 OR disputed_minor = 0) AND (NOT $3 OR refunded_minor = 0)
                        ORDER BY id""",
                    candidates,
                    undisputed,
                    unrefunded,
                )
        except _DATABASE_ERRORS as error:
            self.log.skipped.append(f"choosing donations: {type(error).__name__}")
            return []
        chosen = self._rng.sample(list(rows), min(count, len(rows)))
        self._used.update(row["id"] for row in chosen)
        return [(row["id"], row["amount_minor"]) for row in chosen]
