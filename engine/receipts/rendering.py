"""A receipt's email: plain text and HTML from Jinja2 templates (the package's, or the campaign's overrides), with
the legal text the campaign's kind requires.

Templates run in Jinja2's sandbox, because a campaign's override is written by an admin and stored in the database:
it may format the receipt, not reach into Python. HTML is autoescaped (a donor's name is the donor's input); the
text part is not escaped, as it is never interpreted. Money is formatted from integer minor units by the ledger's
``format_minor`` — never a float.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from functools import lru_cache
from typing import Any

import jinja2
import markupsafe
from jinja2.sandbox import SandboxedEnvironment

from engine.receipts.outbox import ClaimedReceipt
from ledger.currencies import format_minor

_UTF8 = Charset("utf-8")
_UTF8.body_encoding = QP  # readable in the raw message, unlike base64

TEXT_TEMPLATE = "receipt.txt.j2"
HTML_TEMPLATE = "receipt.html.j2"

_BRAND_NAMES = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
}

# US rules, in plain words. A political committee's receipts must not suggest a deduction; a 501(c)(3)'s receipt is
# the contemporaneous written acknowledgment (IRC 170(f)(8)) a donor needs to deduct a gift of $250 or more, and it
# must say whether goods or services were provided in exchange.
POLITICAL_TEXT = (
    "Contributions to {campaign} are not deductible as charitable contributions for federal income tax purposes.",
)
NONPROFIT_TEXT = (
    "No goods or services were provided in exchange for this contribution.",
    "{campaign} is a tax-exempt organization. This receipt is the written acknowledgment you need to deduct a "
    "gift of $250 or more: keep it with your tax records.",
)
POLITICAL_REFUND_TEXT = (
    "The refunded amount is no longer a contribution to {campaign} and no longer counts toward your contribution "
    "limit.",
)
NONPROFIT_REFUND_TEXT = (
    "The refunded amount is no longer a gift to {campaign}: it cannot be deducted. "
    "No goods or services were provided in exchange for this contribution.",
)


def legal_text(receipt: ClaimedReceipt) -> list[str]:
    """The paragraphs of legal text: the campaign's own for its donation receipts, else the default for its kind."""
    if receipt.kind == "donation" and receipt.legal_text:
        return [paragraph.strip() for paragraph in receipt.legal_text.split("\n\n") if paragraph.strip()]
    nonprofit = receipt.campaign_type == "nonprofit"
    paragraphs: tuple[str, ...]
    if receipt.kind == "refund":
        paragraphs = NONPROFIT_REFUND_TEXT if nonprofit else POLITICAL_REFUND_TEXT
    else:
        paragraphs = NONPROFIT_TEXT if nonprofit else POLITICAL_TEXT
    return [paragraph.format(campaign=receipt.campaign_name) for paragraph in paragraphs]


def card_text(brand: str | None, last4: str | None) -> str | None:
    if not brand or not last4:
        return None
    return f"{_BRAND_NAMES.get(brand, brand.replace('_', ' ').title())} ending in {last4}"


def money_text(amount_minor: int, currency: str) -> str:
    return f"{format_minor(amount_minor, currency)} {currency}"


def subject(receipt: ClaimedReceipt) -> str:
    if receipt.kind == "refund":
        return f"Refund of your donation to {receipt.campaign_name}"
    return f"Receipt for your donation to {receipt.campaign_name}"


def context(receipt: ClaimedReceipt) -> dict[str, Any]:
    """What a template may use."""
    occurred = receipt.occurred_at.astimezone(UTC)
    return {
        "kind": receipt.kind,
        "subject": subject(receipt),
        "donor_name": f"{receipt.donor_first_name} {receipt.donor_last_name}".strip() or "donor",
        "donor_first_name": receipt.donor_first_name,
        "donor_last_name": receipt.donor_last_name,
        "campaign_name": receipt.campaign_name,
        "campaign": receipt.campaign_slug,
        "campaign_type": receipt.campaign_type,
        "amount": money_text(receipt.amount_minor, receipt.currency),
        "amount_minor": receipt.amount_minor,
        "currency": receipt.currency,
        "date": f"{occurred.day} {occurred:%B %Y}",
        "date_iso": occurred.isoformat(timespec="seconds"),
        "donation_id": receipt.donation_id,
        "refund_id": receipt.refund_id,
        "card": card_text(receipt.card_brand, receipt.card_last4),
        "card_brand": receipt.card_brand,
        "card_last4": receipt.card_last4,
        "legal_text": legal_text(receipt),
        "message_id": receipt.message_id,
    }


@lru_cache(maxsize=1)
def _environments() -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    loader = jinja2.PackageLoader("engine.receipts", "templates")
    # auto_reload off: the templates ship with the code, and checking their files' times on every render was 7 %
    # of the engine's samples at 250 donations/s (py-spy).
    options: dict[str, Any] = {
        "loader": loader,
        "undefined": jinja2.StrictUndefined,
        "keep_trailing_newline": True,
        "auto_reload": False,
    }
    return SandboxedEnvironment(autoescape=False, **options), SandboxedEnvironment(autoescape=True, **options)


@lru_cache(maxsize=256)
def _override(source: str, html: bool) -> jinja2.Template:
    text_environment, html_environment = _environments()
    return (html_environment if html else text_environment).from_string(source)


@dataclass(frozen=True, slots=True)
class RenderedReceipt:
    subject: str
    text: str
    html: str


def render(receipt: ClaimedReceipt) -> RenderedReceipt:
    """The receipt's text and HTML; a broken override raises (jinja2.TemplateError), and the relay reports it."""
    text_environment, html_environment = _environments()
    values = context(receipt)
    text_template = (
        _override(receipt.text_template, False)
        if receipt.text_template
        else text_environment.get_template(TEXT_TEMPLATE)
    )
    html_template = (
        _override(receipt.html_template, True)
        if receipt.html_template
        else html_environment.get_template(HTML_TEMPLATE)
    )
    return RenderedReceipt(values["subject"], text_template.render(values), html_template.render(values))


def email_message(receipt: ClaimedReceipt, sender: str, manage_url: str | None = None) -> Message:
    """The whole message. Everything in it comes from the receipt's row, so a resend is the same message, byte for
    byte (the MIME boundary is the receipt's too, not random).

    Built with the ``email.mime`` classes (the compat32 policy) rather than ``EmailMessage``: measured here at
    ~0.7 ms a message against ~4.7 ms, on the engine's event loop, beside the requests it serves. That policy does
    not refuse line breaks in headers, so they are refused here (a campaign name cannot inject headers)."""
    rendered = render(receipt)
    text, html = rendered.text, rendered.html
    if manage_url:
        # Outside the templates, so that a campaign's own template cannot leave it out: every installment's receipt
        # lets the donor change or cancel the plan.
        text += f"\nTo change the amount of your recurring gift or cancel it: {manage_url}\n"
        html += (
            f'<p>To change the amount of your recurring gift or cancel it: <a href="{markupsafe.escape(manage_url)}">'
            "manage your gift</a></p>\n"
        )
    message = MIMEMultipart("alternative", boundary=f"surge-receipt-part-{receipt.id}")
    name, address = email.utils.parseaddr(sender)
    message["From"] = email.utils.formataddr((name, address), charset="utf-8")
    message["To"] = _header(receipt.recipient)
    message["Subject"] = _header(rendered.subject)
    message["Date"] = email.utils.format_datetime(receipt.created_at.astimezone(UTC))
    message["Message-ID"] = _header(receipt.message_id)
    message["X-Surge-Receipt"] = receipt.id
    # typeshed types the charset as str; the stdlib takes a Charset too, which is how quoted-printable is chosen.
    message.attach(MIMEText(text, "plain", _UTF8))  # type: ignore[arg-type]
    message.attach(MIMEText(html, "html", _UTF8))  # type: ignore[arg-type]
    return message


def _header(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"a line break in a header value: {value!r}")
    return value if value.isascii() else Header(value, "utf-8").encode()  # RFC 2047


def message_id_domain(sender: str) -> str:
    """The domain of the sender's address, for Message-IDs (RFC 5322: id-left "@" id-right)."""
    _, address = email.utils.parseaddr(sender)
    domain = address.rpartition("@")[2]
    return domain or "surge.invalid"
