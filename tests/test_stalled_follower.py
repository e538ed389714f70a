"""A replica that stalled past a followed call's lease (a paused VM, a database connection that
hung) comes back with a read of the call from before it ended: the end that the replica which
took the call over recorded and showed is not undone."""

from __future__ import annotations

import asyncio

from bot.standins.evovoice import Gated
from tests.conftest import BotFactory
from tests.databases import on_both_databases
from tests.follow_helpers import (
    FAST, FULL, end_session, services, stall, status_message, wait_for_edit)


@on_both_databases
async def test_a_stalled_follower_s_late_read_does_not_undo_the_end_another_replica_showed(
    bot_factory: BotFactory,
) -> None:
    """Replica A's poll of a ringing call is out when A stalls; the person picks up (that is what
    A's poll will read) and hangs up. B takes the call over, reads its end, records and shows
    it. Then A comes back with its read: the call stays ended, on its row and its message, not
    "on the phone" for good with nobody following it."""
    a = await bot_factory("http", LEASE_SECONDS="3", **FAST)
    await a.command(f"{FULL} escalation")
    status = await status_message(a)
    [session_id] = a.evo.sessions
    polls = len(a.evo.requests_to("GET", "/sessions"))
    poll_answered = asyncio.Event()
    # The person picks up, and A's next poll, reading that, hangs (no await in between: that poll
    # is the first to read it).
    a.evo.set_session_state(session_id, callState="Connected")
    a.evo.queue("GET", "/sessions", Gated(poll_answered))
    async with asyncio.timeout(10):
        while len(a.evo.requests_to("GET", "/sessions")) <= polls:
            await asyncio.sleep(0.01)
    await stall(a)
    end_session(a, session_id, after_seconds=20, outcome="Completed")  # and hangs up

    b = await bot_factory("http", LEASE_SECONDS="3", **FAST)  # the same database
    await wait_for_edit(b, status, "Ended")
    async with asyncio.timeout(10):
        while services(b).follower.following:
            await asyncio.sleep(0.01)
    ended = list(status.versions)  # B showed the end
    poll_answered.set()  # A comes back, with its read of the call on the phone
    async with asyncio.timeout(10):
        while services(a).follower.following:
            await asyncio.sleep(0.01)
    await a.settle()
    await b.settle()
    row = await services(b).db.fetchone("SELECT state, following FROM calls")
    assert (row["state"], bool(row["following"])) == ("ended", False)
    assert status.versions == ended  # and A edits nothing over it
