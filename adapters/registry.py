"""The explicit registry of processor kinds: kind name → factory. Adding a processor means adding a line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import asyncpg

from adapters.base import Processor

ProcessorFactory = Callable[[str, asyncpg.Pool, Mapping[str, str]], Processor]


def _simulated(name: str, pool: asyncpg.Pool, environment: Mapping[str, str]) -> Processor:
    from adapters.simulated import SimulatedConfig, SimulatedProcessor

    return SimulatedProcessor(pool, SimulatedConfig.from_environment(environment), name=name)


def _stripe(name: str, pool: asyncpg.Pool, environment: Mapping[str, str]) -> Processor:
    from adapters.stripe import StripeConfig, StripeProcessor

    return StripeProcessor(StripeConfig.from_environment(environment), name=name)


REGISTRY: dict[str, ProcessorFactory] = {"simulated": _simulated, "stripe": _stripe}


def processor_environment(name: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The environment a processor named ``name`` reads: ``SURGE_PROCESSOR_<NAME>_<VAR>`` overrides ``<VAR>``, so
    two accounts of one kind (a primary and a failover Stripe account) can be configured side by side."""
    prefix = f"SURGE_PROCESSOR_{name.upper().replace('-', '_')}_"
    merged = dict(environment)
    merged.update({key[len(prefix) :]: value for key, value in environment.items() if key.startswith(prefix)})
    return merged


def check_configuration(specs: list[tuple[str, str]], environment: Mapping[str, str]) -> list[str]:
    """Every problem with the processors' configuration, found before anything starts."""
    from adapters.simulated import SimulatedConfig
    from adapters.stripe import StripeConfig

    readers: dict[str, Callable[[Mapping[str, str]], object]] = {
        "simulated": SimulatedConfig.from_environment,
        "stripe": StripeConfig.from_environment,
    }
    problems = []
    for name, kind in specs:
        try:
            readers[kind](processor_environment(name, environment))
        except ValueError as error:
            problems.append(f"processor {name} ({kind}): {error}")
    return problems


def build_processor(kind: str, name: str, pool: asyncpg.Pool, environment: Mapping[str, str]) -> Processor:
    try:
        factory = REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown processor kind {kind!r}; known: {sorted(REGISTRY)}") from None
    return factory(name, pool, processor_environment(name, environment))
