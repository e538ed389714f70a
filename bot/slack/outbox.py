"""Slack posts whose result matters, kept in the database until they are delivered.

A call's status message (whose `ts` the bot must keep, or the message stays "Ringing" for good) and
an escalation's thread posts ("Nobody acknowledged") are written to `slack_posts` before they are
sent, and forgotten once delivered:

    post()        write the row, post (the row's id in the message's metadata), then forget it
                  (its owner first told the `ts`, in the same transaction); refused by Slack: sent
                  again after 1 s, 2 s, 4 s… (at most a minute apart) for REDELIVER_FOR_SECONDS,
                  each time looked for in its thread first (Slack's answer may have been lost).
                  A thread reads in order: while one of its posts waits to be sent again, its
                  later posts wait behind it (kept, sent right after it). Sent again, a post goes
                  to its thread alone; refused there for good (the bot removed from the channel,
                  the channel archived) or given up on, its owner tells its news another way
    take_over()   a lease keeper's round (the first one right after start-up): the rows of
                  replicas that stopped or died are adopted and sent again, each to its thread,
                  and their owners told the new `ts`

A row is written by the replica that posts it (`owner`). It is repaired only once that replica is
gone (not in `replicas`, bot/storage/leases.py) and the row is older than a lease: never while its
own replica may still be waiting for Slack's answer.

What the guarantee is: at least once. A post Slack received just before its replica died (its
answer lost) is posted again, and the first copy keeps what it said then; its owner (a call's
status message) is told the new copy's `ts` and keeps that one current, so the outcome lands. A post
its thread will never take is no exception: its owner, told so, takes the news to the requester
(a call's status by direct message; an escalation's card tells its end, bot/oncall).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bot.slack.blocks import Message
from bot.slack.notify import Notifier
from bot.slack.threads import Kept, Once, Posted, Thread, ThreadUnread
from bot.storage.database import Connection, Database, Row
from bot.storage.faults import DATABASE_FAULTS, until_database_answers
from bot.storage.leases import Leases

logger = logging.getLogger(__name__)

# Slack's message metadata on every kept post: the row it came from.
METADATA_EVENT = "callbot_post"
REDELIVER_FIRST_SECONDS = 1.0
REDELIVER_MAX_PAUSE = 60.0
REDELIVER_FOR_SECONDS = 600.0


class PostOwner(Protocol):
    """What a kept post belongs to (a call's status message), told where it landed."""

    async def delivered(self, conn: Connection, subject: int | None, ts: str) -> None:
        """Keep `ts`, in the transaction that forgets the post."""

    async def undelivered(self, conn: Connection, subject: int | None) -> None:
        """The post will never be in its thread (refused there for good, or given up on): note
        that its news goes another way, in the transaction that forgets the post."""

    async def repaired(self, subject: int | None) -> None:
        """The post was sent again after a restart (or given up on): bring it up to date."""


@dataclass(frozen=True)
class _Pending:
    id: int | None  # None: the database failed, kept in memory only
    created_at: float
    owner: str
    kept: Kept
    thread: Thread
    message: Message
    broadcast: bool


@dataclass(frozen=True)
class _Waiting:
    """A post waiting in its thread's line: `tried` (refused a moment ago: sent again after a
    pause) or not yet (sent as soon as the posts before it are); `adopted` from a replica gone,
    so looked for in its thread before it is sent."""

    pending: _Pending
    tried: bool = True
    adopted: bool = False


def _thread_of(pending: _Pending) -> tuple[str, str]:
    return pending.thread.channel, str(pending.thread.ts)


def _pending(row: Row) -> _Pending:
    raw = json.loads(row["message"])
    message = Message(text=raw["text"], blocks=raw.get("blocks"))
    subject = row["subject"]
    return _Pending(
        id=int(row["id"]), created_at=float(row["created_at"]), owner=str(row["owner"]),
        kept=Kept(str(row["purpose"]), int(subject) if subject is not None else None),
        thread=Thread(channel=str(row["channel"]), ts=str(row["thread_ts"]), response_url=None,
                      parent=message),
        message=message, broadcast=bool(row["broadcast"]),
    )


class Outbox:
    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        leases: Leases,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._leases = leases
        # The time posts are kept and sent again on (public: a test may move it on).
        self.clock = clock
        # The pauses between deliveries (public: a test may take them without waiting).
        self.sleep = sleep
        self._owners: dict[str, PostOwner] = {}
        # Each thread's posts still to deliver, in order (the first being sent again), and the
        # task that delivers them.
        self._waiting: dict[tuple[str, str], list[_Waiting]] = {}
        self._redelivering: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._forgetting: set[asyncio.Task[None]] = set()

    def belongs_to(self, purpose: str, owner: PostOwner) -> None:
        """Tell `owner` where the posts kept for `purpose` land."""
        self._owners[purpose] = owner

    async def post(
        self, thread: Thread, message: Message, *, broadcast: bool, kept: Kept,
        once: Once | None = None,
    ) -> Posted:
        """Post under `thread`, kept in the database until delivered (see the module's text).
        `once`: the claim it is made under, taken in the transaction keeping it; not granted,
        nothing is posted (`delivered` False)."""
        assert thread.ts is not None
        if once is not None:
            claimed = await self._keep_once(once, thread, message, broadcast, kept)
            if claimed is None:
                return Posted(False)
            pending = claimed
        else:
            now = self.clock()
            try:
                pending = await self._keep(thread, message, broadcast, kept, now=now)
            except DATABASE_FAULTS as exc:
                # The news comes first: posted all the same, and sent again while this replica
                # runs; only a restart now would lose it. The row may have been written all the
                # same (its answer lost): forgotten with the post, found by what it holds.
                logger.warning("a Slack post could not be kept in the database (%s)", exc)
                pending = _Pending(None, now, self._leases.owner, kept, thread, message,
                                   broadcast)
        if _thread_of(pending) in self._waiting:
            # An earlier post of this thread waits to be sent again: this one goes right after it
            # ("Nobody acknowledged" never after "they are on it").
            self._redeliver(_Waiting(pending, tried=False))
            return Posted(False)
        posted = await self._send(pending)
        if not posted.delivered:
            self._redeliver(_Waiting(pending))
        else:
            # The caller goes on at once (it keeps the ts itself); forgetting the row can wait.
            task = asyncio.create_task(self._forget(pending, posted.ts),
                                       name=f"forgetting a delivered post ({kept.purpose})")
            self._forgetting.add(task)
            task.add_done_callback(self._forgetting.discard)
        return posted

    async def holds(self, kept: Kept) -> bool:
        """Whether a post for `kept` waits here to be delivered (sent again by its replica, or
        by the one that takes it over)."""
        return await self.held_for(kept) is not None

    async def held_for(self, kept: Kept) -> float | None:
        """How long a post for `kept` has waited here to be delivered (since it was kept, or
        adopted from a replica gone); None if none waits."""
        row = await self._db.fetchone(
            "SELECT created_at FROM slack_posts WHERE purpose = ? AND subject = ?",
            (kept.purpose, kept.subject),
        )
        return None if row is None else max(0.0, self.clock() - float(row["created_at"]))

    async def take_over(self) -> None:
        """Adopt and send again the posts of replicas that stopped or died."""
        now = self.clock()
        alive = {replica.id for replica in await self._leases.alive()} | {self._leases.owner}
        rows = await self._db.fetchall(
            "SELECT * FROM slack_posts WHERE owner != ? AND created_at < ? ORDER BY id",
            (self._leases.owner, now - self._leases.lease_seconds),
        )
        for pending in [_pending(row) for row in rows if row["owner"] not in alive]:
            adopted = await self._db.execute(
                "UPDATE slack_posts SET owner = ? WHERE id = ? AND owner = ?",
                (self._leases.owner, pending.id, pending.owner),
            )
            if adopted != 1:
                continue  # another replica was quicker
            # Sent again for REDELIVER_FOR_SECONDS from now: its replica may have stopped longer
            # ago than that (a host lost), and one refusal now must not give it up.
            pending = replace(pending, created_at=now)
            logger.warning("a Slack post (%s) was in flight when its replica stopped: sending it "
                           "again", pending.kept.purpose)
            if _thread_of(pending) in self._waiting:
                self._redeliver(_Waiting(pending, tried=False, adopted=True))  # after the earlier
            elif not await self._repair(pending):
                self._redeliver(_Waiting(pending))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop sending again; the rows stay, for the next start or another replica. Rows of
        delivered posts are forgotten first (within `grace`), so they are not sent twice."""
        if self._forgetting:
            await asyncio.wait(set(self._forgetting), timeout=grace)
        tasks = [*self._redelivering.values(), *self._forgetting]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---------------------------------------------------------------------------- internals

    async def _keep_once(
        self, once: Once, thread: Thread, message: Message, broadcast: bool, kept: Kept
    ) -> _Pending | None:
        """The post kept in its claim's own transaction (`once` waits for a failing database:
        the claim says who posts, so nothing is posted without it); None if it wasn't granted.
        Claimed and kept apart, a crash between the two would leave the post claimed and never
        posted."""
        kept_row: _Pending | None = None

        async def keep(conn: Connection) -> None:
            nonlocal kept_row
            # An earlier try whose answer was lost (granted again to its holder) committed its
            # row: that one is the post, not a second.
            if kept_row is not None and await conn.fetchone(
                    "SELECT id FROM slack_posts WHERE id = ?", (kept_row.id,)) is not None:
                return
            kept_row = await self._keep(thread, message, broadcast, kept, on=conn)

        if not await once(keep):
            return None
        return kept_row

    async def _keep(
        self, thread: Thread, message: Message, broadcast: bool, kept: Kept,
        *, on: Connection | None = None, now: float | None = None,
    ) -> _Pending:
        now = self.clock() if now is None else now
        row = await (on or self._db).fetchone(
            "INSERT INTO slack_posts (created_at, owner, purpose, subject, channel, thread_ts,"
            " broadcast, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (now, self._leases.owner, kept.purpose, kept.subject, thread.channel, thread.ts,
             1 if broadcast else 0,
             json.dumps({"text": message.text, "blocks": message.blocks})),
        )
        assert row is not None
        return _Pending(int(row[0]), now, self._leases.owner, kept, thread, message, broadcast)

    @staticmethod
    def _metadata(pending: _Pending) -> dict[str, Any] | None:
        """Slack's message metadata naming the post's row: how it is found after a restart."""
        if pending.id is None:
            return None
        return {"event_type": METADATA_EVENT, "event_payload": {"post": pending.id}}

    async def _send(self, pending: _Pending, *, alone: bool = False) -> Posted:
        """`alone`: to the thread and nowhere else. A post sent again goes so: a fallback taken
        then (a direct message drawn when the post was first asked for) would be one its owner
        knows nothing of, never kept current; the owner tells another way (`_lost`)."""
        thread = pending.thread
        if alone:
            thread = replace(thread, response_url=None, relay=None, requester=None)
        return await self._notifier.send_reply(
            thread, pending.message, broadcast=pending.broadcast,
            metadata=self._metadata(pending),
        )

    async def _forget(self, pending: _Pending, ts: str | None, *, lost: bool = False) -> None:
        """Delivered: its owner keeps `ts` and the row goes, in one transaction (waiting for a
        failing database: forgotten too early, a restart would post it again). `lost`: never
        to be delivered, its owner told so instead."""
        owner = self._owners.get(pending.kept.purpose)

        async def forget(conn: Connection) -> None:
            if owner is not None and lost:
                await owner.undelivered(conn, pending.kept.subject)
            elif owner is not None and ts is not None:
                await owner.delivered(conn, pending.kept.subject, ts)
            if pending.id is not None:
                await conn.execute("DELETE FROM slack_posts WHERE id = ?", (pending.id,))
            else:  # kept though its answer was lost? After a restart it would be sent again
                await conn.execute(
                    "DELETE FROM slack_posts WHERE owner = ? AND purpose = ? AND subject = ?"
                    " AND created_at = ?",
                    (pending.owner, pending.kept.purpose, pending.kept.subject,
                     pending.created_at))

        await until_database_answers(lambda: self._db.atomic(forget),
                                     f"noting a delivered Slack post ({pending.kept.purpose})")

    async def _repair(self, pending: _Pending) -> bool:
        """The post itself if Slack took it (found in its thread by its metadata), else sent
        again; its owner brought up to date either way. False if Slack refused it, or failed to
        show its thread (looked for again on the next try: sent now, it could be there twice)."""
        if pending.id is None:
            return await self._deliver(pending)  # kept in memory only: no id to look for
        try:
            found = await self._notifier.find_reply(
                pending.thread.channel, str(pending.thread.ts), self._metadata(pending) or {})
        except ThreadUnread:
            return False
        if found is None:
            return await self._deliver(pending)
        logger.info("a Slack post (%s) was found in its thread", pending.kept.purpose)
        await self._forget(pending, found)
        await self._repaired(pending)
        return True

    async def _deliver(self, pending: _Pending) -> bool:
        """Send a post again; once delivered (or refused for good), forgotten and its owner
        brought up to date."""
        posted = await self._send(pending, alone=True)
        if posted.gone:
            # Ten minutes more of tries would change nothing, and keep the news from the
            # requester all that time.
            logger.warning("a Slack post (%s) is refused for good in its channel; its news goes "
                           "another way", pending.kept.purpose)
            await self._lost(pending)
            return True
        if not posted.delivered:
            return False
        await self._forget(pending, posted.ts)
        await self._repaired(pending)
        return True

    async def _lost(self, pending: _Pending) -> None:
        """Never to be delivered in its thread: forgotten, its owner told so and brought up to
        date (a call's status then goes by direct message)."""
        await self._forget(pending, None, lost=True)
        await self._repaired(pending)

    async def _repaired(self, pending: _Pending) -> None:
        owner = self._owners.get(pending.kept.purpose)
        if owner is not None:
            await owner.repaired(pending.kept.subject)

    def _redeliver(self, waiting: _Waiting) -> None:
        """Deliver `waiting` after its thread's posts waiting before it, in the background."""
        key = _thread_of(waiting.pending)
        self._waiting.setdefault(key, []).append(waiting)
        if key not in self._redelivering:
            task = asyncio.create_task(
                self._deliver_in_order(key),
                name=f"Slack posts to deliver ({waiting.pending.kept.purpose})")
            self._redelivering[key] = task

    async def _deliver_in_order(self, key: tuple[str, str]) -> None:
        queue = self._waiting[key]
        try:
            while queue:
                waiting = queue[0]
                first_try = self._repair if waiting.adopted else self._deliver
                if waiting.tried or not await first_try(waiting.pending):
                    await self._redeliver_until_delivered(waiting.pending)
                queue.pop(0)
        finally:
            # All delivered (or given up on), or stopped: the rows stay, for the next start.
            self._waiting.pop(key, None)
            self._redelivering.pop(key, None)

    async def _redeliver_until_delivered(self, pending: _Pending) -> None:
        """Each try looks for the post in its thread first: a try whose answer was lost (no
        answer in time), or a replica gone, may have left it there."""
        pause = REDELIVER_FIRST_SECONDS
        while self.clock() - pending.created_at < REDELIVER_FOR_SECONDS:
            await self.sleep(pause)
            if await self._repair(pending):
                logger.info("a Slack post (%s) settled after %.0f s", pending.kept.purpose,
                            self.clock() - pending.created_at)
                return
            pause = min(pause * 2, REDELIVER_MAX_PAUSE)
        logger.error("a Slack post (%s) could not be delivered in %.0f s; given up",
                     pending.kept.purpose, REDELIVER_FOR_SECONDS)
        await self._lost(pending)
