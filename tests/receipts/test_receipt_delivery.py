"""Receipts from the served engine to a real SMTP server (aiosmtpd): one per donation and per refund, with the right
content; a refused recipient ends visibly failed; an SMTP outage delays receipts, which all go out afterwards; and
without SMTP they are written as .eml files."""

from __future__ import annotations

import email
import email.policy
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.keys import Role
from tests.e2e.conftest import donation, running_surge, surge_settings
from tests.receipts.smtp_server import SmtpServer, Tls, html_part, self_signed_certificate, text_part
from tests.waiting import wait_until

# The relay polls often and retries soon, so the tests wait on short intervals.
FAST_RELAY: dict[str, Any] = {
    "receipt_poll_interval_ms": 20,
    "receipt_retry_delay_ms": 50,
    "receipt_retry_delay_max_s": 0.2,
    "receipt_send_timeout_ms": 5_000,
    "processor_rate_per_s": 1_000_000.0,  # every donation charged in its request
}


def relay_settings(database_url: str, tmp_path: Path, smtp: SmtpServer | None, **overrides: Any) -> Any:
    smtp_url = {"smtp_url": smtp.url} if smtp else {}
    return surge_settings(database_url, tmp_path, **{**FAST_RELAY, **smtp_url, **overrides})


async def receipt_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM surge.receipts ORDER BY created_at, id")


async def all_sent(pool: asyncpg.Pool, count: int) -> bool:
    rows = await receipt_rows(pool)
    return len(rows) == count and all(row["status"] == "sent" for row in rows)


async def test_a_donation_gets_exactly_one_receipt_with_its_content(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        body = donation(12_345, "pm_card_amex", first_name="Ada", last_name="Lovelace", email="ada@example.org")
        status, gift = await surge.donate(body, key="receipt-once")
        assert status == 201, gift
        await wait_until(lambda: all_sent(surge.pool, 1), what="the receipt sent")
        replay_status, _ = await surge.donate(body, key="receipt-once")  # a replay settles nothing new
        assert replay_status == 201
        [row] = await receipt_rows(surge.pool)
        stored = await surge.pool.fetchrow(
            "SELECT card_brand, card_last4 FROM surge.donations WHERE id = $1", gift["id"]
        )
    [message] = smtp_server.messages
    assert (row["donation_id"], row["kind"], row["recipient"]) == (gift["id"], "donation", "ada@example.org")
    assert message["Message-ID"] == row["message_id"] == f"<rcpt_{gift['id']}@surge.localhost>"
    assert message["To"] == "ada@example.org"
    assert message["Subject"] == "Receipt for your donation to Demo Campaign"
    # The card is the processor's (the simulator's American Express test card), not anything the donor typed.
    assert (stored["card_brand"], stored["card_last4"]) == ("amex", "8431")
    text = text_part(message)
    for expected in ("Dear Ada Lovelace", "123.45 USD", gift["id"], "American Express ending in 8431"):
        assert expected in text, (expected, text)
    assert "not deductible" in text  # the demo campaign is political
    html = html_part(message)
    assert "123.45 USD" in html and "American Express ending in 8431" in html and "not deductible" in html


async def test_a_donor_name_is_escaped_in_the_html_receipt(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        status, _ = await surge.donate(donation(first_name="<b>Jo</b>", last_name="O'Neil & Co"))
        assert status == 201
        await wait_until(lambda: all_sent(surge.pool, 1), what="the receipt sent")
    [message] = smtp_server.messages
    html = html_part(message)
    assert "<b>Jo</b>" not in html and "&lt;b&gt;Jo&lt;/b&gt;" in html
    assert "O&#39;Neil &amp; Co" in html
    assert "<b>Jo</b> O'Neil & Co" in text_part(message)  # plain text is not HTML: nothing to escape


async def test_a_refund_gets_its_own_receipt(database_url: str, tmp_path: Path, smtp_server: SmtpServer) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        _, gift = await surge.donate(donation(6_000))
        response = await surge.client.post(
            f"/v1/donations/{gift['id']}/refunds",
            json={"amount": 2_000},
            headers={**surge.auth(Role.FINANCE), "Idempotency-Key": "refund-receipt"},
        )
        refund = await response.json()
        assert response.status == 200, refund
        await wait_until(lambda: all_sent(surge.pool, 2), what="both receipts sent")
        rows = await receipt_rows(surge.pool)
    assert {(row["kind"], row["refund_id"]) for row in rows} == {("donation", None), ("refund", refund["id"])}
    grouped = smtp_server.by_receipt()
    assert sorted(grouped) == sorted([f"rcpt_{gift['id']}", f"rcpt_{refund['id']}"])
    [refund_message] = grouped[f"rcpt_{refund['id']}"]
    assert refund_message["Subject"].startswith("Refund of your donation")
    text = text_part(refund_message)
    assert "20.00 USD" in text and refund["id"] in text and gift["id"] in text


async def test_a_refused_recipient_ends_failed_with_the_error(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        status, gift = await surge.donate(donation(email="bounce@example.org"))
        assert status == 201

        async def failed() -> asyncpg.Record | None:
            row = await surge.pool.fetchrow("SELECT * FROM surge.receipts WHERE donation_id = $1", gift["id"])
            return row if row is not None and row["status"] == "failed" else None

        row = await wait_until(failed, what="the receipt to fail")
        metrics = await (await surge.client.get("/metrics")).text()
    assert "550" in row["last_error"] and row["attempts"] == 1  # permanent: not retried
    assert row["sent_at"] is None
    assert 'surge_receipts_failed_total{kind="donation"} 1.0' in metrics
    assert smtp_server.messages == []


async def test_an_smtp_outage_delays_receipts_and_all_go_out_after_it(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        smtp_server.stop()
        gifts = []
        for number in range(4):
            status, gift = await surge.donate(donation(1_000 + number, email=f"donor{number}@example.org"))
            assert status == 201
            gifts.append(gift["id"])

        async def retried() -> bool:
            rows = await receipt_rows(surge.pool)
            return len(rows) == 4 and all(r["status"] == "pending" and r["attempts"] >= 2 for r in rows)

        await wait_until(retried, what="every receipt tried at least twice during the outage")
        rows = await receipt_rows(surge.pool)
        assert all("Connect" in row["last_error"] or "refused" in row["last_error"] for row in rows), rows
        smtp_server.start()  # the outage ends, same port
        await wait_until(lambda: all_sent(surge.pool, 4), what="every receipt sent after the outage")
        metrics = await (await surge.client.get("/metrics")).text()
    grouped = smtp_server.by_receipt()
    assert sorted(grouped) == sorted(f"rcpt_{gift}" for gift in gifts)
    assert all(len(messages) == 1 for messages in grouped.values())
    assert 'surge_receipts_sent_total{kind="donation"} 4.0' in metrics
    assert "surge_receipt_send_retries_total" in metrics


async def test_without_smtp_receipts_are_eml_files_and_the_log_says_where(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="engine.receipts.relay")
    settings = relay_settings(database_url, tmp_path, None)
    async with running_surge(database_url, settings) as surge:
        _, gift = await surge.donate(donation(2_500))
        await wait_until(lambda: all_sent(surge.pool, 1), what="the receipt written")
    outbox = tmp_path / "outbox"
    assert f".eml files in {outbox}" in caplog.text
    [written] = list(outbox.iterdir())
    assert written.name == f"rcpt_{gift['id']}.eml"
    message: Any = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert message["Message-ID"] == f"<rcpt_{gift['id']}@surge.localhost>"
    assert "25.00 USD" in text_part(message) and "Visa ending in 4242" in text_part(message)


async def test_declined_donations_get_no_receipt(database_url: str, tmp_path: Path, smtp_server: SmtpServer) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        declined_status, _ = await surge.donate(donation(payment_method="pm_card_chargeDeclined"))
        status, gift = await surge.donate(donation())
        assert (declined_status, status) == (402, 201)
        await wait_until(lambda: all_sent(surge.pool, 1), what="the one receipt sent")
        [row] = await receipt_rows(surge.pool)
    assert row["donation_id"] == gift["id"]
    assert [m["X-Surge-Receipt"] for m in smtp_server.messages] == [f"rcpt_{gift['id']}"]


# aiosmtpd warns about AUTH without STARTTLS, not knowing that the implicit mode's connection is TLS throughout.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_receipts_go_over_tls_with_a_login(database_url: str, tmp_path: Path, mode: str) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    server = SmtpServer(Tls(mode, certificate, key, ("receipts", "s3cret:/@")))
    server.start()
    try:
        settings = relay_settings(database_url, tmp_path, server)
        async with running_surge(database_url, settings) as surge:
            status, gift = await surge.donate(donation())
            assert status == 201
            await wait_until(lambda: all_sent(surge.pool, 1), what="the receipt sent over TLS")
    finally:
        server.stop()
    [message] = server.messages
    assert message["X-Surge-Receipt"] == f"rcpt_{gift['id']}"


async def test_a_wrong_password_is_retried_with_the_error_kept(database_url: str, tmp_path: Path) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    server = SmtpServer(Tls("starttls", certificate, key, ("receipts", "right")))
    server.start()
    try:
        wrong = server.url.replace("receipts:right@", "receipts:wrong@")
        settings = relay_settings(database_url, tmp_path, None, smtp_url=wrong)
        async with running_surge(database_url, settings) as surge:
            status, gift = await surge.donate(donation())
            assert status == 201

            async def retried() -> asyncpg.Record | None:
                row = await surge.pool.fetchrow("SELECT * FROM surge.receipts WHERE donation_id = $1", gift["id"])
                return row if row is not None and row["attempts"] >= 2 else None

            row = await wait_until(retried, what="the receipt retried after the refused login")
    finally:
        server.stop()
    assert row["status"] in ("pending", "failed") and "535" in row["last_error"], row
    assert server.messages == []


async def test_a_nonprofit_declared_over_the_api_gets_its_acknowledgment_and_its_own_legal_text(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    settings = relay_settings(database_url, tmp_path, smtp_server)
    async with running_surge(database_url, settings) as surge:
        campaign = {
            "slug": "water",
            "name": "Clean Water Fund",
            "election": "2026",
            "page": {"kind": "nonprofit"},
            "receipt": {"legal_text": "Clean Water Fund is a 501(c)(3) charity, EIN 12-3456789."},
        }
        created = await surge.client.post("/v1/campaigns", json=campaign, headers=surge.auth(Role.ADMIN))
        assert created.status == 201, await created.text()
        assert (await created.json())["receipt"]["legal_text"].startswith("Clean Water Fund is a 501(c)(3)")
        bad = await surge.client.post(
            "/v1/campaigns", json={**campaign, "slug": "w2", "receipt": {"legal": "x"}}, headers=surge.auth(Role.ADMIN)
        )
        assert bad.status == 400 and (await bad.json())["error"]["param"] == "receipt.legal"
        status, _ = await surge.donate({**donation(30_000), "campaign": "water"})
        assert status == 201
        await wait_until(lambda: all_sent(surge.pool, 1), what="the receipt sent")
    text = text_part(smtp_server.messages[0])
    assert "EIN 12-3456789" in text and "not deductible" not in text


async def test_a_process_with_the_relay_off_leaves_its_receipts_to_one_with_it_on(
    database_url: str, tmp_path: Path, smtp_server: SmtpServer
) -> None:
    quiet = relay_settings(database_url, tmp_path / "quiet", smtp_server, receipt_relay=False)
    async with running_surge(database_url, quiet) as surge:
        status, gift = await surge.donate(donation(3_000))
        assert status == 201, gift
        # Written with the settlement, in the same statement: there once the donation has its answer.
        [row] = await receipt_rows(surge.pool)
        assert (row["donation_id"], row["status"], row["attempts"]) == (gift["id"], "pending", 0)
        # A process that sends (another engine host, or `surge serve` with the relay on) sends it.
        sending = relay_settings(database_url, tmp_path / "sending", smtp_server)
        async with running_surge(database_url, sending) as sender:
            await wait_until(lambda: all_sent(sender.pool, 1), what="the receipt sent by the other process")
    [message] = smtp_server.messages
    assert message["Message-ID"] == f"<rcpt_{gift['id']}@surge.localhost>"
