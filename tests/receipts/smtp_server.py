"""A real SMTP server for the tests (aiosmtpd on a loopback port), recording every message it takes.

It can be stopped and started again on the same port (an outage), refuse recipients for good (``bounce…`` local
parts get a 550), and hold messages: with ``hold()`` each message is recorded as it arrives but not answered until
``release()`` — so a test can kill the engine while its receipts are in the server's hands, unacknowledged.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPProtocol
from aiosmtpd.smtp import Envelope, Session


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


class SmtpServer:
    def __init__(self) -> None:
        self.recorder = Recorder()
        self.port = _free_port()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp+insecure://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def start(self) -> None:
        self._controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port)
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
