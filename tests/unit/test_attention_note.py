"""The dashboard's attention note: what finance must look at, said in words, never hidden when there is some."""

from __future__ import annotations

import pytest

from engine.api.dashboard_html import attention_note
from engine.finance.attention import Attention


@pytest.mark.parametrize(
    ("attention", "css", "text"),
    [
        (Attention(0, 0, 0), "ok", "nothing waiting"),
        (Attention(0, 2, 0), "ok", "2 processor events waiting to apply"),
        (Attention(1, 0, 0), "bad", "1 donation the processor never decided"),
        (Attention(0, 0, 0, 1, 0), "bad", "1 refund the processor never decided"),
        (Attention(0, 0, 0, 0, 2), "bad", "2 refunds returned by the processor, donor not repaid"),
        (
            Attention(3, 1, 1),
            "bad",
            "3 donations the processor never decided; 1 processor event waiting to apply (1 overdue)",
        ),
    ],
)
def test_the_note_says_what_waits(attention: Attention, css: str, text: str) -> None:
    assert attention_note(attention) == f'<span class="{css}" id="attention">{text}</span>'
