"""The simulated payment processor: Stripe-like behaviour on a record kept in PostgreSQL (schema ``simulator``).

    processor = SimulatedProcessor(pool, SimulatedConfig.from_environment(), name="simulated")
    processor.start()
    result = await processor.charge(request)
    ...
    await processor.close()

``ADAPTER`` declares the kind to the registry (adapters/spec.py). Modules: ``config`` (settings and presets),
``tokens`` (test payment methods and the plan for a charge), ``fees``, ``faults`` (latency, rate cap, outages),
``record`` (what is on record), ``store`` (the SQL), ``webhooks`` (signing and event payloads), ``processor`` (the
Processor implementation and the helpers for tests and audits).
"""

import asyncpg

from adapters.simulated.config import OutageWindow, SimulatedConfig, SimulatedConfigError
from adapters.simulated.faults import use_control_file
from adapters.simulated.processor import DISPUTE_FEE_MINOR, SimulatedProcessor
from adapters.simulated.record import (
    ChargeRecordStatus,
    RecordedCharge,
    RecordedRefund,
    SignedWebhook,
    SimulatorError,
)
from adapters.simulated.webhooks import SIGNATURE_HEADER
from adapters.spec import AdapterSpec


def _build(name: str, pool: asyncpg.Pool, config: SimulatedConfig) -> SimulatedProcessor:
    use_control_file(config.fault_control_file)  # a chaos rehearsal's live faults, from the settings
    return SimulatedProcessor(pool, config, name=name)


# Settings from SURGE_SIM_* variables; payouts pay out the whole balance (store.pay_out).
ADAPTER = AdapterSpec("simulated", SimulatedConfig.from_environment, _build, payouts_sweep_balance=True)

__all__ = [
    "ADAPTER",
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
