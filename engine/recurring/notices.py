"""Emailing donor notices, each with the plan's manage link: a payment that failed and will be retried, an
installment skipped, a plan cancelled (an installment charged is told by its receipt, which carries the link
too). Campaign notices stay in ``surge.recurring_notices`` for the campaign's staff (API and dashboard).

Delivery is at least once: a batch of unsent notices is claimed with ``FOR UPDATE SKIP LOCKED`` (processes share
the work), each is sent, and ``sent_at`` is set in the same transaction; a process that dies mid-batch leaves them
unsent and another sends them again, under the same message file / id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid

import asyncpg

from engine.receipts.senders import Sender, SendError

_logger = logging.getLogger(__name__)
NOTICE_BATCH_MAX = 50


class Notifier:
    def __init__(self, sender: Sender, from_address: str, manage_link: Callable[[str], str]) -> None:
        self._sender = sender
        self._from = from_address
        self._manage_link = manage_link

    async def send_due(self, pool: asyncpg.Pool) -> int:
        async with pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                """SELECT n.id, n.plan_id, n.kind, n.message, p.donor_email FROM surge.recurring_notices n
                     JOIN surge.recurring_plans p ON p.id = n.plan_id
                    WHERE n.audience = 'donor' AND n.sent_at IS NULL
                    ORDER BY n.id LIMIT $1 FOR UPDATE OF n SKIP LOCKED""",
                NOTICE_BATCH_MAX,
            )
            sent = []
            for row in rows:
                try:
                    await self._sender.send(self._message(row), f"notice_{row['id']}")
                except SendError as error:
                    _logger.warning("notice %s to %s not sent: %s", row["id"], row["donor_email"], error)
                    continue
                sent.append(row["id"])
            await connection.execute(
                "UPDATE surge.recurring_notices SET sent_at = now() WHERE id = ANY($1::bigint[])", sent
            )
        return len(rows)

    def _message(self, row: asyncpg.Record) -> EmailMessage:
        domain = self._from.rsplit("@", 1)[-1].rstrip(">") or "surge.localhost"
        message = EmailMessage()
        message["From"], message["To"] = self._from, row["donor_email"]
        message["Subject"] = "Your recurring gift"
        message["Message-ID"] = make_msgid(f"notice_{row['id']}", domain=domain)
        link = self._manage_link(row["plan_id"])
        # 7bit: quoted-printable would break the link's long line.
        message.set_content(f"{row['message']}\n\nChange or cancel your recurring gift:\n{link}\n", cte="7bit")
        return message
