"""The load driver: send `/call` as Slack does, as fast as it can, and time every ack.

Socket Mode: `slash_commands` envelopes over the Slack stand-in's websocket, one after another as
Slack sends them; the stand-in records each envelope's send and ack times. HTTP: every signed
request at once, each on its own connection (Slack's senders don't queue behind each other); the
time runs from opening the connection to the whole response being in. With several replicas the
envelopes go round their connections (the stand-in's `spread_envelopes`), the requests round their
ports, as Slack and a load balancer spread them.
Bodies and signatures are built before the clock starts, so the burst is only sending.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.parse
import uuid
from typing import cast
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.processes import Child, cpu_seconds, loop_cpu_seconds
from bench.scenario import CHANNEL, SIGNING_SECRET, Caller
from bot.standins.slack import SlackStandIn, sign, slash_command_body, slash_command_payload

# Far beyond Slack's 3 s: a late ack is measured, not lost.
ACK_WAIT_SECONDS = 60.0

_TRIGGERS = itertools.count(1)


@dataclass(frozen=True)
class Ack:
    caller: Caller
    sent: float
    acked: float | None  # None: no ack came within ACK_WAIT_SECONDS
    ok: bool  # HTTP 200 / an ack envelope

    @property
    def latency(self) -> float | None:
        return None if self.acked is None else self.acked - self.sent


def _fields(caller: Caller, slack: SlackStandIn) -> dict[str, str]:
    # A fresh trigger_id per invocation, as Slack mints: the bot's idempotency key is built on it.
    return dict(
        text=caller.text, user_id=caller.user_id, channel_id=CHANNEL,
        response_url=slack.response_url(),
        trigger_id=f"{next(_TRIGGERS)}.{uuid.uuid4().hex[:16]}",
    )


class Sender:
    def __init__(self, mode: str, slack: SlackStandIn, events_urls: Sequence[str] = ()) -> None:
        if mode not in ("socket", "http"):
            raise ValueError(f"unknown mode {mode!r}")
        if mode == "http" and not events_urls:
            raise ValueError("HTTP mode needs the events URL of at least one replica")
        self.mode = mode
        self.slack = slack
        self.events_urls = list(events_urls)

    async def burst(self, callers: Sequence[Caller]) -> list[Ack]:
        if self.mode == "socket":
            return await self._socket_burst(callers)
        return await self._http_burst(callers)

    async def _socket_burst(self, callers: Sequence[Caller]) -> list[Ack]:
        payloads = [slash_command_payload(**_fields(c, self.slack)) for c in callers]
        ids = [await self.slack.post_envelope("slash_commands", p) for p in payloads]
        await asyncio.gather(
            *(self.slack.wait_for_ack(i, timeout=ACK_WAIT_SECONDS) for i in ids),
            return_exceptions=True,
        )
        acks = []
        for caller, envelope_id in zip(callers, ids, strict=True):
            record = self.slack.envelopes[envelope_id]
            acks.append(Ack(caller, record.sent_at, record.acked_at, record.ack is not None))
        return acks

    async def _http_burst(self, callers: Sequence[Caller]) -> list[Ack]:
        urls = [urllib.parse.urlsplit(u) for u in self.events_urls]
        requests = []
        for i, caller in enumerate(callers):
            url = urls[i % len(urls)]  # round-robin over the replicas, as a load balancer spreads
            host, port = url.hostname or "127.0.0.1", url.port or 80
            body = slash_command_body(**_fields(caller, self.slack))
            head = {"Host": f"{host}:{port}", "Content-Length": str(len(body)),
                    "Connection": "close", **sign(body, SIGNING_SECRET)}
            lines = [f"POST {url.path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
            requests.append((host, port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body))
        loop = asyncio.get_running_loop()

        async def send(caller: Caller, host: str, port: int, request: bytes) -> Ack:
            sent = time.monotonic()
            answered: asyncio.Future[tuple[float, int] | None] = loop.create_future()
            try:
                transport, _ = await loop.create_connection(
                    lambda: _OneRequest(request, answered), host, port
                )
            except OSError:
                return Ack(caller, sent, None, False)
            try:
                answer = await asyncio.wait_for(answered, ACK_WAIT_SECONDS)
            except TimeoutError:
                answer = None
            finally:
                transport.close()
            if answer is None:
                return Ack(caller, sent, None, False)
            return Ack(caller, sent, answer[0], answer[1] == 200)

        pairs = zip(callers, requests, strict=True)
        return list(await asyncio.gather(*(send(c, *r) for c, r in pairs)))


class _OneRequest(asyncio.Protocol):
    """One HTTP/1.1 request on its own connection; resolves to (time answered, status).

    A bare protocol rather than an HTTP client library: a thousand of them cost the driver little,
    so what is timed is the server, not the client. "Answered" is when the whole response is in.
    """

    def __init__(self, request: bytes, answered: asyncio.Future[tuple[float, int] | None]) -> None:
        self.request = request
        self.answered = answered
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio.Transport, or uvloop's (which is no subclass of it): both can write.
        cast(asyncio.WriteTransport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep or self.answered.done():
            return
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                       if k.strip().lower() == "content-length"), 0)
        if len(body) >= length:
            self.answered.set_result((time.monotonic(), int(lines[0].split()[1])))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_result(None)


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05
) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


@dataclass
class Sampler:
    """Every `interval` s: the driver loop's lateness, the child's resident memory and its CPU
    seconds so far (with the time, to tell how much CPU the child had used by a given moment)."""

    child: Child | None = None
    interval: float = 0.02
    lags: list[float] = field(default_factory=list)
    max_rss: int = 0
    # (monotonic time, CPU-s of the whole process, CPU-s of its main thread: the event loop)
    cpu: list[tuple[float, float, float]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self.lags.append(max(0.0, loop.time() - due))
            if self.child is not None and self.child.alive():
                try:
                    self.max_rss = max(self.max_rss, self.child.memory().rss)
                    # Its event loop's CPU read first, the process's after it (the other way
                    # round before the burst, bench.replicas): the loop's share is not overstated.
                    pid = self.child.pid
                    on_loop = loop_cpu_seconds(pid)
                    self.cpu.append((time.monotonic(), cpu_seconds(pid), on_loop))
                except OSError:  # it exited just now
                    pass

    def cpu_by(self, moment: float) -> tuple[float, float] | None:
        """The child's CPU seconds (all of it, its event loop's) at the first sample taken at or
        after `moment`."""
        return next(((cpu, loop) for at, cpu, loop in self.cpu if at >= moment), None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
