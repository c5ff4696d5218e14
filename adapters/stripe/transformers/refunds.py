"""Refunds: the refund result a Stripe Refund stands for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import SURGE_REFUND_ID, RefundRequest, RefundResult, RefundStatus


def refund_metadata(request: RefundRequest) -> dict[str, str]:
    """What Surge writes on its Stripe refunds: its refund id lets a refund event name the refund Surge made."""
    metadata = {SURGE_REFUND_ID: request.refund_id, "idempotency_key": request.idempotency_key}
    if request.donation_id is not None:
        metadata["donation_id"] = request.donation_id
    return metadata


def surge_refund_id_of(refund: Mapping[str, Any]) -> str | None:
    metadata = refund.get("metadata")
    value = metadata.get(SURGE_REFUND_ID) if isinstance(metadata, Mapping) else None
    return value if isinstance(value, str) and value else None


def refund_matches(refund: Mapping[str, Any], request: RefundRequest) -> bool:
    """Whether a listed Stripe refund is the one made for ``request``."""
    metadata = refund.get("metadata")
    if not isinstance(metadata, Mapping):
        return False
    return metadata.get(SURGE_REFUND_ID) == request.refund_id or (
        metadata.get("idempotency_key") == request.idempotency_key
    )


def refund_status_of(refund: Mapping[str, Any]) -> RefundStatus:
    """A Stripe Refund's status as the adapter's; UNKNOWN for a status this code does not know."""
    return _STATUSES.get(str(refund.get("status")), RefundStatus.UNKNOWN)


_STATUSES = {
    "succeeded": RefundStatus.SUCCEEDED,
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.FAILED,
}


def refund_result_from_refund(refund: Mapping[str, Any]) -> RefundResult:
    status = refund.get("status")
    reference = refund.get("id")
    if status == "succeeded":
        return RefundResult(RefundStatus.SUCCEEDED, reference)
    if status in ("pending", "requires_action"):
        return RefundResult(RefundStatus.PENDING, reference, message=f"refund {status}; a webhook settles it")
    if status in ("failed", "canceled"):
        reason = refund.get("failure_reason") or status
        return RefundResult(RefundStatus.FAILED, reference, message=f"refund {status} ({reason})")
    return RefundResult(RefundStatus.UNKNOWN, reference, message=f"unrecognised refund status {status!r}")
