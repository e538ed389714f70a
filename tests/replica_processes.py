"""Bot replicas in processes of their own for tests/test_replicas.py: each one, its death, and what
a test waits for in their shared database."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from dataclasses import dataclass

from bot.standins.evovoice import EvoVoiceStandIn
from bot.storage.database import Database
from tests.conftest import BotUnderTest
from tests.processes import BotProcess


@dataclass
class Replica(BotUnderTest):
    """A bot running in its own process; Slack's requests reach it on its own port."""

    process: BotProcess | None = None
    database_url: str = ""

    @property
    def bot(self) -> BotProcess:
        assert self.process is not None
        return self.process

    @property
    def events_url(self) -> str:
        return f"{self.bot.base}/slack/events"

    async def kill(self) -> float:
        """SIGKILL: no shutdown, no lease released. The moment it died (monotonic clock)."""
        await self.bot.stop(signal.SIGKILL)
        return time.monotonic()

    async def die(self, lease_seconds: float = 0.0) -> None:
        """SIGKILL, and its leases lapse at once instead of within LEASE_SECONDS: it renews them
        no more, and a lease's expiry is the only thing the time going by changes for its work.
        `lease_seconds`: its heartbeat and the claims are moved that far into the past too, as if
        it had died that long ago (a request it took and never dialled is told after that)."""
        await self.kill()
        db = Database(self.database_url)
        await db.open()
        try:
            # Replica ids are host:pid:suffix (bot/storage/leases.py).
            owner = f"%:{self.bot.process.pid}:%"
            await db.execute("UPDATE leases SET expires_at = ? WHERE owner LIKE ?",
                             (time.time() - 1, owner))
            if lease_seconds:
                await db.execute("UPDATE replicas SET seen_at = seen_at - ? WHERE id LIKE ?",
                                 (lease_seconds, owner))
                await db.execute("UPDATE claims SET claimed_at = claimed_at - ?",
                                 (lease_seconds,))
        finally:
            await db.close()


async def until_ready(replica: Replica) -> None:
    """Ready by its own log, on the port it listens on."""
    port = await replica.bot.listening()
    mode = "Socket Mode" if replica.mode == "socket" else "HTTP mode"
    await replica.bot.wait_for_line(re.escape(f"callbot ready ({mode}, port {port}, "))


def first_request_after(evo: EvoVoiceStandIn, moment: float) -> float:
    return min(r.time for r in evo.requests if r.time > moment)


async def session_found(database_url: str) -> None:
    """Until the call left "being dialled" has its session: another replica reconciled it, and
    follows it (`reconcile_dialling` posts a call's own status message before it follows it)."""
    db = Database(database_url)
    await db.open_read_only()
    try:
        while await db.fetchall("SELECT id FROM calls WHERE session_id IS NULL"):
            await asyncio.sleep(0.05)
    finally:
        await db.close()


async def parent_noted(database_url: str) -> None:
    """Until the row of the call being dialled says where its parent went (written right after
    Slack took the parent, since schema version 17), for at most 0.5 s (well within the POST's
    own time-out): a bot that keeps no such thing is killed all the same."""
    db = Database(database_url)
    await db.open_read_only()
    try:
        for _ in range(50):
            [row] = await db.fetchall("SELECT * FROM calls")
            if "parent_posted_ts" in row.keys() and row["parent_posted_ts"] is not None:
                return
            await asyncio.sleep(0.01)
    finally:
        await db.close()
