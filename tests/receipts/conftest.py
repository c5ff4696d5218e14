"""Fixtures for the receipts tests: a real SMTP server on a free loopback port, stopped after the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.receipts.smtp_server import SmtpServer


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
