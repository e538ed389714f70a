"""Polling many sessions with few requests: ``GET /sessions?specificIds=a,b,c``.

What the evidence says (docs/evovoice-api.md): ``GET /sessions`` with ``specificIds`` is *likely*
(the vendor's CLI reads a session's log through ``GET /sessions?specificIds=<id>``, and the listing
fills ``log`` where ``GET /sessions/{id}`` leaves it empty); ServiceStack reads a list parameter as
comma-separated values (*likely*, as ``accountIds``); lists page at 25 by default (*confirmed*).
Nothing says whether several ids are honoured, nor whether a listing leaves some out. So:

- A batch is at most ``BATCH_SIZE`` ids (the default page size: a server ignoring
  ``countPerPage`` still answers them on one page) and ``MAX_IDS_CHARS`` characters of ids (the URL
  stays short); an id holding a comma is never batched. ``hasMorePages`` is followed for a few
  pages while they bring what was asked for.
- An answer holding a session that was not asked for means the server ignored ``specificIds``:
  batching stops for good (logged once) and every poll is ``GET /sessions/{id}``. A 400 to the
  listing does the same, and so does a 403 (the login's role refused the listing).
- An id the answer leaves out is read with ``GET /sessions/{id}`` (a 404 is ``NotFound`` as
  ever); if that finds it, that id is polled on its own from then on. A listing that can't be read
  (one session of an unexpected shape, an answer too large) has each of its sessions read alone
  this time, so one odd session fails its own call only; so does a listing answered 404, which
  says nothing of the sessions that exist, or 5xx (the gateway's 502/503/504 once tried again).
- A batch waits for its turn in the budget (``Priority.ROUTINE``) *before* its ids are chosen:
  while polls queue behind the budget, the next batch fills up. ``MAX_BATCHES_IN_FLIGHT`` batches
  are read at once, so one slow answer does not hold up every followed call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal, Protocol

from bot.evovoice.budget import Priority, RequestBudget
from bot.evovoice.errors import (
    BadRequest,
    EvoVoiceError,
    Forbidden,
    MalformedResponse,
    NotFound,
    ServerError,
)
from bot.evovoice.models import Session

logger = logging.getLogger(__name__)

BATCH_SIZE = 25
MAX_IDS_CHARS = 1500
MAX_BATCH_PAGES = 3
MAX_BATCHES_IN_FLIGHT = 4
# Ids the listing left out but GET /sessions/{id} found: polled alone (the set is bounded).
MAX_ALONE = 10_000

_Accounts = tuple[str, ...]
# What a poll learns from its batch: its session, or that it must be read alone.
_Listed = Session | Literal["left out", "unreadable"]


class SessionSource(Protocol):
    """What the lookups need of the client (bot/evovoice/client.py)."""

    budget: RequestBudget

    async def get_session(self, session_id: str, *, priority: Priority = ...) -> Session: ...

    async def sessions_page(
        self, ids: list[str], account_ids: list[str], page: int, *, admitted: bool
    ) -> tuple[list[Session], bool]: ...


class SessionPolls:
    def __init__(self, source: SessionSource) -> None:
        self._source = source
        self.batching = True  # False once the server showed it ignores specificIds
        self._alone: set[str] = set()
        self._pending: dict[str, tuple[_Accounts, list[asyncio.Future[_Listed]]]] = {}
        self._dispatchers: set[asyncio.Task[None]] = set()
        self._waiting_turn = 0

    async def get(self, session_id: str, account_ids: list[str]) -> Session:
        """The session as Evo Voice shows it now, read with others where the server allows."""
        if not self.batching or session_id in self._alone or "," in session_id:
            return await self._source.get_session(session_id, priority=Priority.ROUTINE)
        future: asyncio.Future[_Listed] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(session_id, (tuple(account_ids), []))[1].append(future)
        self._start_dispatcher()
        listed = await future
        if isinstance(listed, Session):
            return listed
        session = await self._source.get_session(session_id, priority=Priority.ROUTINE)
        if listed == "left out" and self.batching and len(self._alone) < MAX_ALONE:
            logger.info("Evo Voice listed sessions without %s: polling it on its own", session_id)
            self._alone.add(session_id)
        return session

    def close(self) -> None:
        for task in self._dispatchers:
            task.cancel()

    def _start_dispatcher(self) -> None:
        if (self._pending and self._waiting_turn == 0
                and len(self._dispatchers) < MAX_BATCHES_IN_FLIGHT):
            task = asyncio.get_running_loop().create_task(self._dispatch())
            self._dispatchers.add(task)
            task.add_done_callback(self._dispatchers.discard)

    async def _dispatch(self) -> None:
        while self._pending:
            self._waiting_turn += 1
            try:
                await self._source.budget.admit(Priority.ROUTINE)
            finally:
                self._waiting_turn -= 1
            accounts, batch = self._take()
            if not batch:
                return
            self._start_dispatcher()  # what is left waits for its turn while this batch is read
            await self._read(accounts, batch)

    def _take(self) -> tuple[_Accounts, dict[str, list[asyncio.Future[_Listed]]]]:
        batch: dict[str, list[asyncio.Future[_Listed]]] = {}
        accounts: _Accounts | None = None
        chars = 0
        for session_id, (wanted, futures) in list(self._pending.items()):
            if all(f.done() for f in futures):  # every poller of it stopped waiting
                del self._pending[session_id]
                continue
            accounts = wanted if accounts is None else accounts
            if wanted != accounts:
                continue
            # An id longer than MAX_IDS_CHARS on its own is read in a batch of its own: left
            # waiting, it would hold every poll behind it.
            if batch and (len(batch) == BATCH_SIZE or chars + len(session_id) + 1 > MAX_IDS_CHARS):
                break
            chars += len(session_id) + 1
            batch[session_id] = self._pending.pop(session_id)[1]
        return accounts or (), batch

    async def _read(
        self, accounts: _Accounts, batch: dict[str, list[asyncio.Future[_Listed]]]
    ) -> None:
        ids = list(batch)
        found: dict[str, Session] = {}
        missing: Literal["left out", "unreadable"] = "left out"
        try:
            for page in range(MAX_BATCH_PAGES):
                items, more = await self._source.sessions_page(
                    ids, list(accounts), page, admitted=page == 0
                )
                new = {s.id: s for s in items if s.id not in found}
                found.update(new)
                if any(s not in batch for s in new):
                    self._stop_batching("it answered with sessions that were not asked for")
                    break
                if not more or not new or len(found) == len(ids):
                    break
        except BadRequest:
            self._stop_batching("it refused the listing (400)")
        except Forbidden:
            # The login's role may be refused the listing and allowed each session (operations
            # have roles of their own: docs/evovoice-api.md); a 403 on a session stays its own.
            self._stop_batching("it refused the listing to the bot's login (403)")
        except (MalformedResponse, NotFound, ServerError):
            # A listing answered 404 (one of its ids unknown, say) says nothing of the others:
            # each is read alone this time, where a 404 is its own. So does a 5xx: the listing
            # is another operation than reading a session, and nothing says they fail together.
            missing = "unreadable"
        except EvoVoiceError as exc:
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for session_id, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(session_id, missing))

    def _stop_batching(self, why: str) -> None:
        if self.batching:
            logger.warning("Evo Voice ignores GET /sessions?specificIds (%s): polling each "
                           "session with GET /sessions/{id} from now on", why)
        self.batching = False
