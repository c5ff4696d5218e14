"""The donation page's tests: a served engine with the deterministic test challenge verifier and no processor rate
budget in the way, campaigns declared with page settings through the API, and the page's values read from its HTML."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

from engine.keys import Role
from tests.e2e.conftest import Surge, running_surge, surge_settings

__all__ = ["Surge", "create_campaign", "form_data", "page_surge"]


@pytest.fixture
async def page_surge(database_url: str, tmp_path: Path) -> AsyncIterator[Surge]:
    settings = surge_settings(database_url, tmp_path, processor_rate_per_s=1_000_000.0, challenge_verifier="test")
    async with running_surge(database_url, settings) as running:
        yield running


async def create_campaign(
    surge: Surge, slug: str, allowed_origins: list[str] | None = None, **page: Any
) -> dict[str, Any]:
    """A campaign with these page settings (``page``), by the admin API."""
    body = {
        "slug": slug,
        "name": f"Campaign {slug}",
        "election": "2026-general",
        "allowed_origins": allowed_origins or [],
        "page": page,
    }
    response = await surge.client.post("/v1/campaigns", json=body, headers=surge.auth(Role.ADMIN))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def form_data(html: str) -> dict[str, str]:
    """The donation form's data-* attributes (its configuration for the page's script)."""
    tag = re.search(r"<form id=\"donate-form\"[^>]*>", html, re.DOTALL)
    assert tag is not None, "no donation form on the page"
    return {name: unescape(value) for name, value in re.findall(r'data-([a-z-]+)="([^"]*)"', tag.group(0))}
