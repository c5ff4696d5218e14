"""The load test tells Surge's own time from the processor's: the engine's Server-Timing header, read per answer."""

from __future__ import annotations

from loadtest.http_client import _Connection
from loadtest.recorder import Outcome, Recorder
from loadtest.traffic import Kind


def _parsed(head: bytes, body: bytes = b"{}") -> tuple[int, int]:
    connection = _Connection()
    connection._buffer += head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    response = connection._parse()
    assert response is not None and response.body == body
    return response.status, response.processor_us


def test_the_processors_share_is_read_from_server_timing() -> None:
    assert _parsed(b"HTTP/1.1 201 Created\r\nServer-Timing: processor;dur=251.4\r\n") == (201, 251_400)
    assert _parsed(b"HTTP/1.1 201 Created\r\nserver-timing: db;dur=3, processor;dur=7\r\n") == (201, 7_000)
    assert _parsed(b"HTTP/1.1 202 Accepted\r\n") == (202, 0)  # queued: no processor call in the answer


def test_own_time_is_each_answers_latency_less_the_processors_share() -> None:
    recorder = Recorder(start_ns=0)
    ms = 1_000_000
    recorder.answered(Kind.DONATION, "201", Outcome.ACCEPTED, 0, 300 * ms, processor_us=260_000)
    recorder.answered(Kind.DONATION, "202", Outcome.ACCEPTED, 0, 40 * ms)
    # A charge that timed out answers 202 too, after the processor's 8 s: its own time counts, not as a queued 202.
    recorder.answered(Kind.DONATION, "202", Outcome.ACCEPTED, 0, 8_030 * ms, processor_us=8_000_000)
    recorder.answered(Kind.DONATION, "timeout", Outcome.TIMEOUT, 0, 9_000 * ms)  # no answer: no own time
    own = recorder.own_latency.summary_ms()
    assert own["count"] == 3 and 29 <= own["p50"] <= 41 and 39 <= own["max"] <= 41, own
    later = recorder.deferred_latency.summary_ms()
    assert later["count"] == 1 and 39 <= later["max"] <= 41, later
    assert recorder.latency.summary_ms()["max"] >= 9_000
