"""Read-only ledger endpoints: balances, an account's entries, the trial balance."""

from __future__ import annotations

from aiohttp import web

from engine.api.errors import ApiError, json_response
from engine.api.requests import ACCOUNT_ENTRIES_LIMIT, authorized, limit_param, parse_time
from engine.api.state import POOL
from engine.keys import Role
from ledger import reads

routes = web.RouteTableDef()


def _balance_body(balance: reads.Balance) -> dict[str, object]:
    return {
        "object": "balance",
        "account": balance.account,
        "currency": balance.currency,
        "posted": balance.posted,
        "pending": balance.pending,
        "version": balance.version,
    }


@routes.get("/v1/ledger/accounts/{code}/balance")
async def account_balance(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    code = request.match_info["code"]
    as_of = request.query.get("as_of")
    async with request.app[POOL].acquire() as connection:
        try:
            if as_of is None:
                balance = await reads.balance(connection, code)
            else:
                balance = await reads.balance_as_of(connection, code, parse_time(as_of, "as_of"))
        except reads.AccountNotFoundError:
            raise ApiError(404, "resource_missing", f"No such account: {code}", param="code") from None
    return json_response(_balance_body(balance))


def _entry_id(cursor: str | None) -> int | None:
    """The entry id to page before; None (no bound) for none, for one that is not a number (str.isdigit also takes
    "²", which int() refuses), and for one past bigint
    (every entry is before it: asking PostgreSQL would be an overflow, answered 500)."""
    if not cursor or not (cursor.isascii() and cursor.isdigit()) or int(cursor) > 2**63 - 1:
        return None
    return int(cursor)


@routes.get("/v1/ledger/accounts/{code}/entries")
async def account_entries(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    code = request.match_info["code"]
    limit = limit_param(request, ACCOUNT_ENTRIES_LIMIT)
    before = request.query.get("starting_after")
    async with request.app[POOL].acquire() as connection:
        try:
            entries = await reads.account_entries(connection, code, limit=limit, before_entry_id=_entry_id(before))
        except reads.AccountNotFoundError:
            raise ApiError(404, "resource_missing", f"No such account: {code}", param="code") from None
    data = [
        {
            "id": e.entry_id,
            "reference": e.reference,
            "kind": e.kind,
            "effective_at": e.effective_at.isoformat(),
            "memo": e.memo,
            "amount": e.amount,
            "pending_amount": e.pending_amount,
        }
        for e in entries
    ]
    return json_response({"object": "list", "data": data, "has_more": len(data) == limit})


@routes.get("/v1/ledger/trial-balance")
async def trial_balance(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    async with request.app[POOL].acquire() as connection:
        lines = await reads.trial_balance(connection)
    totals = reads.trial_balance_totals(lines)
    return json_response(
        {
            "object": "trial_balance",
            "lines": [
                {
                    "account": x.account,
                    "type": x.type.value,
                    "currency": x.currency,
                    "debit": x.debit,
                    "credit": x.credit,
                }
                for x in lines
            ],
            "totals": {c: {"debit": d, "credit": k, "balanced": d == k} for c, (d, k) in totals.items()},
        }
    )
