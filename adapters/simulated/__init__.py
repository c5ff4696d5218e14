"""The simulated payment processor: Stripe-like behaviour on a record kept in PostgreSQL (schema ``simulator``)."""

from adapters.simulated.config import OutageWindow, SimulatedConfig, SimulatedConfigError

__all__ = ["OutageWindow", "SimulatedConfig", "SimulatedConfigError"]
