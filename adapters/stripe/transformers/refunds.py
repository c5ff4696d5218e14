"""Refunds: the refund result a Stripe Refund stands for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.base import RefundResult, RefundStatus


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
