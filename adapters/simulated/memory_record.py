"""The simulator's charges kept in this process's memory (``SURGE_SIM_RECORD=memory``), for the throughput benchmark.

The database record costs a transaction per batch of charges on the same PostgreSQL Surge uses, so a benchmark
through it measures the stand-in as much as Surge; a real processor's record lives at the processor. This one keeps
what the engine's charge and lookup paths need — one charge per idempotency key, found by key or reference — and
nothing else: it is lost on exit and not shared between processes, so refunds, disputes, payouts, events and the
kill tests need the database record.
"""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.simulated.record import RecordedCharge, SimulatorError
from adapters.simulated.store import ChargeWrite, ChargeWritten, new_charge


class MemoryChargeRecord:
    def __init__(self) -> None:
        self._by_key: dict[str, RecordedCharge] = {}
        self._by_reference: dict[str, RecordedCharge] = {}

    def write(self, write: ChargeWrite) -> ChargeWritten:
        """As the database's write: the first charge for a key is kept, a later one gets it back."""
        existing = self._by_key.get(write.request.idempotency_key)
        if existing is not None:
            return ChargeWritten(existing, created=False)
        charge = new_charge(write, datetime.now(UTC))
        self._by_key[charge.idempotency_key] = charge
        self._by_reference[charge.reference] = charge
        return ChargeWritten(charge, created=True)

    def find(self, idempotency_key: str, reference: str | None) -> RecordedCharge | None:
        charge = self._by_key.get(idempotency_key)
        if charge is None and reference is not None:
            charge = self._by_reference.get(reference)
        return charge

    def charges(self) -> list[RecordedCharge]:
        return sorted(self._by_key.values(), key=lambda charge: (charge.created, charge.reference))


def refuse(what: str) -> SimulatorError:
    return SimulatorError(f"the simulator's in-memory record keeps charges only, not {what} (SURGE_SIM_RECORD)")
