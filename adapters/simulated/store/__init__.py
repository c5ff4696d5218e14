"""The simulated processor's record in PostgreSQL (schema ``simulator``, migration 0003): reads and writes.

Charges and refunds are the hot path: they are written through a group committer, many per transaction, with
set-based statements. Disputes, payouts and pending resolutions are rare and take one transaction each.

Modules, by the job each does: ``charges`` (write, read and settle charges), ``refunds``, ``disputes``, ``balance``
(balance transactions and payouts) and ``events`` (stored webhook events, ids). The processor uses them through this
package, as ``store.write_charges(...)``.
"""

from adapters.simulated.store.balance import balance_transactions, insert_balance_transactions, pay_out
from adapters.simulated.store.charges import (
    IDEMPOTENCY_MISMATCH_MESSAGE,
    ChargeWrite,
    ChargeWritten,
    all_charges,
    charge_by_reference,
    charges_by_keys,
    new_charge,
    resolve_pending,
    write_charges,
)
from adapters.simulated.store.disputes import close_dispute, create_dispute
from adapters.simulated.store.events import StoredEvent, insert_events, new_id, stored_event, stored_events
from adapters.simulated.store.refunds import RefundWrite, all_refunds, refund_for, write_refunds

__all__ = [
    "IDEMPOTENCY_MISMATCH_MESSAGE",
    "ChargeWrite",
    "ChargeWritten",
    "RefundWrite",
    "StoredEvent",
    "all_charges",
    "all_refunds",
    "balance_transactions",
    "charge_by_reference",
    "charges_by_keys",
    "close_dispute",
    "create_dispute",
    "insert_balance_transactions",
    "insert_events",
    "new_charge",
    "new_id",
    "pay_out",
    "refund_for",
    "resolve_pending",
    "stored_event",
    "stored_events",
    "write_charges",
    "write_refunds",
]
