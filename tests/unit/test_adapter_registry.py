"""The adapter registry: each processor kind declares itself once (adapters/spec.py) and the engine derives from it."""

from __future__ import annotations

import pytest

from adapters import registry
from adapters.simulated import ADAPTER as SIMULATED
from adapters.simulated import SimulatedConfig, SimulatedConfigError
from adapters.spec import AdapterSpec
from adapters.stripe import ADAPTER as STRIPE
from adapters.stripe import StripeConfig
from engine.finance.reconciliation import SWEEPING_KINDS
from engine.settings import PROCESSOR_KINDS


def test_every_kind_is_registered_under_its_own_name() -> None:
    assert registry.REGISTRY == {"simulated": SIMULATED, "stripe": STRIPE}
    assert all(isinstance(adapter, AdapterSpec) for adapter in registry.REGISTRY.values())


def test_the_engine_derives_its_kinds_and_payout_treatment_from_the_registry() -> None:
    assert PROCESSOR_KINDS == frozenset(registry.REGISTRY) == {"simulated", "stripe"}
    assert frozenset({"simulated"}) == SWEEPING_KINDS  # Stripe pays out the available balance, matched payout by payout


def test_each_adapter_reads_its_own_settings() -> None:
    assert SIMULATED.read_settings({"SURGE_SIM_SEED": "4"}) == SimulatedConfig(seed=4)
    key = "sk_test_abcdefgh"
    assert STRIPE.read_settings({"STRIPE_SECRET_KEY": key}) == StripeConfig(secret_key=key)


def test_configuration_problems_name_the_processor_and_the_variable() -> None:
    environment = {"SURGE_SIM_DECLINE_RATE": "lots", "SURGE_PROCESSOR_BACKUP_STRIPE_SECRET_KEY": "sk_test_abcdefgh"}

    problems = registry.check_configuration([("main", "simulated"), ("backup", "stripe")], environment)

    assert len(problems) == 1
    assert problems[0].startswith("processor main (simulated): invalid simulated processor configuration")
    assert "SURGE_SIM_DECLINE_RATE must be a number, got 'lots'" in problems[0]


def test_a_processors_own_variables_override_the_shared_ones() -> None:
    environment = {"SURGE_SIM_SEED": "1", "SURGE_PROCESSOR_SIM_B_SURGE_SIM_SEED": "2"}

    assert SIMULATED.read_settings(registry.processor_environment("sim-b", environment)).seed == 2
    assert SIMULATED.read_settings(registry.processor_environment("sim-a", environment)).seed == 1


def test_a_bad_setting_raises_the_adapters_own_error() -> None:
    with pytest.raises(SimulatedConfigError) as raised:
        SIMULATED.read_settings({"SURGE_SIM_PRESET": "fast"})

    assert raised.value.problems == ("SURGE_SIM_PRESET must be one of default, realistic, got 'fast'",)
