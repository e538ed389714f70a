"""The Slack stand-in's Socket Mode: the websocket, envelopes, acks and disconnects."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from aiohttp import WSCloseCode, WSMsgType, web

from bot.standins.slack.core import StandInCore
from bot.standins.slack.limits import ack_problems
from bot.standins.slack.records import (
    EnvelopeRecord,
    JSONDict,
    _Conn,
    _short,
)


class SocketMode(StandInCore):
    """Socket Mode (``/link/``)."""

    # ---------------------------------------------------------------- Socket Mode

    @property
    def open_socket_connections(self) -> int:
        return sum(1 for c in self._conns if c.open)

    async def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait until a Socket Mode client is connected (and was sent ``hello``)."""
        await self._wait_until(
            lambda: self.open_socket_connections > 0,
            timeout,
            lambda: self._socket_state(
                f"Timed out after {timeout}s waiting for a Socket Mode connection."
            ),
        )

    async def wait_socket_connections(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``socket_connections >= n`` and one of them is open (e.g. after a
        reconnect)."""
        await self._wait_until(
            lambda: self.socket_connections >= n and self.open_socket_connections > 0,
            timeout,
            lambda: self._socket_state(
                f"Timed out after {timeout}s waiting for Socket Mode connection #{n}."
            ),
        )

    def _socket_state(self, headline: str) -> str:
        opens = self.calls_to("apps.connections.open")
        lines = [
            headline,
            f"socket_connections accepted so far: {self.socket_connections}, "
            f"open now: {self.open_socket_connections}",
            f"apps.connections.open calls: {len(opens)}",
        ]
        lines += [f"  {c.brief()}" for c in opens[-5:]]
        return "\n".join(lines)

    def expire_tickets(self) -> None:
        """Every ticket issued so far no longer opens a connection (a fresh URL still does).
        apps.connections.open's URLs (``…/link/?ticket=…&app_id=…``) are temporary, in Slack's
        words; how long one lasts is not documented, so a test ends them when it needs to."""
        self._expired_tickets |= self._tickets

    def refuse_sockets(self, refuse: bool = True) -> None:
        """The websocket host down while the Web API answers: each connection attempt is refused
        with 503 (``refused_sockets`` counts them) until ``refuse_sockets(False)``."""
        self.refusing_sockets = refuse

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        if self._stopping:
            return web.Response(status=503, text="stopping")
        if self.refusing_sockets:
            self.refused_sockets += 1
            self._notify()
            return web.Response(status=503, text="service unavailable")
        if request.query.get("ticket") in self._expired_tickets:
            self.refused_sockets += 1
            self._notify()
            return web.Response(status=401, text="invalid ticket")
        # Pings are answered by hand, so that silence_socket() can stop answering them.
        ws = web.WebSocketResponse(autoping=False, max_msg_size=0)
        await ws.prepare(request)
        self.socket_connections += 1
        conn = _Conn(number=self.socket_connections, ws=ws, request=request)
        self._conns.append(conn)
        hello = {
            "type": "hello",
            "num_connections": self.open_socket_connections,
            "debug_info": {
                "host": "applink-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }
        try:
            async with conn.send_lock:
                await ws.send_str(json.dumps(hello))
            self._notify()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if not conn.silent:
                        self._on_client_text(msg.data)
                elif msg.type == WSMsgType.PING:
                    if not conn.silent:
                        async with conn.send_lock:
                            await ws.pong(msg.data)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
        finally:
            conn.open = False
            if conn in self._conns:
                self._conns.remove(conn)
            self._notify()
        return ws

    def _on_client_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = {"raw": data}
        if not isinstance(message, dict):
            message = {"raw": data}
        self.socket_messages.append(message)
        envelope_id = message.get("envelope_id")
        if isinstance(envelope_id, str):
            record = self.envelopes.get(envelope_id)
            if record is not None and record.ack is None:
                record.ack = message
                record.acked_at = time.monotonic()
            fut = self._ack_futures.pop(envelope_id, None)
            if fut is not None and not fut.done():
                fut.set_result(message)

    def _current_conn(self) -> _Conn | None:
        if self.spread_envelopes:
            open_conns = [c for c in self._conns if c.open and not c.ws.closed]
            if open_conns:
                self._spread_turn += 1
                return open_conns[self._spread_turn % len(open_conns)]
        for conn in reversed(self._conns):
            if conn.open and not conn.ws.closed:
                return conn
        return None

    async def post_envelope(
        self,
        type: str,
        payload: JSONDict,
        *,
        accepts_response_payload: bool = True,
        timeout: float = 5.0,
        envelope_id: str | None = None,
    ) -> str:
        """Send an envelope to the newest open connection (waiting up to ``timeout`` for one);
        return its ``envelope_id`` without waiting for the ack (see :meth:`wait_for_ack`)."""
        conn = self._current_conn()
        if conn is None:
            await self.wait_connected(timeout)
            conn = self._current_conn()
            assert conn is not None
        envelope_id = envelope_id or str(uuid.uuid4())
        envelope: JSONDict = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": type,
            "accepts_response_payload": accepts_response_payload,
        }
        if type == "events_api":
            envelope["retry_attempt"] = 0
            envelope["retry_reason"] = ""
        self.envelopes[envelope_id] = EnvelopeRecord(
            envelope_id=envelope_id,
            type=type,
            payload=payload,
            connection=conn.number,
            sent_at=time.monotonic(),
        )
        self._ack_futures[envelope_id] = asyncio.get_running_loop().create_future()
        text = json.dumps(envelope)
        async with conn.send_lock:
            await conn.ws.send_str(text)
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> JSONDict:
        """The client's ack for ``envelope_id`` (``{"envelope_id", "payload"?}``)."""
        record = self.envelopes.get(envelope_id)
        if record is not None and record.ack is not None:
            return _accepted(record, record.ack)
        fut = self._ack_futures.get(envelope_id)
        if fut is None:
            raise AssertionError(f"No envelope {envelope_id!r} was sent")
        try:
            ack = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise AssertionError(self._ack_timeout_dump(envelope_id, timeout)) from None
        record = self.envelopes.get(envelope_id)
        return _accepted(record, ack) if record is not None else ack

    def _ack_timeout_dump(self, envelope_id: str, timeout: float) -> str:
        record = self.envelopes.get(envelope_id)
        lines = [
            f"Timed out after {timeout}s waiting for the ack of envelope {envelope_id}"
            + (
                f" (type {record.type!r}, sent on connection #{record.connection})"
                if record
                else ""
            ),
            "Note: slack_bolt sends NO ack when the request is unhandled (no matching listener: "
            "404) or authorization failed (e.g. auth.test failed), and none if the listener never "
            "calls ack().",
            self._socket_state("Socket Mode state:"),
            f"acked envelopes: {sum(1 for r in self.envelopes.values() if r.ack is not None)} "
            f"of {len(self.envelopes)}",
        ]
        if record is not None:
            lines.append(f"payload: {_short(record.payload, 400)}")
        lines.append("last messages from the client:")
        lines += [f"  {_short(m, 200)}" for m in self.socket_messages[-5:]] or ["  (none)"]
        lines.append("last Web API calls:")
        lines += [f"  {c.brief()}" for c in self.calls[-10:]] or ["  (none)"]
        return "\n".join(lines)

    async def send_envelope(
        self,
        type: str,
        payload: JSONDict,
        *,
        accepts_response_payload: bool = True,
        timeout: float = 5.0,
    ) -> JSONDict:
        """Send ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` to the connected
        client and return its ack. Many may be in flight at once; acks are routed by envelope_id.
        Raises AssertionError (with a state dump) if no connection or ack comes within
        ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        envelope_id = await self.post_envelope(
            type, payload, accepts_response_payload=accepts_response_payload, timeout=timeout
        )
        return await self.wait_for_ack(envelope_id, timeout=max(0.0, deadline - loop.time()))

    async def _close_ws(self, conn: _Conn) -> None:
        try:
            await asyncio.wait_for(
                conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server closing"), 5.0
            )
        except (TimeoutError, ConnectionError):
            pass

    async def disconnect_socket(self, *, abrupt: bool = False) -> None:
        """Close every open Socket Mode connection from the server side.

        Default: a clean websocket close (the slack_sdk aiohttp client reconnects at once: a new
        apps.connections.open, then a new connection). ``abrupt=True`` drops the TCP connection
        without a close frame, like a network failure; the client notices only in its monitor loop
        (up to ``ping_interval`` seconds later).
        """
        conns = [c for c in self._conns if c.open]
        for conn in conns:
            conn.open = False
        self._notify()
        if abrupt:
            for conn in conns:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
        else:
            await asyncio.gather(*(self._close_ws(c) for c in conns))

    def silence_socket(self) -> None:
        """Make every open connection go silent without closing it: pings go unanswered, the
        client's messages are ignored and no envelope is sent on it again, like a connection
        that died somewhere in the network (python-slack-sdk#1701). Only a client that notices
        and opens a new connection is reachable again."""
        for conn in self._conns:
            if conn.open:
                conn.open = False
                conn.silent = True
        self._notify()

    async def send_disconnect_message(self, reason: str = "refresh_requested") -> None:
        """Send Slack's ``{"type": "disconnect", "reason": …}`` message (as before a connection
        refresh) to every open connection. The slack_sdk client then opens a new connection
        itself."""
        message = json.dumps(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-standin"}}
        )
        for conn in [c for c in self._conns if c.open]:
            async with conn.send_lock:
                await conn.ws.send_str(message)


# "Every slash command, shortcut, block action, options request and view submission must be
# acknowledged within 3 s, or the user sees an error" (docs/slack-platform.md, Deadlines).
ACK_DEADLINE_SECONDS = 3.0


def _accepted(record: EnvelopeRecord, ack: JSONDict) -> JSONDict:
    """``ack``, unless Slack would refuse it (too late, or no answer to an interactive envelope it
    can use: the person sees an error instead): then the test fails."""
    acked_at = record.acked_at if record.acked_at is not None else time.monotonic()
    if acked_at - record.sent_at > ACK_DEADLINE_SECONDS:
        raise AssertionError(
            f"Slack gave up on envelope {record.envelope_id} ({record.type}) after 3 s: "
            f"acked {acked_at - record.sent_at:.1f} s after it was sent"
        )
    if record.type == "interactive":
        refused = ack_problems(record.payload, ack.get("payload"))
        if refused:
            raise AssertionError(f"Slack refuses this ack: {refused}")
    return ack
