"""A report: named columns and rows, rendered as JSON (minor units) or CSV (decimal amounts)."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from ledger.currencies import format_minor


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    columns: tuple[str, ...]
    rows: list[dict[str, Any]]
    money_columns: frozenset[str] = frozenset()  # minor units in JSON, decimals in CSV (with the row's currency)
    totals: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "object": "report",
            "report": self.name,
            "parameters": {k: _plain(v) for k, v in self.parameters.items()},
            "columns": list(self.columns),
            "data": [{c: _plain(row.get(c)) for c in self.columns} for row in self.rows],
            "totals": self.totals,
        }

    def as_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([self._cell(row, column) for column in self.columns])
        return buffer.getvalue()

    def _cell(self, row: Mapping[str, Any], column: str) -> str:
        value = row.get(column)
        if value is None:
            return ""
        if column in self.money_columns:
            currency = row.get("currency")
            if not currency:  # a bug: an amount without its currency has no decimals to place
                raise ValueError(f"report {self.name}: {column} is money but the row has no currency")
            return format_minor(value, currency)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def day_start(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(0), UTC)


def day_end(day: date | None) -> datetime | None:
    """The end of ``day`` (exclusive): report ranges name whole days, both inclusive."""
    return None if day is None else datetime.combine(day + timedelta(days=1), time(0), UTC)
