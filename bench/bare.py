"""`python -m bench.bare MODE API_URL DELAY`: the baseline, a bare slack-bolt AsyncApp.

Its one listener acks `/call` and then awaits DELAY seconds, standing for work done after the ack;
nothing else (no services, no database, no checks). It runs in its own process on the same aiohttp
server stack as the bot (HTTP mode: `AsyncApp.web_app()`; Socket Mode: Bolt's aiohttp handler) and
prints `ready <port>` on stdout once it can take requests.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal

from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench.scenario import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET

# As the bot's (bot.runtime.HTTP_BACKLOG): both are compared on their work, not on connections the
# kernel dropped because the listen queue (128 by default) overflowed.
LISTEN_BACKLOG = 1024


def create_bare_app(api_url: str, delay: float) -> AsyncApp:
    app = AsyncApp(
        client=AsyncWebClient(token=BOT_TOKEN, base_url=api_url),
        signing_secret=SIGNING_SECRET,
    )

    async def on_call(ack: AsyncAck) -> None:
        await ack()
        await asyncio.sleep(delay)

    app.command("/call")(on_call)
    return app


async def serve(mode: str, api_url: str, delay: float) -> None:
    app = create_bare_app(api_url, delay)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if mode == "socket":
        handler = AsyncSocketModeHandler(app, APP_TOKEN)
        await handler.connect_async()  # type: ignore[no-untyped-call]
        print("ready 0", flush=True)
        await stop.wait()
        await handler.close_async()  # type: ignore[no-untyped-call]
        return
    runner = web.AppRunner(app.web_app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=LISTEN_BACKLOG)
    await site.start()
    port = runner.addresses[0][1]
    print(f"ready {port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__)
    parser.add_argument("mode", choices=["socket", "http"])
    parser.add_argument("api_url", help="Slack Web API base URL (the stand-in)")
    parser.add_argument("delay", type=float, help="seconds the listener awaits after its ack")
    args = parser.parse_args()
    asyncio.run(serve(args.mode, args.api_url, args.delay))


if __name__ == "__main__":
    main()
    # As `python -m bot` ends (bot/__main__.py): the interpreter's last collection walks
    # everything it holds, about to be freed anyway (0.15-0.45 s before the process is gone, after
    # the burst's figures are taken). Frozen, it is left alone.
    gc.freeze()
