"""A `surge serve` process SIGKILLed while its receipts are in the SMTP server's hands, unanswered: none is lost.
Each receipt is delivered at least once, and a repeat carries the same Message-ID as the first delivery."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from engine.keys import Role
from tests.e2e.conftest import donation
from tests.e2e.test_processes import engine_process, free_port, post, prepare
from tests.receipts.smtp_server import SmtpServer
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


async def test_sigkill_while_receipts_are_sending_loses_none(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    keys = await prepare(database_url)
    port = free_port()
    environment = {
        "SURGE_HOME": str(tmp_path),
        "SURGE_SMTP_URL": smtp_server.url,
        "SURGE_RECEIPT_SEND_TIMEOUT_MS": "3000",  # the lease a killed relay leaves: this plus a small margin
        "SURGE_RECEIPT_POLL_INTERVAL_MS": "20",
        "SURGE_PROCESSOR_RATE_PER_S": "1000",
    }
    smtp_server.hold()  # messages arrive and are recorded, but the server does not answer yet
    donations: list[str] = []
    async with engine_process(database_url, port, environment=environment) as engine:
        async with aiohttp.ClientSession() as session:
            for number in range(6):
                body = donation(1_000 + number, first_name=f"Donor{number}", email=f"donor{number}@example.org")
                answer = await post(session, port, keys[Role.FORM], f"receipt-crash-{number}", body)
                assert answer is not None and answer[0] == 201, answer
                donations.append(answer[1]["id"])
        await wait_until(lambda: len(smtp_server.messages) >= 1, what="a receipt in the SMTP server's hands")
        engine.send_signal(signal.SIGKILL)
        await engine.process.wait()

    connection = await asyncpg.connect(database_url)
    try:
        # Killed mid-send: the receipts the server holds were never acknowledged, so none of them is marked sent.
        held = {str(message["X-Surge-Receipt"]) for message in smtp_server.messages}
        sent = await connection.fetchval(
            "SELECT count(*) FROM surge.receipts WHERE id = ANY($1::text[]) AND status = 'sent'", list(held)
        )
        assert held and sent == 0
        smtp_server.release()

        async with engine_process(database_url, port, environment=environment):

            async def all_sent() -> bool:
                statuses = await connection.fetch("SELECT status FROM surge.receipts")
                return len(statuses) == len(donations) and all(row["status"] == "sent" for row in statuses)

            await wait_until(all_sent, timeout=60, what="every receipt sent after the restart")
        rows = await connection.fetch("SELECT id, donation_id, message_id FROM surge.receipts")
    finally:
        await connection.close()

    assert sorted(row["donation_id"] for row in rows) == sorted(donations)
    grouped = smtp_server.by_receipt()
    assert sorted(grouped) == sorted(row["id"] for row in rows)  # every receipt delivered, none lost
    for row in rows:
        assert {message["Message-ID"] for message in grouped[row["id"]]} == {row["message_id"]}
    repeated = [receipt for receipt, messages in grouped.items() if len(messages) > 1]
    assert set(repeated) >= held, "the receipts held when the engine died are sent again"
