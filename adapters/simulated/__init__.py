"""The simulated payment processor: Stripe-like behaviour on a record kept in PostgreSQL (schema ``simulator``).

    processor = SimulatedProcessor(pool, SimulatedConfig.from_environment(), name="simulated")
    processor.start()
    result = await processor.charge(request)
    ...
    await processor.close()

Modules: ``config`` (settings and presets), ``tokens`` (test payment methods and the plan for a charge), ``fees``,
``faults`` (latency, rate cap, outages), ``record`` (what is on record), ``store`` (the SQL), ``webhooks`` (signing
and event payloads), ``processor`` (the Processor implementation and the helpers for tests and audits).
"""

from adapters.simulated.config import OutageWindow, SimulatedConfig, SimulatedConfigError
from adapters.simulated.processor import DISPUTE_FEE_MINOR, SimulatedProcessor
from adapters.simulated.record import (
    ChargeRecordStatus,
    RecordedCharge,
    RecordedRefund,
    SignedWebhook,
    SimulatorError,
)
from adapters.simulated.webhooks import SIGNATURE_HEADER

__all__ = [
    "DISPUTE_FEE_MINOR",
    "SIGNATURE_HEADER",
    "ChargeRecordStatus",
    "OutageWindow",
    "RecordedCharge",
    "RecordedRefund",
    "SignedWebhook",
    "SimulatedConfig",
    "SimulatedConfigError",
    "SimulatedProcessor",
    "SimulatorError",
]
