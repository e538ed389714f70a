"""`callbot demo`: the demo world behind a local web page that plays Slack's part.

The page (page.html) polls `GET /api/state` and sends what a person does as small JSON POSTs; this
module turns them into `DemoWorld` calls. It listens on 127.0.0.1 only, and answers only its own
page (`own_page_only`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.demo.phones import RING_SECONDS
from bot.demo.world import DEMO_POLL_SECONDS, DemoError, DemoWorld

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
# How often the page asks for the demo's state: a person sees a change within half a second.
PAGE_POLL_SECONDS = 0.5

Handler = Callable[[DemoWorld, dict[str, Any]], Awaitable[Any]]
Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Names the demo's page is reached by; any other in Host is a page whose name was rebound here.
LOOPBACK_NAMES = (HOST, "localhost")


def _own_hosts(request: web.Request) -> set[str]:
    """The Host headers of the demo's own page: the loopback's name and the port it serves."""
    port = request.transport.get_extra_info("sockname")[1] if request.transport else None
    hosts = {f"{name}:{port}" for name in LOOPBACK_NAMES}
    return hosts | set(LOOPBACK_NAMES) if port == 80 else hosts


@web.middleware
async def own_page_only(request: web.Request, handler: Endpoint) -> web.StreamResponse:
    """Refuses what another web page in the same browser can send: a plain-text POST needs no
    preflight, so without the Origin check any site could drive the demo; and one whose name is
    rebound to 127.0.0.1 (DNS rebinding) is same-origin to the browser, so only Host tells it."""
    host = request.headers.get("Host", "").lower()
    if host not in _own_hosts(request):
        return web.json_response({"error": "refused: not this demo's address"}, status=403)
    origin = request.headers.get("Origin")
    if request.method not in ("GET", "HEAD") and origin is not None and (
            origin.lower() != f"http://{host}"):
        return web.json_response({"error": "refused: sent from another page"}, status=403)
    return await handler(request)


def page() -> str:
    return resources.files("bot.demo").joinpath("page.html").read_text(encoding="utf-8")


def create_demo_app(
    world: DemoWorld, *, page_poll_seconds: float = PAGE_POLL_SECONDS
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[own_page_only])
    html = page().replace("<body>", f'<body data-poll-ms="{round(page_poll_seconds * 1000)}">', 1)

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    async def state(_: web.Request) -> web.Response:
        return web.json_response(world.state(), headers={"Cache-Control": "no-store"})

    def action(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return web.json_response({"error": "send a JSON object"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"error": "send a JSON object"}, status=400)
            try:
                result = await handler(world, body)
            # OverflowError: a number JSON allows and int() can't take (1e400).
            except (DemoError, KeyError, TypeError, ValueError, OverflowError) as exc:
                return web.json_response({"error": str(exc) or type(exc).__name__}, status=400)
            except AssertionError:
                # The stand-in's "no ack in time": the bot is busy or stopping.
                logger.warning("the bot did not acknowledge in time", exc_info=True)
                return web.json_response({"error": "the bot did not answer in time"}, status=502)
            return web.json_response({"ok": True, "result": result})

        return run

    app.router.add_get("/", index)
    app.router.add_get("/api/state", state)
    for name, handler in ACTIONS.items():
        app.router.add_post(f"/api/{name}", action(handler))
    return app


async def _say(world: DemoWorld, body: dict[str, Any]) -> None:
    await world.say(str(body["text"]), body.get("thread_ts"))


async def _escalate(world: DemoWorld, body: dict[str, Any]) -> None:
    await world.escalate(str(body["channel"]), str(body["ts"]))


async def _shortcut(world: DemoWorld, body: dict[str, Any]) -> None:
    callback_id = str(body["callback_id"])
    if callback_id not in ("place_call", "escalate_global"):
        raise DemoError(f"no shortcut {callback_id!r}")
    await world.shortcut(callback_id)


async def _click(world: DemoWorld, body: dict[str, Any]) -> None:
    await world.click(dict(body["where"]), dict(body["action"]))


async def _suggest(world: DemoWorld, body: dict[str, Any]) -> list[dict[str, Any]]:
    return await world.suggest(str(body["view_id"]), str(body["block_id"]),
                               str(body["action_id"]), str(body.get("value", "")))


async def _submit(world: DemoWorld, body: dict[str, Any]) -> None:
    values = body["values"]
    if not isinstance(values, dict) or not all(
        isinstance(actions, dict) and all(isinstance(value, dict) for value in actions.values())
        for actions in values.values()
    ):
        raise DemoError("values must be {block_id: {action_id: {…}}}")
    await world.submit(str(body["view_id"]), values)


async def _close(world: DemoWorld, body: dict[str, Any]) -> None:
    world.close(str(body["view_id"]))


async def _dismiss(world: DemoWorld, body: dict[str, Any]) -> None:
    world.dismiss(int(body["id"]))


async def _phone(world: DemoWorld, body: dict[str, Any]) -> None:
    world.phone(str(body["session_id"]), str(body["action"]))


ACTIONS: dict[str, Handler] = {
    "say": _say, "escalate": _escalate, "shortcut": _shortcut, "click": _click,
    "suggest": _suggest, "submit": _submit, "close": _close, "dismiss": _dismiss,
    "phone": _phone,
}


class Demo:
    """The world and its page, started and stopped together (the tests use this too)."""

    def __init__(
        self, port: int, data_dir: Path, *, poll_seconds: tuple[float, float] = DEMO_POLL_SECONDS,
        page_poll_seconds: float = PAGE_POLL_SECONDS, ring_seconds: float = RING_SECONDS,
    ) -> None:
        """`poll_seconds`: the bot's checks of a call's state (bot/demo/world.py);
        `page_poll_seconds`: the page's of the demo's; `ring_seconds`: how long a phone nobody
        picks up rings (bot/demo/phones.py)."""
        self.world = DemoWorld(data_dir, poll_seconds=poll_seconds, ring_seconds=ring_seconds)
        self.page_poll_seconds = page_poll_seconds
        self.requested_port = port
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def hosts(self) -> set[str]:
        """The addresses the page is served on (none until it starts): the loopback alone."""
        return {str(address[0]) for address in self._runner.addresses} if self._runner else set()

    async def start(self) -> None:
        await self.world.start()
        try:
            self._runner = web.AppRunner(create_demo_app(
                self.world, page_poll_seconds=self.page_poll_seconds), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, HOST, self.requested_port)
            await site.start()
            self.port = int(self._runner.addresses[0][1])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.world.stop()


def drop_proxy_settings() -> None:
    """Forget this process's HTTP_PROXY, HTTPS_PROXY, ALL_PROXY… (what urllib and aiohttp read:
    any variable named *_proxy): everything the demo talks to is on the loopback, yet the Slack
    SDK sends through HTTP(S)_PROXY whatever NO_PROXY says. Through a proxy, the demo's requests
    would leave the machine, and the demo would not start (the proxy can't reach its stand-ins)."""
    for name in [name for name in os.environ if name.lower().endswith("_proxy")]:
        del os.environ[name]


async def serve(port: int) -> None:
    drop_proxy_settings()
    with tempfile.TemporaryDirectory(prefix="callbot-demo-") as data_dir:
        demo = Demo(port, Path(data_dir))
        await demo.start()
        print(f"callbot demo: open {demo.url} (Ctrl-C to stop). The Slack workspace and the "
              "Evo Voice account are simulated on this machine: no credentials, no real calls.",
              flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            print("callbot demo: stopping", file=sys.stderr, flush=True)
            await demo.stop()
