"""Accounts: creation and a per-process directory from account code to (id, currency).

Accounts are never changed once created, so the directory can cache them for the life of the process.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from ledger.money import is_currency_code


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    REVENUE = "revenue"
    EXPENSE = "expense"

    @property
    def normal_sign(self) -> int:
        """+1 where the normal balance is a debit (assets, expenses), -1 where it is a credit."""
        return 1 if self in (AccountType.ASSET, AccountType.EXPENSE) else -1


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    code: str
    type: AccountType
    currency: str
    campaign: str | None


class AccountConflictError(Exception):
    """An account with this code exists with a different type, currency or campaign."""


async def ensure_account(
    connection: asyncpg.Connection,
    code: str,
    type: AccountType,
    currency: str,
    campaign: str | None = None,
) -> Account:
    """Create the account (and its balance row) unless it exists; an existing one must match."""
    if not is_currency_code(currency):
        raise ValueError(f"currency must be an upper-case ISO 4217 code, got {currency!r}")
    async with connection.transaction():
        row = await connection.fetchrow(
            """WITH created AS (
                   INSERT INTO ledger.accounts (code, type, currency, campaign) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (code) DO NOTHING
                   RETURNING id, code, type, currency, campaign),
               balance AS (INSERT INTO ledger.balances (account_id) SELECT id FROM created)
               SELECT * FROM created""",
            code,
            type.value,
            currency,
            campaign,
        )
        if row is None:
            row = await connection.fetchrow(
                "SELECT id, code, type, currency, campaign FROM ledger.accounts WHERE code = $1", code
            )
    account = _account(row)
    if (account.type, account.currency, account.campaign) != (type, currency, campaign):
        raise AccountConflictError(
            f"account {code} exists as {account.type} {account.currency} campaign={account.campaign!r}"
        )
    return account


def _account(row: asyncpg.Record) -> Account:
    return Account(row["id"], row["code"], AccountType(row["type"]), row["currency"].strip(), row["campaign"])


class AccountDirectory:
    """Code → account, cached: accounts are immutable once created."""

    def __init__(self) -> None:
        self._by_code: dict[str, Account] = {}

    def cached(self, code: str) -> Account | None:
        return self._by_code.get(code)

    async def load(self, connection: asyncpg.Connection, codes: set[str]) -> dict[str, Account]:
        """Return the accounts among ``codes`` that exist; unknown codes are simply absent."""
        missing = [code for code in codes if code not in self._by_code]
        if missing:
            rows = await connection.fetch(
                "SELECT id, code, type, currency, campaign FROM ledger.accounts WHERE code = ANY($1::text[])",
                missing,
            )
            for row in rows:
                self._by_code[row["code"]] = _account(row)
        return {code: self._by_code[code] for code in codes if code in self._by_code}
