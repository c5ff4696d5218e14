"""The relay as the settings configure it: SMTP when ``SURGE_SMTP_URL`` is set, else ``.eml`` files under
``SURGE_HOME/outbox/`` (the relay logs which at start-up)."""

from __future__ import annotations

import asyncpg

from engine.metrics import Metrics
from engine.receipts.relay import ReceiptRelay, RelayLimits
from engine.receipts.senders import DirectorySender, Sender, SmtpSender, SmtpServer
from engine.settings import Settings


def relay_limits(settings: Settings) -> RelayLimits:
    return RelayLimits(
        send_timeout_s=settings.receipt_send_timeout_ms / 1000,
        poll_interval_s=settings.receipt_poll_interval_ms / 1000,
        attempts_max=settings.receipt_attempts_max,
        retry_delay_s=settings.receipt_retry_delay_ms / 1000,
        retry_delay_max_s=settings.receipt_retry_delay_max_s,
    )


def build_sender(settings: Settings) -> Sender:
    if settings.smtp_url:
        return SmtpSender(SmtpServer.from_url(settings.smtp_url), settings.receipt_send_timeout_ms / 1000)
    return DirectorySender(settings.outbox_folder)


def build_relay(pool: asyncpg.Pool, settings: Settings, metrics: Metrics) -> ReceiptRelay:
    return ReceiptRelay(pool, build_sender(settings), settings.receipts_from, metrics, relay_limits(settings))
