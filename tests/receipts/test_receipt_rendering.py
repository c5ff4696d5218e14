"""A receipt's message, without I/O: content, legal text by campaign kind, money by currency exponent, escaping,
per-campaign overrides in a sandbox, headers; the SMTP URL and the settings; card details from the processors."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from datetime import UTC, datetime
from typing import Any

import jinja2
import pytest

from adapters.simulated.tokens import card_details
from adapters.stripe.transformers.charges import charge_result_from_payment_intent
from engine.receipts.outbox import ClaimedReceipt
from engine.receipts.relay import RelayLimits
from engine.receipts.rendering import email_message, message_id_domain, render
from engine.receipts.senders import SmtpServer
from engine.settings import ConfigError, Settings


def receipt(**overrides: Any) -> ClaimedReceipt:
    values: dict[str, Any] = {
        "id": "rcpt_don_1",
        "kind": "donation",
        "recipient": "jane@example.org",
        "message_id": "<rcpt_don_1@example.org>",
        "attempts": 1,
        "created_at": datetime(2026, 12, 3, 23, 59, 30, tzinfo=UTC),
        "donation_id": "don_1",
        "refund_id": None,
        "amount_minor": 25_000,
        "currency": "USD",
        "occurred_at": datetime(2026, 12, 3, 23, 59, 31, tzinfo=UTC),
        "donor_first_name": "Jane",
        "donor_last_name": "Doe",
        "card_brand": "visa",
        "card_last4": "4242",
        "campaign_slug": "spring",
        "campaign_name": "Friends of the Park",
        "campaign_type": "political",
        "legal_text": None,
        "text_template": None,
        "html_template": None,
        "plan_id": None,
    }
    return ClaimedReceipt(**(values | overrides))


def test_a_political_receipt_says_what_was_given_and_that_it_is_not_deductible() -> None:
    rendered = render(receipt())
    for part in (rendered.text, rendered.html):
        for expected in ("Jane Doe", "Friends of the Park", "250.00 USD", "3 December 2026", "don_1"):
            assert expected in part, (expected, part)
        assert "Visa ending in 4242" in part
        assert "not deductible as charitable contributions" in part
        assert "No goods or services" not in part
    assert rendered.subject == "Receipt for your donation to Friends of the Park"


def test_a_nonprofit_receipt_is_the_written_acknowledgment() -> None:
    rendered = render(receipt(campaign_type="nonprofit"))
    for part in (rendered.text, rendered.html):
        assert "No goods or services were provided in exchange for this contribution." in part
        assert "$250 or more" in part
        assert "not deductible" not in part


@pytest.mark.parametrize(
    ("amount_minor", "currency", "expected"),
    [
        (5, "USD", "0.05 USD"),
        (5_000, "JPY", "5000 JPY"),
        (1_234, "BHD", "1.234 BHD"),
        (100_000_00, "EUR", "100000.00 EUR"),
    ],
)
def test_amounts_are_formatted_by_the_currency_exponent(amount_minor: int, currency: str, expected: str) -> None:
    assert expected in render(receipt(amount_minor=amount_minor, currency=currency)).text


def test_without_card_details_the_card_line_is_left_out() -> None:
    rendered = render(receipt(card_brand=None, card_last4=None))
    assert "ending in" not in rendered.text and "Paid with" not in rendered.text


def test_a_refund_receipt_names_the_refund_and_the_donation() -> None:
    rendered = render(receipt(kind="refund", refund_id="re_9", amount_minor=1_000, id="rcpt_re_9"))
    assert rendered.subject == "Refund of your donation to Friends of the Park"
    for expected in ("re_9", "don_1", "10.00 USD", "no longer a contribution"):
        assert expected in rendered.text


def test_html_is_escaped_and_text_is_not() -> None:
    rendered = render(receipt(donor_first_name="<script>x</script>", campaign_name="Parks & Rec"))
    assert "<script>" not in rendered.html and "&lt;script&gt;" in rendered.html
    assert "Parks &amp; Rec" in rendered.html
    assert "<script>x</script>" in rendered.text and "Parks & Rec" in rendered.text


def test_a_campaign_overrides_its_templates_and_legal_text() -> None:
    custom = receipt(
        legal_text="Paid for by Friends of the Park.\n\nNot authorized by any candidate.",
        text_template="Thanks {{ donor_first_name }}: {{ amount }}.\n{% for p in legal_text %}{{ p }}\n{% endfor %}",
        html_template="<p>Thanks {{ donor_first_name }}</p>",
        donor_first_name="<Jo>",
    )
    rendered = render(custom)
    assert (
        rendered.text
        == "Thanks <Jo>: 250.00 USD.\nPaid for by Friends of the Park.\nNot authorized by any candidate.\n"
    )
    assert rendered.html == "<p>Thanks &lt;Jo&gt;</p>"


def test_an_override_runs_in_a_sandbox_and_a_broken_one_raises() -> None:
    with pytest.raises(jinja2.exceptions.SecurityError):
        render(receipt(text_template="{{ amount.__class__.__mro__[1].__subclasses__() }}"))
    with pytest.raises(jinja2.TemplateError):
        render(receipt(text_template="{{ no_such_field }}"))  # StrictUndefined: a typo is an error, not a blank
    with pytest.raises(jinja2.TemplateError):
        render(receipt(html_template="{% if %}"))


def test_the_message_has_both_parts_and_a_stable_message_id() -> None:
    claimed = receipt()
    first = email_message(claimed, "Receipts <receipts@example.org>")
    again = email_message(dataclasses.replace(claimed, attempts=2), "Receipts <receipts@example.org>")
    assert first.as_bytes() == again.as_bytes()  # a resend is the same message
    assert first["Message-ID"] == "<rcpt_don_1@example.org>"
    assert (first["To"], first["From"]) == ("jane@example.org", "Receipts <receipts@example.org>")
    assert first.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in first.get_payload()] == ["text/plain", "text/html"]
    parsed: Any = email.message_from_bytes(first.as_bytes(), policy=email.policy.default)
    assert "250.00 USD" in parsed.get_body(preferencelist=("plain",)).get_content()


def test_an_installments_receipt_carries_the_plans_manage_link_even_with_a_campaigns_template() -> None:
    link = "https://give.example.org/recurring/manage/tok&en"
    claimed = receipt(plan_id="plan_1", text_template="Thanks {{ donor_first_name }}.", html_template="<p>Thanks</p>")
    parsed: Any = email.message_from_bytes(
        email_message(claimed, "Receipts <receipts@example.org>", link).as_bytes(), policy=email.policy.default
    )
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    html = parsed.get_body(preferencelist=("html",)).get_content()
    assert text.startswith("Thanks Jane.") and f"cancel it: {link}" in text
    assert 'href="https://give.example.org/recurring/manage/tok&amp;en"' in html
    plain = email_message(receipt(), "Receipts <receipts@example.org>").as_bytes()
    assert b"manage" not in plain  # a one-time gift's receipt has none


def test_headers_take_unicode_and_refuse_line_breaks() -> None:
    message = email_message(receipt(campaign_name="Amis du Parc Montréal"), "Reçus <recus@example.org>")
    parsed: Any = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Receipt for your donation to Amis du Parc Montréal"
    assert parsed["From"].addresses[0].display_name == "Reçus"
    with pytest.raises(ValueError, match="line break"):
        email_message(receipt(campaign_name="Parks\r\nBcc: everyone@example.org"), "r@example.org")
    assert message_id_domain("Receipts <receipts@example.org>") == "example.org"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://ann:p%40ss@mail.example.org", ("mail.example.org", 587, "ann", "p@ss", False, True)),
        ("smtps://ann:secret@mail.example.org", ("mail.example.org", 465, "ann", "secret", True, False)),
        ("smtp+insecure://127.0.0.1:2525", ("127.0.0.1", 2525, None, None, False, False)),
    ],
)
def test_smtp_urls(url: str, expected: tuple[Any, ...]) -> None:
    server = SmtpServer.from_url(url)
    assert (server.hostname, server.port, server.username, server.password, server.implicit_tls, server.start_tls) == (
        expected
    )


def test_bad_receipt_settings_are_refused_with_their_names() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings(smtp_url="http://mail.example.org", receipts_from="nobody", receipt_attempts_max=0)
    message = str(refused.value)
    assert "SURGE_SMTP_URL" in message and "SURGE_RECEIPTS_FROM" in message and "SURGE_RECEIPT_ATTEMPTS_MAX" in message
    with pytest.raises(ConfigError) as refused:
        Settings(smtp_url="ftp://u:secret@h")
    assert "secret" not in str(refused.value)


def test_retry_delays_double_up_to_the_bound() -> None:
    limits = RelayLimits(retry_delay_s=1.0, retry_delay_max_s=5.0)
    assert [limits.retry_delay(attempt) for attempt in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_the_simulator_reports_stripe_test_cards() -> None:
    assert card_details("pm_card_visa") == ("visa", "4242")
    assert card_details("pm_card_mastercard") == ("mastercard", "4444")
    assert card_details("pm_card_amex") == ("amex", "8431")
    assert card_details("pm_card_fr") == ("visa", "0000")
    assert card_details("pm_not_a_token") is None


def test_stripe_card_details_come_from_the_charge_or_the_payment_method() -> None:
    intent: dict[str, Any] = {"id": "pi_1", "status": "succeeded", "amount": 2500, "currency": "usd"}
    from_charge = {**intent, "latest_charge": {"payment_method_details": {"card": {"brand": "Amex", "last4": "0005"}}}}
    from_method = {**intent, "latest_charge": "ch_1", "payment_method": {"card": {"brand": "visa", "last4": "4242"}}}
    result = charge_result_from_payment_intent(from_charge)
    assert (result.card_brand, result.card_last4) == ("amex", "0005")
    result = charge_result_from_payment_intent(from_method)
    assert (result.card_brand, result.card_last4) == ("visa", "4242")
    result = charge_result_from_payment_intent({**intent, "payment_method": "pm_1"})
    assert (result.card_brand, result.card_last4) == (None, None)
