"""The explicit registry of processor kinds. Adding a processor means writing its package with an ``ADAPTER``
(adapters/spec.py) and adding it to ``REGISTRY`` below; the engine's list of kinds and reconciliation's payout
treatment are derived from here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from adapters.base import Processor
from adapters.simulated import ADAPTER as SIMULATED
from adapters.spec import AdapterSpec
from adapters.stripe import ADAPTER as STRIPE

REGISTRY: dict[str, AdapterSpec[Any]] = {adapter.kind: adapter for adapter in (SIMULATED, STRIPE)}

KINDS = frozenset(REGISTRY)
# Kinds whose payouts sweep the whole balance (reconciliation checks each payout against the clearing account).
SWEEPING_KINDS = frozenset(kind for kind, adapter in REGISTRY.items() if adapter.payouts_sweep_balance)


def processor_environment(name: str, environment: Mapping[str, str]) -> dict[str, str]:
    """The environment a processor named ``name`` reads: ``SURGE_PROCESSOR_<NAME>_<VAR>`` overrides ``<VAR>``, so
    two accounts of one kind (a primary and a failover Stripe account) can be configured side by side."""
    prefix = f"SURGE_PROCESSOR_{name.upper().replace('-', '_')}_"
    merged = dict(environment)
    merged.update({key[len(prefix) :]: value for key, value in environment.items() if key.startswith(prefix)})
    return merged


def check_configuration(specs: list[tuple[str, str]], environment: Mapping[str, str]) -> list[str]:
    """Every problem with the processors' configuration, found before anything starts."""
    problems = []
    for name, kind in specs:
        try:
            REGISTRY[kind].read_settings(processor_environment(name, environment))
        except ValueError as error:
            problems.append(f"processor {name} ({kind}): {error}")
    return problems


def build_processor(kind: str, name: str, pool: asyncpg.Pool, environment: Mapping[str, str]) -> Processor:
    try:
        adapter = REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown processor kind {kind!r}; known: {sorted(REGISTRY)}") from None
    return adapter.create(name, pool, processor_environment(name, environment))
