"""What the simulated processor has on record: its charges and refunds, and the signed webhooks it sends.

These are the processor-side truth that tests and audits compare with the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ledger.money import Money


class ChargeRecordStatus(StrEnum):
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    REQUIRES_ACTION = "requires_action"  # waits for the donor's authentication (3-D Secure)


@dataclass(frozen=True, slots=True)
class RecordedCharge:
    reference: str  # the processor reference (pi_sim_...)
    idempotency_key: str
    donation_id: str
    campaign: str
    payment_method: str
    amount: Money
    fee: Money  # zero unless succeeded
    status: ChargeRecordStatus
    decline_code: str | None
    message: str | None
    created: datetime
    amount_refunded: Money


@dataclass(frozen=True, slots=True)
class RecordedRefund:
    reference: str  # re_sim_...
    idempotency_key: str
    refund_id: str  # the engine's refund id
    charge_reference: str
    amount: Money
    created: datetime


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    """A webhook ready to POST to the engine: these exact payload bytes with these headers."""

    event_id: str
    event_type: str
    object_id: str  # the refund, dispute, payout or charge the event is about
    payload: bytes
    headers: dict[str, str]


class SimulatorError(Exception):
    """A test or audit helper was asked for something the processor would refuse (no such charge, ...)."""
