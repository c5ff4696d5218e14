"""Prometheus metrics (prometheus_client), one registry per application so that tests can run several apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "surge_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.request_latency = Histogram(
            "surge_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "surge_batch_size",
            "Items per group-committed transaction",
            ["batcher"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "surge_batch_seconds",
            "Group-commit transaction time",
            ["batcher"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_depth = Gauge("surge_queue_depth", "Items waiting, by queue", ["queue"], registry=self.registry)
        self.processor_outcomes = Counter(
            "surge_processor_outcomes",
            "Processor call outcomes",
            ["processor", "call", "status"],
            registry=self.registry,
        )
        self.time_to_charge = Histogram(
            "surge_time_to_charge_seconds",
            "From acceptance to settlement",
            buckets=(*LATENCY_BUCKETS_S, 30, 60, 300),
            registry=self.registry,
        )
        self.parked_events = Gauge(
            "surge_parked_events",
            "Processor events parked until they can apply, by what they wait for",
            ["waiting_for"],
            registry=self.registry,
        )
        self.parked_events_overdue = Gauge(
            "surge_parked_events_overdue",
            "Processor events parked longer than the bound: a problem for finance to look into",
            registry=self.registry,
        )
        self.parked_events_resolved = Counter(
            "surge_parked_events_resolved",
            "Parked processor events applied (or found duplicate or never applicable) by the sweeper",
            ["resolution"],
            registry=self.registry,
        )
        self.donations_needing_review = Gauge(
            "surge_donations_needing_review",
            "Donations the processor has not decided after the review bound (lookups or hours), still unsettled",
            registry=self.registry,
        )
        self.donations_flagged_for_review = Counter(
            "surge_donations_flagged_for_review",
            "Donations flagged for finance's review because the processor never decided them",
            registry=self.registry,
        )
        self.refunds_needing_review = Gauge(
            "surge_refunds_needing_review",
            "Refunds the processor has not decided after the review bound (attempts or hours), still unfinished",
            registry=self.registry,
        )
        self.refunds_flagged_for_review = Counter(
            "surge_refunds_flagged_for_review",
            "Refunds flagged for finance's review because the processor never decided them",
            registry=self.registry,
        )
        self.in_flight = Gauge("surge_donations_in_flight", "Donation requests in progress", registry=self.registry)
        self.receipts_sent = Counter(
            "surge_receipts_sent",
            "Receipts delivered (to SMTP, or written as .eml), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.receipts_failed = Counter(
            "surge_receipts_failed",
            "Receipts given up on (refused for good, or out of attempts), by kind",
            ["kind"],
            registry=self.registry,
        )
        self.receipt_send_retries = Counter(
            "surge_receipt_send_retries", "Receipt sends that failed and will be tried again", registry=self.registry
        )
        self.receipts_pending = Gauge(
            "surge_receipts_pending", "Receipts in the outbox not sent yet", registry=self.registry
        )
        self.receipts_relay_lag = Gauge(
            "surge_receipts_relay_lag_seconds",
            "Age of the oldest receipt not sent yet: how far behind the relay runs (0 when caught up)",
            registry=self.registry,
        )

    def observe_batch(self, name: str, size: int, seconds: float) -> None:
        self.batch_size.labels(name).observe(size)
        self.batch_seconds.labels(name).observe(seconds)
