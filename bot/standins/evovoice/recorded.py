"""The requests the stand-in received, as tests read them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OUTGOING_PATH = "/sessions/outgoing"


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


class RequestLog:
    """The stand-in's ``requests``, and the tests' ways to read them (server.py records them and
    notifies ``_changed``)."""

    requests: list[Recorded]
    _changed: asyncio.Condition

    def requests_to(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method.upper() and r.path == path]

    def reads_of(self, session_id: str) -> list[Recorded]:
        """The requests that read ``session_id``: alone, or in a listing of specific ids."""
        return [r for r in self.requests if reads(r, session_id)]

    @property
    def outgoing_posts(self) -> list[Recorded]:
        return self.requests_to("POST", OUTGOING_PATH)

    async def wait_for_posts(self, n: int, timeout: float = 5.0) -> list[Recorded]:
        """Wait until at least ``n`` POST /sessions/outgoing arrived; return them all."""
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(
                    lambda: len(self.outgoing_posts) >= n), timeout)
        except TimeoutError:
            got = len(self.outgoing_posts)
            raise AssertionError(f"expected {n} POST {OUTGOING_PATH}, got {got}") from None
        return self.outgoing_posts
