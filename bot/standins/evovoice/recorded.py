"""The requests the stand-in received, as tests read them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: Mapping[str, str]  # case-insensitive
    body: bytes = b""
    time: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request arrived (the clock of ``SlackStandIn`` records)."""


def reads(request: Recorded, session_id: str) -> bool:
    """Whether ``request`` read ``session_id``: ``GET /sessions/{id}``, or ``GET /sessions`` with
    the id among its ``specificIds``."""
    if request.method != "GET":
        return False
    if request.path == "/sessions":
        return session_id in request.query.get("specificIds", "").split(",")
    return request.path == f"/sessions/{session_id}"  # aiohttp's path is decoded
