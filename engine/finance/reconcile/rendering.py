"""A reconciliation for people and programs: a run, its exceptions and their adjustments as JSON (the API, the
CLI's --json), as a report (CSV rows) and as text for a terminal. Amounts are formatted with the ISO minor unit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.finance.reconcile.adjustments import Adjustment
from engine.finance.reconcile.history import ExceptionView, RunView
from engine.finance.reports.report import Report
from ledger.currencies import format_minor


def adjustment_json(adjustment: Adjustment | None) -> dict[str, Any] | None:
    if adjustment is None:
        return None
    return {
        "object": "reconciliation_adjustment",
        "id": adjustment.id,
        "exception": adjustment.exception_id,
        "entry": adjustment.entry_reference,
        "entry_id": adjustment.entry_id,
        "resolved_by": adjustment.resolved_by,
        "resolved_at": adjustment.resolved_at.isoformat(),
        "memo": adjustment.memo,
    }


def _exception_fields(view: ExceptionView) -> dict[str, Any]:
    """What the JSON view and the CSV row of an exception both say, as values."""
    return {
        "id": view.id,
        "status": view.status.value,
        "kind": view.kind.value,
        "subject": view.subject,
        "currency": view.currency,
        "processor_amount": view.processor_amount,
        "ledger_amount": view.ledger_amount,
        "difference": view.difference,
        "occurred_at": view.occurred_at,
        "donation": view.detail.get("donation"),
        "processor_ids": view.detail.get("processor_ids", []),
        "ledger_references": view.detail.get("ledger_references", []),
        "note": view.detail.get("note") or view.detail.get("proposal_note") or "",
    }


def exception_json(view: ExceptionView) -> dict[str, Any]:
    fields = _exception_fields(view)
    return {
        "object": "reconciliation_exception",
        **fields,
        "processor": view.processor,
        "occurred_at": view.occurred_at.isoformat(),
        "proposed_adjustment": view.detail.get("proposed_adjustment"),
        "first_run": view.first_run_id,
        "last_run": view.last_run_id,
        "cleared_by_run": view.cleared_run_id,
        "adjustment": adjustment_json(view.adjustment),
    }


def run_json(run: RunView, *, with_exceptions: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "object": "reconciliation",
        "id": run.id,
        "processor": run.processor,
        "from": run.window_from.isoformat(),
        "to": run.window_to.isoformat(),
        "slack_s": run.slack_s,
        "requested_by": run.requested_by,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "matched": run.matched,
        "exception_count": run.exception_count,
        "result_digest": run.result_digest.hex(),
        "same_result_as": run.same_result_as,
        "summary": run.summary,
    }
    if with_exceptions:
        body["exceptions"] = [exception_json(x) for x in run.exceptions]
    return body


EXCEPTION_COLUMNS = (
    "id",
    "status",
    "kind",
    "subject",
    "currency",
    "processor_amount",
    "ledger_amount",
    "difference",
    "occurred_at",
    "donation",
    "processor_ids",
    "ledger_references",
    "note",
    "proposed_adjustment",
    "resolved_by",
    "resolved_at",
    "memo",
)


def exceptions_report(exceptions: Sequence[ExceptionView], run_id: int | None = None) -> Report:
    rows = []
    for view in exceptions:
        proposed = view.detail.get("proposed_adjustment") or []
        fields = _exception_fields(view)
        rows.append(
            {
                **fields,
                "processor_ids": " ".join(fields["processor_ids"]),
                "ledger_references": " ".join(fields["ledger_references"]),
                "proposed_adjustment": "; ".join(
                    f"{leg['account']} {_amount(leg['amount'], leg['currency'])}" for leg in proposed
                ),
                "resolved_by": view.adjustment.resolved_by if view.adjustment else None,
                "resolved_at": view.adjustment.resolved_at if view.adjustment else None,
                "memo": view.adjustment.memo if view.adjustment else None,
            }
        )
    return Report(
        "reconciliation_exceptions",
        EXCEPTION_COLUMNS,
        rows,
        frozenset({"processor_amount", "ledger_amount", "difference"}),
        parameters={"run": run_id},
    )


def _amount(value: int | None, currency: str | None) -> str:
    if value is None:
        return "-"
    if not currency:  # no currency, no decimals to place: the raw minor units, said plainly
        return f"{value} minor units"
    return f"{format_minor(value, currency)} {currency}"


def summary_text(run: RunView) -> str:
    """The run for a person at a terminal: window, totals per currency, then one line per exception."""
    lines = [
        f"Reconciliation #{run.id} of {run.processor}: {run.window_from.isoformat()} .. {run.window_to.isoformat()}"
        f" (slack {run.slack_s} s), by {run.requested_by}",
        f"  matched: {run.matched}   exceptions: {run.exception_count}"
        + (f"   (same result as run #{run.same_result_as})" if run.same_result_as else ""),
    ]
    for currency, totals in sorted(run.summary.items()):
        lines.append(
            f"  {currency}: processor charges {_amount(totals['processor_charges'], currency)}, "
            f"refunds {_amount(totals['processor_refunds'], currency)}, "
            f"disputes {_amount(totals['processor_disputes'], currency)}, "
            f"fees {_amount(totals['processor_fees'], currency)}, "
            f"payouts {_amount(totals['processor_payouts'], currency)}"
        )
        lines.append(
            f"  {currency}: payouts processor {_amount(totals['processor_payouts'], currency)} vs ledger "
            f"{_amount(totals['ledger_payouts'], currency)}; net movement processor "
            f"{_amount(totals['processor_net_movement'], currency)} vs clearing account "
            f"{_amount(totals['ledger_clearing_movement'], currency)}"
        )
    if run.exceptions:
        lines.append("  exceptions:")
    for x in run.exceptions:
        lines.append(
            f"    #{x.id} [{x.status.value}] {x.kind.value} {x.subject} {x.currency or ''}: processor "
            f"{_amount(x.processor_amount, x.currency)}, ledger {_amount(x.ledger_amount, x.currency)}"
            + (f" — {x.detail['note']}" if x.detail.get("note") else "")
        )
    if not run.exceptions:
        lines.append("  no exceptions: the ledger agrees with the processor")
    return "\n".join(lines)
