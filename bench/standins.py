"""What the bot talks to during a burst: Slack's Web API and Evo Voice, inline or in a process.

Every `POST /sessions/outgoing` is answered after `delay` seconds (`Delayed(delay)`), except the
warm-up call's, which is answered at once.

    inline    both stand-ins share the driver's event loop (and its SlackStandIn), as in the tests
    process   `python -m bench.standins DELAY WS_URL [SLACK_LATENCY]` serves both from a process of
              its own, so
              the 2N Web API calls and N voice API calls of a burst don't delay the driver's clock
              readings; `apps.connections.open` there answers the driver's websocket URL, so Socket
              Mode envelopes still come from the driver. It prints `ready <slack api url> <evo url>`
              and answers `counts` and `results` on stdin with one JSON line each.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.processes import Child, cpu_seconds
from bench.scenario import (
    APP_TOKEN,
    BOT_TOKEN,
    EVO_PASSWORD,
    EVO_USER,
    FLOWS,
    OWNED,
    clean_environment,
)
from bot.standins.evovoice import OUTGOING_PATH, Delayed, EvoVoiceStandIn, Respond
from bot.standins.slack import ApiCall, SlackStandIn
from bot.standins.tls import server_context


@dataclass(frozen=True)
class Post:
    number: str
    time: float  # monotonic, when the stand-in received it


@dataclass(frozen=True)
class Reply:
    time: float  # monotonic, when the stand-in received it
    text: str


@dataclass(frozen=True)
class Results:
    posts: list[Post]
    replies: list[Reply]  # outcome replies in threads


def create_evo(delay: float) -> EvoVoiceStandIn:
    evo = EvoVoiceStandIn(username=EVO_USER, password=EVO_PASSWORD)
    evo.flows[:] = [dict(f) for f in FLOWS]
    evo.phone_numbers[:] = [dict(n) for n in OWNED]
    evo.default_behaviours[("POST", OUTGOING_PATH)] = Delayed(delay)
    evo.queue_outgoing(Respond())  # the warm-up call
    return evo


def create_slack(ws_url: str | None = None, latency: float = 0.0) -> SlackStandIn:
    slack = SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
    slack.latency = latency  # every Web API answer: Slack on a bad day
    if ws_url is not None:
        slack.on("apps.connections.open", lambda call: {"ok": True, "url": ws_url})
    return slack


class _Tally:
    """What the bot did, counted incrementally (the call list grows to 2N during a burst)."""

    def __init__(self, slack: SlackStandIn, evo: EvoVoiceStandIn) -> None:
        self.slack = slack
        self.evo = evo
        self._seen = 0
        self.replies: list[Reply] = []

    def _update(self) -> None:
        calls: list[ApiCall] = self.slack.calls
        for call in calls[self._seen:]:
            if call.method == "chat.postMessage" and call.params.get("thread_ts") and call.ok:
                self.replies.append(Reply(call.time, str(call.params.get("text") or "")))
        self._seen = len(calls)

    def counts(self) -> tuple[int, int]:
        self._update()
        return len(self.evo.outgoing_posts), len(self.replies)

    def results(self) -> Results:
        self._update()
        posts = [
            Post(str((r.json or {}).get("numberToDial")), r.time) for r in self.evo.outgoing_posts
        ]
        return Results(posts, list(self.replies))


class StandIns(Protocol):
    slack_api_url: str
    evo_url: str

    async def start(self) -> None: ...
    async def counts(self) -> tuple[int, int]: ...  # (POSTs, outcome replies) so far
    async def results(self) -> Results: ...
    async def stop(self) -> None: ...
    def cpu_seconds(self) -> float: ...  # of a process of their own; 0 when inline


class InlineStandIns:
    def __init__(self, slack: SlackStandIn, delay: float, latency: float = 0.0,
                 certificates: Path | None = None) -> None:
        self.slack = slack
        slack.latency = latency
        self.evo = create_evo(delay)
        self._certificates = certificates
        self._tally = _Tally(slack, self.evo)
        self.slack_api_url = slack.api_url
        self.evo_url = ""

    async def start(self) -> None:
        await self.evo.start(tls=served_with(self._certificates))
        self.evo_url = self.evo.url

    async def counts(self) -> tuple[int, int]:
        return self._tally.counts()

    async def results(self) -> Results:
        return self._tally.results()

    async def stop(self) -> None:
        await self.evo.stop()

    def cpu_seconds(self) -> float:
        return 0.0


class ProcessStandIns:
    def __init__(
        self, delay: float, ws_url: str, *, workdir: Path, log_path: Path, latency: float = 0.0,
        certificates: Path | None = None,
    ) -> None:
        self.child = Child("bench.standins", clean_environment(), cwd=workdir, log_path=log_path,
                           args=[str(delay), ws_url, str(latency), str(certificates or "")],
                           read_stdout=True, write_stdin=True)
        self.slack_api_url = ""
        self.evo_url = ""

    async def start(self) -> None:
        await self.child.start()
        _, self.slack_api_url, self.evo_url = (await self.child.read_line()).split()

    async def _ask(self, command: str) -> Any:
        await self.child.write_line(command)
        return json.loads(await self.child.read_line())

    async def counts(self) -> tuple[int, int]:
        posts, replies = await self._ask("counts")
        return int(posts), int(replies)

    async def results(self) -> Results:
        answer = await self._ask("results")
        return Results(
            [Post(number, at) for number, at in answer["posts"]],
            [Reply(at, text) for at, text in answer["replies"]],
        )

    async def stop(self) -> None:
        await self.child.stop()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.child.pid)


def served_with(certificates: Path | None) -> ssl.SSLContext | None:
    """HTTPS with the certificates in that folder (--tls), or plain HTTP."""
    return server_context(certificates) if certificates is not None else None


async def serve(
    delay: float, ws_url: str, latency: float = 0.0, certificates: Path | None = None
) -> None:
    slack, evo = create_slack(ws_url, latency), create_evo(delay)
    await slack.start(tls=served_with(certificates))
    await evo.start(tls=served_with(certificates))
    tally = _Tally(slack, evo)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(f"ready {slack.api_url} {evo.url}", flush=True)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "counts":
                print(json.dumps(tally.counts()), flush=True)
            elif line == "results":
                results = tally.results()
                print(json.dumps({
                    "posts": [[p.number, p.time] for p in results.posts],
                    "replies": [[r.time, r.text] for r in results.replies],
                }), flush=True)
    finally:
        await evo.stop()
        await slack.stop()


if __name__ == "__main__":
    asyncio.run(serve(float(sys.argv[1]), sys.argv[2],
                      float(sys.argv[3]) if len(sys.argv) > 3 else 0.0,
                      Path(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else None))
