"""The receipt relay: every engine process sends due receipts from the outbox until each is sent or failed.

Each round claims a batch (engine/receipts/outbox.py: ``FOR UPDATE SKIP LOCKED``, leased for the send's timeout
plus a margin), renders and sends them concurrently, then records each result. Delivery is at least once: a process
killed after the server took a message but before the row was marked sent leaves it pending, and it is sent again
when the lease ends — with the same Message-ID, which the receiving side can use to recognise the repeat. A
failure is retried with a doubling delay; a permanent refusal (a 5xx reply), a receipt that cannot be rendered, or
the last allowed attempt ends it ``failed`` with the error, which is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import jinja2

from engine.metrics import Metrics
from engine.receipts import outbox
from engine.receipts.outbox import ClaimedReceipt
from engine.receipts.rendering import email_message, message_id_domain
from engine.receipts.senders import Sender, SendError
from engine.workers import PollingLoop

_logger = logging.getLogger(__name__)

LEASE_MARGIN_S = 2.0  # beyond the send's timeout: rendering and recording the result
# The backlog gauges count every pending receipt: read at most this often, not after every round, or a relay
# catching up on a deadline night's backlog spends PostgreSQL's time counting it (a full count per 20 receipts).
BACKLOG_READ_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class RelayLimits:
    send_timeout_s: float = 30.0
    poll_interval_s: float = 0.5
    claim_batch_max: int = 20  # also the most SMTP connections one process opens at once
    attempts_max: int = 10
    retry_delay_s: float = 1.0  # before the second attempt; doubled after each failure
    retry_delay_max_s: float = 600.0

    def __post_init__(self) -> None:
        if min(self.send_timeout_s, self.poll_interval_s, self.retry_delay_s, self.retry_delay_max_s) <= 0:
            raise ValueError(f"receipt relay limits must be positive: {self}")
        if self.claim_batch_max < 1 or self.attempts_max < 1:
            raise ValueError(f"receipt relay batch and attempts must be at least 1: {self}")

    def retry_delay(self, attempts: int) -> float:
        return float(min(self.retry_delay_s * 2 ** min(attempts - 1, 30), self.retry_delay_max_s))


class ReceiptRelay:
    def __init__(
        self, pool: asyncpg.Pool, sender: Sender, sender_address: str, metrics: Metrics, limits: RelayLimits
    ) -> None:
        self._pool = pool
        self._sender = sender
        self._sender_address = sender_address
        self._domain = message_id_domain(sender_address)
        self._metrics = metrics
        self.limits = limits
        self._backlog_read_at = float("-inf")
        # A plan → its manage link, for installments' receipts; set by the recurring scheduler once it has its signer.
        self.manage_link: Callable[[str], str] | None = None
        # Only a full batch goes again at once: more may be due now.
        self._loop = PollingLoop(
            "receipt relay", self.run_once, limits.poll_interval_s, lambda n: n >= limits.claim_batch_max
        )

    def start(self) -> None:
        _logger.info("receipts: sending to %s", self._sender.describe())
        self._loop.start()

    async def stop(self) -> None:
        """Stop after the current round; a receipt it was sending keeps its lease and is sent again later."""
        await self._loop.stop()

    def wake(self) -> None:
        self._loop.wake()

    async def run_once(self) -> int:
        """Claim the receipts due now and send each; return how many were claimed."""
        lease_s = self.limits.send_timeout_s + LEASE_MARGIN_S
        receipts = await outbox.claim_due(self._pool, self.limits.claim_batch_max, lease_s, self._domain)
        if receipts:
            sent = await asyncio.gather(*(self._send(receipt) for receipt in receipts))
            delivered = [receipt for receipt, ok in zip(receipts, sent, strict=True) if ok]
            if delivered:
                await outbox.mark_sent(self._pool, [receipt.id for receipt in delivered])
                for receipt in delivered:
                    self._metrics.receipts_sent.labels(receipt.kind).inc()
        if time.monotonic() - self._backlog_read_at >= BACKLOG_READ_INTERVAL_S:
            backlog = await outbox.backlog(self._pool)
            self._metrics.receipts_pending.set(backlog.pending)
            self._metrics.receipts_relay_lag.set(backlog.oldest_pending_age_s)
            self._backlog_read_at = time.monotonic()
        return len(receipts)

    async def _send(self, receipt: ClaimedReceipt) -> bool:
        """Send one receipt; True when delivered, else its failure is recorded (retry later, or failed)."""
        try:
            link = self.manage_link(receipt.plan_id) if receipt.plan_id and self.manage_link else None
            message = email_message(receipt, self._sender_address, link)
        except (jinja2.TemplateError, ValueError) as error:
            await self._fail(receipt, f"cannot render the receipt: {type(error).__name__}: {error}")
            return False
        try:
            # The whole send, not each SMTP command (aiosmtplib's timeout), stays within the lease.
            async with asyncio.timeout(self.limits.send_timeout_s):
                await self._sender.send(message, receipt.id)
        except TimeoutError:
            await self._failed_attempt(receipt, SendError("the send did not finish in time", permanent=False))
            return False
        except SendError as error:
            await self._failed_attempt(receipt, error)
            return False
        except Exception as error:  # a bug in a sender: retried like an outage, and logged with its traceback
            _logger.exception("sending receipt %s raised", receipt.id)
            await self._failed_attempt(receipt, SendError(repr(error), permanent=False))
            return False
        return True

    async def _failed_attempt(self, receipt: ClaimedReceipt, error: SendError) -> None:
        if error.permanent or receipt.attempts >= self.limits.attempts_max:
            await self._fail(receipt, str(error))
            return
        delay_s = self.limits.retry_delay(receipt.attempts)
        _logger.warning(
            "receipt %s not sent (attempt %d): %s; again in %g s", receipt.id, receipt.attempts, error, delay_s
        )
        self._metrics.receipt_send_retries.inc()
        await outbox.mark_retry(self._pool, receipt.id, str(error), delay_s)

    async def _fail(self, receipt: ClaimedReceipt, error: str) -> None:
        _logger.error("receipt %s failed after %d attempt(s): %s", receipt.id, receipt.attempts, error)
        self._metrics.receipts_failed.labels(receipt.kind).inc()
        await outbox.mark_failed(self._pool, receipt.id, error)
