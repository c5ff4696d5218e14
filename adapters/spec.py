"""How a processor kind declares itself, in one place: its name, its settings, how it is built, how it pays out.

Each adapter package exports one ``ADAPTER = AdapterSpec(...)`` and ``adapters/registry.py`` lists it; everything
the engine needs to know about a kind (which ``SURGE_PROCESSORS`` kinds exist, how to check a configuration before
start-up, how reconciliation treats payouts) is derived from these specs, so adding a processor touches one place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

from adapters.base import Processor

SettingsT = TypeVar("SettingsT")


@dataclass(frozen=True, slots=True)
class AdapterSpec(Generic[SettingsT]):
    kind: str  # the kind in SURGE_PROCESSORS ("name=kind", or just "kind")
    # The adapter's settings from an environment; raises a ValueError (a toolkit SettingsError) naming each bad
    # variable. The environment given has the processor's own SURGE_PROCESSOR_<NAME>_ overrides applied already.
    read_settings: Callable[[Mapping[str, str]], SettingsT]
    # (processor name, database pool, settings) -> the processor; the name is also its account and ledger prefix.
    build: Callable[[str, asyncpg.Pool, SettingsT], Processor]
    # True: each payout takes the whole balance, so reconciliation checks every payout against the clearing
    # account (the simulator). False: payouts take the *available* balance and are matched one by one (Stripe).
    payouts_sweep_balance: bool

    def create(self, name: str, pool: asyncpg.Pool, environment: Mapping[str, str]) -> Processor:
        return self.build(name, pool, self.read_settings(environment))
