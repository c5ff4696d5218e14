"""Finance endpoints (finance key): reconciliation runs, their exceptions and adjustments, and reports.

Every list and report answers JSON (money in minor units) or, with ``?format=csv``, CSV (decimal amounts).
"""

from __future__ import annotations

from datetime import date, timedelta

from aiohttp import web

from adapters.base import Processor
from engine.api.errors import ApiError, json_response
from engine.api.models import WINDOW_DAYS_MAX, ExceptionResolve, ReconciliationCreate
from engine.api.replica import read_connection
from engine.api.requests import (
    RECONCILIATION_EXCEPTIONS_LIMIT,
    RECONCILIATIONS_LIMIT,
    actor,
    authorized,
    int_param,
    json_body,
    limit_param,
    parse_date,
    parse_time,
)
from engine.api.state import ACCOUNTS, POOL, PROCESSORS, SETTINGS
from engine.finance import reconciliation
from engine.finance.reconcile import rendering
from engine.finance.reconcile.adjustments import AdjustmentRefusedError, ExceptionNotFoundError, ExceptionNotOpenError
from engine.finance.reconcile.history import ExceptionStatus, exception_view, list_exceptions, list_runs, run_view
from engine.finance.reconcile.model import Window
from engine.finance.reports.catalog import ReportQuery, build_report
from engine.finance.reports.report import Report
from engine.keys import Role
from engine.validation import decode

routes = web.RouteTableDef()

AMOUNT_PARAM_MAX = 10**12


# ---- parameters --------------------------------------------------------------------------------------------------


def wants_csv(request: web.Request) -> bool:
    requested = request.query.get("format", "json")
    if requested not in ("json", "csv"):
        raise ApiError(400, "parameter_invalid", "format must be json or csv", param="format")
    return requested == "csv"


def report_response(request: web.Request, report: Report) -> web.Response:
    if wants_csv(request):
        return web.Response(
            text=report.as_csv(),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{report.name}.csv"'},
        )
    return json_response(report.as_json())


def date_param(request: web.Request, name: str) -> date | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    return parse_date(raw, name)


def optional_int(request: web.Request, name: str) -> int | None:
    if name not in request.query:
        return None
    return int_param(request, name, 0, 0, AMOUNT_PARAM_MAX)


def _processor(request: web.Request, name: str) -> tuple[Processor, str]:
    kinds = dict(request.app[SETTINGS].processor_specs())
    for processor, _ in request.app[PROCESSORS]:
        if processor.name == name:
            return processor, kinds.get(name, "")
    raise ApiError(404, "resource_missing", f"No such processor: '{name}'", param="processor")


# ---- reconciliation ----------------------------------------------------------------------------------------------


@routes.post("/v1/reconciliations")
async def create_reconciliation(request: web.Request) -> web.Response:
    key = await authorized(request, Role.FINANCE)
    body = decode(await json_body(request), ReconciliationCreate)
    processor, kind = _processor(request, body.processor)
    start, end = parse_time(body.start, "from"), parse_time(body.end, "to")
    slack_s = body.slack_s
    if not start < end or end - start > timedelta(days=WINDOW_DAYS_MAX):
        raise ApiError(
            400, "parameter_invalid", f"from must be before to, at most {WINDOW_DAYS_MAX} days apart", param="to"
        )
    window = Window(start, end, timedelta(seconds=slack_s))
    pool = request.app[POOL]
    try:
        run_id = await reconciliation.run_reconciliation(
            pool, processor, kind, window, f"key:{key.id}", actor(request, key)
        )
    except reconciliation.ProcessorReadError as error:
        raise ApiError(503, "processor_unavailable", str(error), retry_after_s=30) from None
    async with pool.acquire() as connection:
        run = await run_view(connection, run_id)
    if run is None:
        raise RuntimeError(f"reconciliation run {run_id} vanished after it was recorded")
    return json_response(rendering.run_json(run), status=201)


@routes.get("/v1/reconciliations")
async def list_reconciliations(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    limit = limit_param(request, RECONCILIATIONS_LIMIT)
    async with read_connection(request) as connection:
        runs = await list_runs(connection, processor=request.query.get("processor"), limit=limit)
    data = [rendering.run_json(run, with_exceptions=False) for run in runs]
    return json_response({"object": "list", "data": data, "has_more": len(data) == limit})


@routes.get("/v1/reconciliations/exceptions")
async def list_reconciliation_exceptions(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    raw_status = request.query.get("status")
    try:
        status = ExceptionStatus(raw_status) if raw_status else None
    except ValueError:
        raise ApiError(400, "parameter_invalid", "status must be open, resolved or cleared", param="status") from None
    limit = limit_param(request, RECONCILIATION_EXCEPTIONS_LIMIT)
    async with read_connection(request) as connection:
        found = await list_exceptions(connection, processor=request.query.get("processor"), status=status, limit=limit)
    if wants_csv(request):
        return report_response(request, rendering.exceptions_report(found))
    data = [rendering.exception_json(x) for x in found]
    return json_response({"object": "list", "data": data, "has_more": len(data) == limit})


@routes.get(r"/v1/reconciliations/{id:\d{1,18}}")
async def read_reconciliation(request: web.Request) -> web.Response:
    await authorized(request, Role.FINANCE)
    run_id = int(request.match_info["id"])
    async with request.app[POOL].acquire() as connection:
        run = await run_view(connection, run_id)
    if run is None:
        raise ApiError(404, "resource_missing", f"No such reconciliation: {run_id}", param="id")
    if wants_csv(request):
        return report_response(request, rendering.exceptions_report(run.exceptions, run.id))
    return json_response(rendering.run_json(run))


@routes.post(r"/v1/reconciliations/exceptions/{id:\d{1,18}}/resolve")
async def resolve_exception(request: web.Request) -> web.Response:
    key = await authorized(request, Role.FINANCE)
    exception_id = int(request.match_info["id"])
    body = decode(await json_body(request), ExceptionResolve)
    memo = body.memo
    try:
        legs = reconciliation.checked_legs(body.legs) if body.legs is not None else None
        async with request.app[POOL].acquire() as connection:
            await reconciliation.resolve(
                connection,
                request.app[ACCOUNTS],
                exception_id,
                memo=memo,
                resolved_by=f"key:{key.id}",
                actor=actor(request, key),
                legs=legs,
            )
            view = await exception_view(connection, exception_id)
    except ExceptionNotFoundError:
        raise ApiError(404, "resource_missing", f"No such exception: {exception_id}", param="id") from None
    except ExceptionNotOpenError as error:  # resolved already, cleared by a later run, or the ledger agrees now
        raise ApiError(409, error.code, str(error), param="id") from None
    except (reconciliation.LegsInvalidError, AdjustmentRefusedError) as error:
        raise ApiError(400, "adjustment_invalid", str(error), param="legs") from None
    if view is None:
        raise RuntimeError(f"exception {exception_id} vanished after it was resolved")
    return json_response(rendering.exception_json(view), status=201)


# ---- reports -----------------------------------------------------------------------------------------------------


async def _report(request: web.Request, name: str, query: ReportQuery) -> web.Response:
    await authorized(request, Role.FINANCE)
    async with read_connection(request) as connection:
        report = await build_report(connection, name, query)
    return report_response(request, report)


@routes.get("/v1/reports/trial-balance")
async def trial_balance_report(request: web.Request) -> web.Response:
    as_of = request.query.get("as_of")
    return await _report(request, "trial-balance", ReportQuery(as_of=parse_time(as_of, "as_of") if as_of else None))


@routes.get("/v1/reports/campaign-days")
async def campaign_days_report(request: web.Request) -> web.Response:
    query = ReportQuery(
        campaign=request.query.get("campaign"), date_from=date_param(request, "from"), date_to=date_param(request, "to")
    )
    return await _report(request, "campaign-days", query)


@routes.get("/v1/reports/refcodes")
async def refcodes_report(request: web.Request) -> web.Response:
    query = ReportQuery(
        campaign=request.query.get("campaign"), date_from=date_param(request, "from"), date_to=date_param(request, "to")
    )
    return await _report(request, "refcodes", query)


@routes.get("/v1/reports/donor-aggregates")
async def donor_aggregates_report(request: web.Request) -> web.Response:
    query = ReportQuery(
        campaign=request.query.get("campaign"),
        election=request.query.get("election"),
        limit_minor=optional_int(request, "limit"),
        threshold_minor=optional_int(request, "threshold"),
    )
    return await _report(request, "donor-aggregates", query)


@routes.get("/v1/reports/schedule-a")
async def schedule_a_report(request: web.Request) -> web.Response:
    query = ReportQuery(
        campaign=request.query.get("campaign"),
        election=request.query.get("election"),
        date_from=date_param(request, "from"),
        date_to=date_param(request, "to"),
        threshold_minor=optional_int(request, "threshold"),
        limit_minor=optional_int(request, "limit"),
    )
    return await _report(request, "schedule-a", query)
