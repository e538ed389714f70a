"""SlackStandIn: the Web API, response_url endpoints and Socket Mode on one loopback port."""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import web

from bot.standins.slack.response_urls import ResponseUrls
from bot.standins.slack.socket_mode import SocketMode
from bot.standins.slack.web_api import WebApiMethods


class SlackStandIn(WebApiMethods, ResponseUrls, SocketMode):
    """Slack's Web API, response_url endpoints and Socket Mode on a loopback port.

    Use as ``async with SlackStandIn() as slack: ...`` or call :meth:`start`/:meth:`stop`.
    """

    async def start(self, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: HTTPS and wss:// (the certificate and key loaded in it), as Slack serves."""
        if self._runner is not None:
            raise RuntimeError("SlackStandIn already started")
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/response/{rid}", self._handle_response_url)
        app.router.add_get("/link/", self._handle_ws)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, backlog=1024, ssl_context=tls)
        await site.start()
        self._runner = runner
        secure = "s" if tls is not None else ""
        self.base_url = f"http{secure}://127.0.0.1:{self.port}"
        self.api_url = f"{self.base_url}/api/"
        self.ws_url = f"ws{secure}://127.0.0.1:{self.port}/link/"

    async def stop(self) -> None:
        if self._runner is None:
            return
        self._stopping = True
        # No new connection from here on: a Socket Mode client whose websocket is closed below
        # connects again at once, and a connection accepted while aiohttp shuts down, its first
        # request not yet read, holds cleanup() for its whole shutdown_timeout.
        for site in list(self._runner.sites):
            await site.stop()
        for gates in self._gates.values():
            for gate in gates:
                gate.open()
        conns = [c for c in self._conns if c.open or c.silent]
        for c in conns:
            c.open = False
        await asyncio.gather(*(self._close_ws(c) for c in conns), return_exceptions=True)
        for envelope_id, fut in self._ack_futures.items():
            if not fut.done():
                fut.set_exception(
                    AssertionError(f"SlackStandIn stopped before envelope {envelope_id} was acked")
                )
                fut.exception()  # mark retrieved: nobody may be waiting
        self._ack_futures.clear()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> SlackStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
