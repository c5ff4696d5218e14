"""The chart of accounts the engine posts to. Signs follow the ledger: debits positive, credits negative.

- ``clearing:<processor>:<CUR>`` (asset): money the processor holds for us — up with each charge, down with
  refunds, disputes, fees and payouts.
- ``bank:<processor>:<CUR>`` (asset): payouts that reached the bank.
- ``fees:<processor>:<CUR>`` (expense): processing and dispute fees.
- ``contributions:<campaign>`` (revenue): gross contributions.
- ``refunds:<campaign>``, ``disputes:<campaign>`` (revenue, contra): what was given back, kept apart so reports
  show gross, refunds and disputes separately.

A $50.00 donation through the simulated processor with a $1.40 fee::

    debit  clearing:simulated:USD   5000     credit contributions:demo   5000
    debit  fees:simulated:USD        140     credit clearing:simulated:USD 140

A fee is booked in the currency the processor charged it in, which need not be the donation's: Stripe takes fees in
the balance's (settlement) currency. A €50.00 donation settled into a USD balance with a $1.75 fee is two entries,
each balanced in its own currency; the fee's accounts are opened on demand (:func:`ensure_fee_accounts`)::

    debit  clearing:stripe:EUR      5000     credit contributions:demo   5000
    debit  fees:stripe:USD           175     credit clearing:stripe:USD   175
"""

from __future__ import annotations

import asyncpg

from ledger.accounts import AccountType, ensure_account


def clearing(processor: str, currency: str) -> str:
    return f"clearing:{processor}:{currency}"


def bank(processor: str, currency: str) -> str:
    return f"bank:{processor}:{currency}"


def fees(processor: str, currency: str) -> str:
    return f"fees:{processor}:{currency}"


def contributions(campaign: str) -> str:
    return f"contributions:{campaign}"


def refunds(campaign: str) -> str:
    return f"refunds:{campaign}"


def disputes(campaign: str) -> str:
    return f"disputes:{campaign}"


async def ensure_campaign_accounts(connection: asyncpg.Connection, campaign: str, currency: str) -> None:
    for code in (contributions(campaign), refunds(campaign), disputes(campaign)):
        await ensure_account(connection, code, AccountType.REVENUE, currency, campaign=campaign)


async def ensure_processor_accounts(connection: asyncpg.Connection, processor: str, currency: str) -> None:
    await ensure_account(connection, clearing(processor, currency), AccountType.ASSET, currency)
    await ensure_account(connection, bank(processor, currency), AccountType.ASSET, currency)
    await ensure_account(connection, fees(processor, currency), AccountType.EXPENSE, currency)


async def ensure_fee_accounts(connection: asyncpg.Connection, processor: str, currency: str) -> None:
    """The two accounts a fee in ``currency`` posts to (fee expense, processor clearing), opened if missing."""
    await ensure_account(connection, clearing(processor, currency), AccountType.ASSET, currency)
    await ensure_account(connection, fees(processor, currency), AccountType.EXPENSE, currency)
