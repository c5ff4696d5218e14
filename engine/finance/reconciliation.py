"""Running a reconciliation for one processor, proposing adjustments, and rendering the result for people.

The matching itself is ``engine.finance.reconcile``, and the rendering for people and the API
``engine.finance.reconcile.rendering``; this module knows the engine's side: which processors pay out
their whole balance, the chart of accounts (engine/chart_of_accounts.py) an adjustment posts to, and which campaign a
donation is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from msgspec import Meta, Struct

from adapters.base import Processor
from adapters.registry import SWEEPING_KINDS as _SWEEPING_KINDS
from engine import chart_of_accounts
from engine.audit import Actor, AuditAction, record
from engine.finance.reconcile.adjustments import (
    Adjustment,
    AdjustmentNoLongerAppliesError,
    AdjustmentUnavailableError,
    OpenException,
    correction,
    lock_open_exception,
    lock_processor,
    post_adjustment,
    proposed_legs,
)
from engine.finance.reconcile.history import record_run
from engine.finance.reconcile.ledger_side import AccountPrefixes, load_ledger_items, opening_clearing
from engine.finance.reconcile.matching import reconcile
from engine.finance.reconcile.model import Discrepancy, ExceptionKind, Window
from engine.finance.reconcile.subjects import processor_item
from engine.validation import INTEGER_MAX, INTEGER_MIN, CurrencyCode, Wording, invalid_only
from ledger.accounts import AccountDirectory
from ledger.entries import Leg
from ledger.money import is_currency_code

# Processors whose payouts sweep the whole balance, so that each payout can be checked against the clearing account.
# Stripe pays out the *available* balance (charges become available days later): its payouts are matched one by one.
SWEEPING_KINDS = _SWEEPING_KINDS  # declared by each adapter (AdapterSpec.payouts_sweep_balance)
LEGS_MAX = 10
LEGS_INVALID = f"legs must be a list of 2 to {LEGS_MAX} legs"
LEG_INVALID = "each leg needs an account and a non-zero integer amount (minor units), and an ISO 4217 currency"


class LegIn(Struct, frozen=True):
    """One leg of an adjusting entry as a person gives it (API body, ``--legs``): signed minor units, debits positive.

    Its shape is checked by msgspec (and so stated in ``/openapi.json``); :func:`checked_legs` adds what msgspec
    cannot say: an amount is not zero, and the currency is one of ledger.currencies' ISO 4217 codes."""

    account: Annotated[str, Meta(min_length=1)]
    amount: Annotated[
        int,
        Meta(
            ge=INTEGER_MIN,
            le=INTEGER_MAX,
            description="Minor units, debits positive; never 0 (checked by checked_legs)",
            extra_json_schema={"not": {"const": 0}},
        ),
    ]
    currency: CurrencyCode


LegsIn = Annotated[list[LegIn], Meta(min_length=2, max_length=LEGS_MAX)]
# The API's wording for ``legs`` (engine.api.models.ExceptionResolve), the CLI's messages too.
LEGS_WORDING: Wording = invalid_only(LEGS_INVALID, code="adjustment_invalid", item=LEG_INVALID)


class ProcessorReadError(RuntimeError):
    """The processor's record could not be read; no run was recorded. Try again later."""


def account_prefixes(processor: str) -> AccountPrefixes:
    # Account codes end with the currency (engine/chart_of_accounts.py): the code for an empty currency is their prefix.
    return AccountPrefixes(chart_of_accounts.clearing(processor, ""), chart_of_accounts.fees(processor, ""))


async def run_reconciliation(
    pool: asyncpg.Pool, processor: Processor, kind: str, window: Window, requested_by: str, actor: Actor
) -> int:
    """Reconcile ``processor`` over ``window``, record the run (and in the audit trail, who ran it) and return its id.

    Runs and resolutions of one processor are serialised (``lock_processor``) from the ledger read to the record: a
    run records what the books held when it read them, and the next run starts from there. The lock is held across
    the processor's read, which is bounded by the adapter's own timeouts."""
    started_at = datetime.now(UTC)
    prefixes = account_prefixes(processor.name)
    async with pool.acquire() as connection, connection.transaction():
        await lock_processor(connection, processor.name)
        # The ledger is read before the processor: the ledger lags the processor, never the other way round, so a
        # charge settling during the run shows as missing in the ledger (and clears next run), never as phantom.
        ledger_items = await load_ledger_items(connection, processor.name, prefixes, window)
        opening = None
        if kind in SWEEPING_KINDS:
            opening = await opening_clearing(connection, prefixes, window.read_from)
        try:
            transactions = await processor.balance_transactions(window.read_from, window.read_to)
        except Exception as error:  # any adapter failure: the run cannot be made, and nothing was recorded
            raise ProcessorReadError(f"reading {processor.name}'s balance transactions failed: {error}") from error
        processor_items = [processor_item(t) for t in transactions]
        result = reconcile(window, processor_items, ledger_items, opening_clearing=opening)
        proposals = await _proposals(connection, processor.name, result.discrepancies)
        recorded = await record_run(
            connection,
            processor.name,
            result,
            requested_by=requested_by,
            started_at=started_at,
            extra_detail=proposals,
        )
        changes = {
            "processor": processor.name,
            "from": window.start,
            "to": window.end,
            "exceptions": len(result.discrepancies),
        }
        await record(connection, actor, AuditAction.RECONCILIATION_RUN, f"reconciliation:{recorded.id}", changes)
    return recorded.id


async def _campaigns(connection: asyncpg.Connection, donation_ids: set[str]) -> dict[str, str]:
    rows = await connection.fetch("SELECT id, campaign FROM surge.donations WHERE id = ANY($1::text[])", donation_ids)
    return {row["id"]: row["campaign"] for row in rows}


def _counter_account(processor: str, subject: str, currency: str, campaign: str | None) -> str | None:
    """The account on the other side of the clearing account for this kind of subject."""
    family = subject.split(":", 1)[0]
    if family == "payout":
        return chart_of_accounts.bank(processor, currency)
    if campaign is None:
        return None
    return {
        "charge": chart_of_accounts.contributions,
        "refund": chart_of_accounts.refunds,
        "dispute": chart_of_accounts.disputes,
    }.get(family, lambda _: None)(campaign)


async def _proposals(
    connection: asyncpg.Connection, processor: str, discrepancies: Sequence[Discrepancy]
) -> dict[str, dict[str, Any]]:
    campaigns = await _campaigns(connection, {d.donation_id for d in discrepancies if d.donation_id})
    proposals: dict[str, dict[str, Any]] = {}
    for discrepancy in discrepancies:
        campaign = campaigns.get(discrepancy.donation_id or "")
        try:
            legs = _legs_for(processor, discrepancy, campaign)
        except AdjustmentUnavailableError as error:
            proposals[discrepancy.key] = {"proposed_adjustment": None, "proposal_note": str(error)}
            continue
        proposals[discrepancy.key] = {"proposed_adjustment": [_leg_json(leg) for leg in legs], "campaign": campaign}
    return proposals


def _legs_for(processor: str, discrepancy: Discrepancy, campaign: str | None) -> tuple[Leg, ...]:
    currency = discrepancy.currency or ""
    return proposed_legs(
        discrepancy,
        clearing_account=chart_of_accounts.clearing(processor, currency),
        fees_account=chart_of_accounts.fees(processor, currency),
        counter_account=_counter_account(processor, discrepancy.subject, currency, campaign),
    )


# Kinds whose correction follows from the subject's amounts on each side, and can be worked out again at any time.
RECOMPUTABLE_KINDS = frozenset(
    {
        ExceptionKind.MISSING_IN_LEDGER,
        ExceptionKind.MISSING_AT_PROCESSOR,
        ExceptionKind.AMOUNT_MISMATCH,
        ExceptionKind.FEE_MISMATCH,
    }
)


async def current_discrepancy(connection: asyncpg.Connection, exception: OpenException) -> Discrepancy | None:
    """The exception as the ledger stands now: the processor's side as its run saw it, the ledger's side read again
    over that run's window. ``None`` for kinds that are not a subject's amounts (a currency or payout balance one)."""
    if exception.kind not in RECOMPUTABLE_KINDS or exception.currency is None:
        return None
    prefixes = account_prefixes(exception.processor)
    items = [
        item
        for item in await load_ledger_items(connection, exception.processor, prefixes, exception.window)
        if item.subject == exception.subject and item.currency == exception.currency
    ]
    detail = exception.detail
    donation = detail.get("donation")
    return Discrepancy(
        exception.kind,
        exception.subject,
        exception.currency,
        exception.occurred_at,
        processor_gross=detail.get("processor_gross"),
        processor_fee=detail.get("processor_fee"),
        ledger_gross=sum(item.clearing + item.fee for item in items) if items else None,
        ledger_fee=sum(item.fee for item in items) if items else None,
        donation_id=donation if isinstance(donation, str) else None,
    )


def _leg_json(leg: Leg) -> dict[str, Any]:
    return {"account": leg.account, "amount": leg.amount_minor, "currency": leg.currency}


class LegsInvalidError(ValueError):
    pass


def legs_from_json(value: Any) -> tuple[Leg, ...]:
    """``[{"account", "amount", "currency"}, ...]`` as read from JSON (the CLI's ``--legs``), checked."""
    try:
        legs = msgspec.convert(value, LegsIn)
    except msgspec.ValidationError as error:
        raise LegsInvalidError(LEG_INVALID if " - at `$[" in str(error) else LEGS_INVALID) from None
    return checked_legs(legs)


def checked_legs(legs: Sequence[LegIn]) -> tuple[Leg, ...]:
    """The ledger's legs for legs whose shape is checked already; what msgspec cannot express is checked here."""
    for leg in legs:
        if leg.amount == 0 or not is_currency_code(leg.currency.upper()):
            raise LegsInvalidError(LEG_INVALID)
    return tuple(Leg(leg.account, leg.amount, leg.currency.upper()) for leg in legs)


async def resolve(
    connection: asyncpg.Connection,
    directory: AccountDirectory,
    exception_id: int,
    *,
    memo: str,
    resolved_by: str,
    actor: Actor,
    legs: tuple[Leg, ...] | None = None,
) -> Adjustment:
    """Resolve an open exception with ``legs``, or with the correction worked out against the ledger as it is now.

    Refused (``ExceptionNotOpenError``) when it was resolved already, when a later run cleared it, or when the
    ledger has moved since its run so that the subject now agrees; the proposal shown at run time is never posted
    blindly, as the books may have moved under it."""
    if not memo.strip():
        raise ValueError("an adjustment needs a memo saying why")
    async with connection.transaction():
        found = await lock_open_exception(connection, exception_id)
        current = await current_discrepancy(connection, found)
        if current is not None and correction(current) == (0, 0):
            raise AdjustmentNoLongerAppliesError(
                f"the ledger now agrees with the processor on {found.subject} ({found.kind.value}): nothing to correct"
            )
        if legs is None:
            if current is None:
                note = found.detail.get("proposal_note") or "no adjustment was proposed"
                raise LegsInvalidError(f"{note}; give the legs of the adjusting entry")
            campaigns = await _campaigns(connection, {current.donation_id} if current.donation_id else set())
            try:
                legs = _legs_for(found.processor, current, campaigns.get(current.donation_id or ""))
            except AdjustmentUnavailableError as error:
                raise LegsInvalidError(f"{error}; give the legs of the adjusting entry") from None
        adjustment = await post_adjustment(connection, directory, found, legs, memo=memo, resolved_by=resolved_by)
        changes = {"memo": memo, "entry": adjustment.entry_reference}
        await record(connection, actor, AuditAction.EXCEPTION_RESOLVED, f"exception:{exception_id}", changes)
        return adjustment
