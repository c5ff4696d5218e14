"""Donation ids: the same shape as ever, and ordered by the time they were made (engine/pipeline/donations.py)."""

from __future__ import annotations

import re
import time

from engine.pipeline.donations import new_donation_id


def test_ids_keep_their_shape_and_differ_within_a_millisecond() -> None:
    ids = [new_donation_id() for _ in range(1000)]  # most of them made in the same millisecond
    assert all(re.fullmatch(r"don_[0-9a-f]{24}", donation_id) for donation_id in ids)
    assert len(set(ids)) == len(ids)


def test_an_id_made_later_sorts_after() -> None:
    first = new_donation_id()
    started_ms = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 <= started_ms:  # into the next millisecond, by the clock the ids use
        pass
    later = new_donation_id()
    assert later > first
    assert later[4:16] > first[4:16]  # by their time, not by chance in the random part
