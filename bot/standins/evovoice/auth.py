"""Who a request to the Evo Voice stand-in comes from (docs/evovoice-api.md, Authentication)."""

from __future__ import annotations

import base64

from aiohttp import web


def basic_login(request: web.Request) -> tuple[str, str] | None:
    """The (username, password) of the request's HTTP Basic header; None without a readable one."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except ValueError:
        return None
    return user, password
