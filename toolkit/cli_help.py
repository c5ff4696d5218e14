"""``--help`` that shows how a command is used: examples under each command's options, kept verbatim."""

from __future__ import annotations

import argparse
from typing import Any


def examples(*lines: str) -> dict[str, Any]:
    """Keyword arguments for ``add_parser``/``ArgumentParser``: an "examples:" epilog, line breaks kept."""
    return {
        "epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
        "formatter_class": argparse.RawDescriptionHelpFormatter,
    }
