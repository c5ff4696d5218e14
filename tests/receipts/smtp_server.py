"""A real SMTP server for the tests (aiosmtpd on a loopback port), recording every message it takes.

It can be stopped and started again on the same port (an outage), refuse recipients for good (``bounce…`` local
parts get a 550), require TLS (STARTTLS, or TLS from the first byte) and a login (with a certificate made by
``openssl`` for 127.0.0.1, see ``self_signed_certificate``), and hold messages: with ``hold()`` each message is
recorded as it arrives but not answered until ``release()`` — so a test can kill the engine while its receipts are
in the server's hands, unacknowledged.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session


@dataclass
class Recorder:
    messages: list[EmailMessage] = field(default_factory=list)
    answer: threading.Event = field(default_factory=threading.Event)  # set: answer at once; clear: hold
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.answer.set()

    async def handle_RCPT(
        self, server: SMTPProtocol, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower().startswith("bounce"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPProtocol, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]  # policy.default parses into EmailMessage
        if not self.answer.is_set():
            await asyncio.to_thread(self.answer.wait)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class Tls:
    """What the server demands: ``mode`` starttls or implicit, with this certificate, and this login."""

    mode: str
    certificate: Path
    key: Path
    login: tuple[str, str]


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (also its own CA: the engine trusts it through ``?ca_file=``)."""
    certificate, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return certificate, key


class SmtpServer:
    def __init__(self, tls: Tls | None = None) -> None:
        self.recorder = Recorder()
        self.port = _free_port()
        self.tls = tls
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        if self.tls is None:
            return f"smtp+insecure://127.0.0.1:{self.port}"
        scheme = "smtps" if self.tls.mode == "implicit" else "smtp"
        user, password = self.tls.login
        login = f"{quote(user, safe='')}:{quote(password, safe='')}"  # percent-encoded, as the URL's form says
        return f"{scheme}://{login}@127.0.0.1:{self.port}?ca_file={self.tls.certificate}"

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert self.tls is not None
        user, password = self.tls.login
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (user.encode(), password.encode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers a failure with 535

    def _tls_options(self) -> dict[str, Any]:
        if self.tls is None:
            return {}
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.certificate, self.tls.key)
        options: dict[str, Any] = {"authenticator": self._authenticate, "auth_required": True}
        if self.tls.mode == "implicit":
            return {**options, "ssl_context": context, "auth_require_tls": False}  # TLS from the first byte
        return {**options, "tls_context": context, "require_starttls": True, "auth_require_tls": True}

    @property
    def messages(self) -> list[EmailMessage]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def start(self) -> None:
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **self._tls_options())
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self.recorder.answer.set()  # held sessions end, so the server's loop can stop
            self._controller.stop()
            self._controller = None

    def hold(self) -> None:
        self.recorder.answer.clear()

    def release(self) -> None:
        self.recorder.answer.set()

    def by_receipt(self) -> dict[str, list[EmailMessage]]:
        """Messages grouped by the receipt they carry (the engine's X-Surge-Receipt header)."""
        grouped: dict[str, list[EmailMessage]] = {}
        for message in self.messages:
            grouped.setdefault(str(message["X-Surge-Receipt"]), []).append(message)
        return grouped


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def text_part(message: Any) -> str:
    return str(message.get_body(preferencelist=("plain",)).get_content())


def html_part(message: Any) -> str:
    return str(message.get_body(preferencelist=("html",)).get_content())
