"""A replica renews the leases of its own work, and only those: a lease given back while the
database fails is not kept for good (the work it stands for would be done by nobody while that
replica lives), and one of work still going on is renewed while a take-over round waits on Slack.
The running bot against the stand-ins, two replicas on one database."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from bot.standins.evovoice import Gated
from bot.storage.database import Database
from tests.conftest import BotFactory, until
from tests.follow_helpers import (
    FAST,
    FULL,
    announced,
    died_while_dialling,
    services,
    status_message,
    wait_for_edit,
)


class FailingFor:
    """`db`'s reads of one call's row and its lease's give-backs fail (a disk I/O error) while
    `failing`: a database out for a moment, in the middle of a take-over round."""

    def __init__(self, db: Database) -> None:
        self.failing = True
        self.failed: list[str] = []
        self._fetchone, self._execute = db.fetchone, db.execute
        db.fetchone, db.execute = self.fetchone, self.execute  # type: ignore[method-assign]

    def _fail(self, sql: str, *starts: str) -> None:
        if self.failing and sql.startswith(starts):
            self.failed.append(sql.split()[0])
            raise sqlite3.OperationalError("disk I/O error")

    async def fetchone(self, sql: str, params: Any = ()) -> Any:
        self._fail(sql, "SELECT * FROM calls WHERE id")
        return await self._fetchone(sql, params)

    async def execute(self, sql: str, params: Any = ()) -> int:
        self._fail(sql, "DELETE FROM leases")
        return await self._execute(sql, params)


async def test_a_call_left_dialling_is_told_once_the_database_failing_on_its_first_look_answers(
    bot_factory: BotFactory,
) -> None:
    # The replica running on takes the call its peer left being dialled; the database fails on
    # its look at the call's row, and on giving the lease back. The database answers again: the
    # call is looked for and its requester told, by this replica or any other. It used to stay
    # "being dialled" for as long as this replica ran: its lease, renewed with the replica's
    # own, kept every replica (this one too) from taking it again.
    survivor = await bot_factory("http", **FAST)
    fault = FailingFor(services(survivor).db)
    first = await bot_factory("http", **FAST)  # the same database
    await services(first).leases.stop()  # it dies, rather than stop: no round of its own
    session_id = await died_while_dialling(first)

    leases = services(survivor).leases
    leases.wake()
    await until(lambda: "DELETE" in fault.failed)  # the take-over round failed, lease kept
    fault.failing = False
    leases.wake()  # the next round gives the lease back; the one after it takes the call
    db = services(survivor).db

    async def given_back() -> None:
        while await db.fetchone("SELECT 1 FROM leases WHERE kind = 'call' AND owner = ?",
                                (leases.owner,)):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(given_back(), 10)
    leases.wake()
    status = await announced(survivor)
    await wait_for_edit(survivor, status, session_id)  # found in Evo Voice, and followed


async def test_a_replica_whose_round_waits_on_slack_keeps_renewing_its_own_calls_lease(
    bot_factory: BotFactory,
) -> None:
    # The survivor follows a call of its own. Its peer dies while dialling; the survivor's
    # take-over round announces that call ("restarted while placing"), and Slack holds the post.
    # The survivor is alive and still follows its own call: its lease must go on being renewed,
    # or after 2/3 of LEASE_SECONDS another replica takes the call over while it runs here.
    # (The bot's lease clock is the wall clock: the renewal is waited for, never a set time.)
    survivor = await bot_factory("http", LEASE_SECONDS="3", **FAST)
    await survivor.command(f"{FULL} escalation")
    await status_message(survivor)
    db, leases = services(survivor).db, services(survivor).leases
    [own] = await db.fetchall("SELECT row_id, expires_at FROM leases WHERE owner = ?",
                              (leases.owner,))

    first = await bot_factory("http", LEASE_SECONDS="3", **FAST)  # the same database
    await services(first).leases.stop()  # it dies, rather than stop: no round of its own
    post = asyncio.Event()
    survivor.evo.queue_outgoing(Gated(post))
    held = survivor.slack.hold(
        "chat.postMessage", when=lambda c: "restarted while placing" in str(c.params.get("text")))
    await first.command(f"{FULL} escalation", user_id="U0ADMIN")  # the limit is per person
    await survivor.evo.wait_for_posts(2)
    await first.runtime.stop(grace=0)
    post.set()
    leases.wake()
    await held.wait_until_held()  # the survivor's round waits on Slack

    async def renewed_since(expires_at: float) -> None:
        while (await db.fetchone("SELECT expires_at FROM leases WHERE kind = 'call'"
                                 " AND row_id = ?", (own["row_id"],)))["expires_at"] <= expires_at:
            await asyncio.sleep(0.01)

    now = await db.fetchone("SELECT expires_at FROM leases WHERE kind = 'call' AND row_id = ?",
                            (own["row_id"],))
    await asyncio.wait_for(renewed_since(now["expires_at"]), 5)
    held.open()
    await announced(survivor)
