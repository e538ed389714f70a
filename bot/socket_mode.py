"""Socket Mode, observed: each envelope gets a request id (for the logs) and its ack is timed.

Bolt's aiohttp handler runs every envelope in a task of its own, so the request id set here is
seen by that envelope's listener and the work it starts, and by nothing else.
"""

from __future__ import annotations

import time

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest

from bot.logs import request_context
from bot.metrics import Metrics, request_kind


class ObservedSocketModeHandler(AsyncSocketModeHandler):
    def __init__(self, app: AsyncApp, app_token: str, metrics: Metrics | None = None) -> None:
        super().__init__(app, app_token)
        self._metrics = metrics

    async def handle(self, client: SocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        received = time.perf_counter()
        with request_context():
            # Returns once the ack has been sent back over the websocket.
            await super().handle(client, req)
            if self._metrics is not None:
                payload = req.payload if isinstance(req.payload, dict) else {}
                self._metrics.slack_acked(request_kind(payload), time.perf_counter() - received)
