"""The page's static files, read once at import and served from memory by ``GET /donate/static/{name}``: a fixed
list, so no request can name another file."""

from __future__ import annotations

from importlib import resources

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
ASSET_NAMES = ("donate.js", "donate.css", "embed.js")


def _load() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("engine.donor_page") / "static"
    return {name: ((folder / name).read_bytes(), CONTENT_TYPES[name[name.rindex(".") :]]) for name in ASSET_NAMES}


ASSETS = _load()
