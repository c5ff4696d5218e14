"""Where receipts go: an SMTP server (``SURGE_SMTP_URL``, through aiosmtplib) or, without one, ``.eml`` files in a
folder (``SURGE_HOME/outbox/``), which is what a laptop has.

``SURGE_SMTP_URL`` forms: ``smtp://user:password@host:587`` (STARTTLS required), ``smtps://user:password@host:465``
(TLS from the first byte) and ``smtp+insecure://host:25`` (no TLS: a relay on the same host, or tests). A query
``?ca_file=/path/ca.pem`` trusts a private certificate authority. User and password are percent-decoded.

A failed send raises :class:`SendError`; ``permanent`` when the server refused the message or its recipient for
good (a 5xx reply), so retrying cannot help.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

SMTP_SCHEMES = {"smtp": 587, "smtps": 465, "smtp+insecure": 25}


class SendError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Sender(Protocol):
    def describe(self) -> str: ...

    async def send(self, message: Message, receipt_id: str) -> None: ...


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    username: str | None
    password: str | None
    implicit_tls: bool
    start_tls: bool
    ca_file: str | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """Parse ``SURGE_SMTP_URL``; ValueError names what is wrong (never echoing the password)."""
        parts = urlsplit(url)
        if parts.scheme not in SMTP_SCHEMES:
            raise ValueError(f"SURGE_SMTP_URL must start with {', '.join(s + '://' for s in SMTP_SCHEMES)}")
        if not parts.hostname:
            raise ValueError("SURGE_SMTP_URL names no host")
        try:
            port = parts.port or SMTP_SCHEMES[parts.scheme]
        except ValueError:
            raise ValueError("SURGE_SMTP_URL has an invalid port") from None
        query = parse_qs(parts.query)
        unknown = set(query) - {"ca_file"}
        if unknown:
            raise ValueError(f"SURGE_SMTP_URL has unknown parameters: {', '.join(sorted(unknown))}")
        return cls(
            hostname=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=parts.scheme == "smtps",
            start_tls=parts.scheme == "smtp",
            ca_file=query["ca_file"][-1] if "ca_file" in query else None,
        )


class SmtpSender:
    """One connection per message: receipts are few per donation and a connection on a LAN costs milliseconds; the
    relay bounds how many are open at once."""

    def __init__(self, server: SmtpServer, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s

    def describe(self) -> str:
        tls = "TLS" if self.server.implicit_tls else "STARTTLS" if self.server.start_tls else "no TLS"
        return f"SMTP {self.server.hostname}:{self.server.port} ({tls})"

    async def send(self, message: Message, receipt_id: str) -> None:
        server = self.server
        try:
            await aiosmtplib.send(
                message,
                hostname=server.hostname,
                port=server.port,
                username=server.username,
                password=server.password,
                use_tls=server.implicit_tls,
                start_tls=server.start_tls if server.start_tls else False,
                cert_bundle=server.ca_file,
                timeout=self.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            raise SendError(f"recipient refused: {error}", permanent=all(500 <= c < 600 for c in codes)) from error
        except (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as error:
            raise SendError(f"{type(error).__name__}: {error}", permanent=500 <= error.code < 600) from error
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            # Connection refused or lost, timeouts, authentication and TLS problems: the server or its
            # configuration may recover; retried with backoff until the attempts run out.
            raise SendError(f"{type(error).__name__}: {error}", permanent=False) from error


class DirectorySender:
    """Writes each receipt to ``<folder>/<receipt id>.eml``: a resend overwrites the same file with the same message,
    and the write is atomic (a temporary file renamed), so a crash leaves no half-written receipt."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def describe(self) -> str:
        return f".eml files in {self.folder}"

    async def send(self, message: Message, receipt_id: str) -> None:
        # In a thread: creating the file blocks in the kernel (py-spy at 200 donations/s: open() was 16 % of the
        # engine's samples, on the event loop that also answers donors).
        data = message.as_bytes()
        try:
            await asyncio.to_thread(self._write, receipt_id, data)
        except OSError as error:
            raise SendError(f"writing {receipt_id}.eml failed: {error}", permanent=False) from error

    def _write(self, receipt_id: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{receipt_id}.eml"
        partial = target.with_suffix(".eml.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
