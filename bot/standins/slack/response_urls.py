"""The Slack stand-in's response_url endpoints: minted per payload, read back by tests."""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bot.standins.slack.core import StandInCore
from bot.standins.slack.records import (
    Cut,
    Gate,
    JSONDict,
    ResponsePost,
    _short,
)

RESPONSE_URL_LIFETIME = 30 * 60


class ResponseUrls(StandInCore):
    """response_url endpoints (``/response/<id>``)."""

    # ---------------------------------------------------------------- response_url

    def response_url(self) -> str:
        """Mint a fresh response_url (``http://127.0.0.1:PORT/response/<id>``)."""
        if not self.base_url:
            raise RuntimeError("start() the stand-in first")
        rid = uuid.uuid4().hex
        self.responses[rid] = []
        self._response_minted[rid] = self.response_url_clock()
        return f"{self.base_url}/response/{rid}"

    def _response_id(self, url_or_id: str) -> str:
        return url_or_id.rstrip("/").rsplit("/", 1)[-1]

    def responses_to(self, url: str) -> list[JSONDict]:
        """The JSON bodies accepted at ``url`` (a response_url or its id), in order."""
        return self.responses.get(self._response_id(url), [])

    async def wait_for_response(self, url: str, n: int = 1, timeout: float = 5.0) -> list[JSONDict]:
        """Wait until ``n`` posts to ``url`` (or its id) were accepted; return the first ``n``."""
        rid = self._response_id(url)

        def check() -> list[JSONDict] | None:
            got = self.responses.get(rid, [])
            return list(got[:n]) if len(got) >= n else None

        def describe() -> str:
            got = self.responses.get(rid, [])
            lines = [
                f"Timed out after {timeout}s waiting for {n} post(s) to response_url {rid}; "
                f"got {len(got)}:"
            ]
            lines += [f"  {_short(b, 300)}" for b in got]
            others = [p for p in self.response_posts if p.id != rid]
            if others:
                lines.append("Posts to other response_urls:")
                lines += [f"  {p.id}: {p.status} {_short(p.body, 200)}" for p in others[-20:]]
            rejected = [p for p in self.response_posts if p.id == rid and p.status != 200]
            if rejected:
                lines.append("Rejected posts to this one:")
                lines += [f"  {p.status} {p.answer}: {_short(p.body, 200)}" for p in rejected]
            return "\n".join(lines)

        result: list[JSONDict] = await self._wait_until(check, timeout, describe)
        return result

    def hold_responses(self, *, when: Callable[[Any], bool] | None = None) -> Gate:
        """Hold the answer to response_url posts (those whose body ``when`` is true for) until
        the returned gate is opened; the post has taken effect (it is in ``responses``): Slack's
        answer is slow, so a client that stops waiting can't know it was delivered."""
        gate = Gate(None, after=True)
        self._response_gates.append((when, gate))
        return gate

    def cut_responses(self, *, times: int | None = 1,
                      when: Callable[[Any], bool] | None = None) -> None:
        """Take response_url posts (the next ``times`` whose body ``when`` is true for; ``None``:
        all) and then drop their connection without an answer (see :meth:`cut`): the post is
        shown, and counted against the URL's uses, but the app can't know."""
        self._cuts.setdefault("response_url", []).append(Cut(when, times))

    def expire_response_url(self, url: str) -> None:
        """Later posts to ``url`` (or its id) are answered 404 ``expired_url``, as Slack does."""
        self._expired_responses.add(self._response_id(url))

    def _outlived(self, rid: str) -> bool:
        # "response_url accepts up to 5 posts within 30 minutes" (docs/slack-platform.md).
        minted = self._response_minted.get(rid)
        return minted is not None and self.response_url_clock() - minted > RESPONSE_URL_LIFETIME

    async def _handle_response_url(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["rid"]
        raw = await request.text()
        body: Any
        try:
            body = json.loads(raw)
        except ValueError:
            form = dict(urllib.parse.parse_qsl(raw))
            try:
                body = json.loads(form["payload"])
            except (KeyError, ValueError):
                body = raw
        status, answer = 200, "ok"
        if rid not in self.responses or rid in self._expired_responses or self._outlived(rid):
            status, answer = 404, "expired_url"
        elif not isinstance(body, dict):
            status, answer = 400, "invalid_payload"
        elif len(self.responses[rid]) >= self.response_url_max_posts:
            status, answer = 404, "used_url"
        elif not (
            body.get("text")
            or body.get("blocks")
            or body.get("attachments")
            or body.get("delete_original")
        ):
            status, answer = 400, "no_text"
        elif (problem := self._validate_message_content(body, require_content=False)) is not None:
            # Slack refuses a response_url post it would refuse from chat.postMessage, as a 400.
            status, answer = 400, problem
        self.response_posts.append(
            ResponsePost(
                id=rid,
                url=f"{self.base_url}/response/{rid}",
                body=body,
                status=status,
                answer=answer,
                time=time.monotonic(),
            )
        )
        if status == 200:
            self.responses[rid].append(body)
        self._notify()
        for when, gate in list(self._response_gates):
            if when is None or when(body):
                await gate._hold()
        if status == 200 and request.transport and any(
                cut.takes(body) for cut in self._cuts.get("response_url", [])):
            request.transport.abort()  # taken, and the connection dropped before the answer
        return web.Response(status=status, text=answer, content_type="text/plain")
