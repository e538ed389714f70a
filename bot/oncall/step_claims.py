"""Who dials an escalation's step: its claim, taken over when its holder went before dialling.

A step is claimed (`escalation:{id}:step:{n}`, bot/storage/claims.py) just before it is dialled,
so that it is dialled at most once, and its call is recorded on the escalation's row before the
`POST` leaves. A step claimed but with no call recorded was therefore never dialled: its holder
stopped (a crash, a lost host) somewhere between its claim and that record, often while Slack was
slow to answer the checks in between. The chain's next run, in this replica or in the one that
took the escalation's lease over, takes the claim over and dials the step. It used to wait out the
step's deadline without ringing anyone and say it could not tell whether that phone rang.

A holder that was only stalled (a paused VM, a replica cut off from the database for longer than
its lease) may come back to the same step after it was taken over. It is fenced: the record of
its call is written only while it still holds the claim, and the record is refused when it no
longer does, so it does not dial. The takeover and the record are each one transaction that
first locks the escalation's row (on PostgreSQL too: `UPDATE … SET step = step`), so that one of
the two comes first: a call recorded before the takeover is not taken over (it is followed), a
takeover before the record refuses the record.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable

from bot.errors import ChainNotRunning, StepTakenOver
from bot.oncall.escalation_store import Escalation, EscalationState, EscalationStore
from bot.storage.claims import Claims
from bot.storage.database import Connection
from bot.storage.faults import until_database_answers

logger = logging.getLogger(__name__)

_LOCK_ROW = "UPDATE escalations SET step = step WHERE id = ?"


def step_key(escalation_id: int, step: int) -> str:
    return f"escalation:{escalation_id}:step:{step}"


class StepClaims:
    def __init__(self, store: EscalationStore, claims: Claims) -> None:
        self._store = store
        self._db = store.db
        self._claims = claims

    async def claim(self, escalation: Escalation) -> str | None:
        """The step's holder token if this run is to dial the step (it claimed the step, or took
        over the claim of a holder that recorded no call for it); None if the step is another's
        (its call is recorded, or the chain moved on: read the row again)."""
        key = step_key(escalation.id, escalation.step)
        holder = secrets.token_hex(16)
        extra = {"escalation_id": escalation.id}
        if await self._claims.claim_when_answered(
            key, f"escalation {escalation.id}: claiming step {escalation.step}", extra=extra,
            holder=holder,
        ):
            return holder

        async def take_over() -> bool:
            return await self._db.atomic(
                lambda conn: self._take_over(conn, escalation.id, escalation.step, key, holder)
            )

        # A holder that comes back after this is fenced (record_call), so this is safe at once.
        if await until_database_answers(
            take_over, f"escalation {escalation.id}: taking over step {escalation.step}",
            extra=extra,
        ):
            logger.warning("escalation %s: step %d was claimed by a run that stopped before "
                           "dialling it; taken over, dialling now", escalation.id,
                           escalation.step + 1, extra=extra)
            return holder
        return None

    async def record_call(
        self, escalation_id: int, step: int, holder: str, call_id: int, deadline: float
    ) -> bool:
        """The step's call (and its deadline), recorded before its POST leaves, if `holder` still
        holds the step's claim; False if another run took it over (then nothing may be dialled).
        ChainNotRunning, with nothing written, if the escalation was stopped or acknowledged
        meanwhile (while its checks waited on Slack, say): then nobody more may be rung."""
        async def write(conn: Connection) -> None:
            await _require_running(conn, escalation_id)
            await self._store.set_step_call(escalation_id, step, call_id, deadline, on=conn)

        return await self.if_held(escalation_id, step, holder, write)

    async def conclude(
        self, escalation_id: int, step: int, holder: str,
        write: Callable[[Connection], Awaitable[None]],
    ) -> bool:
        """`write(conn)`, the step's outcome decided before dialling (skipped, couldn't be
        called), if `holder` still holds the step's claim; False if another run took it over.
        ChainNotRunning, with nothing written, if the escalation was stopped or acknowledged
        meanwhile (while Slack was slow to show the person's profile, say): then that person is
        neither skipped nor paged, as nobody more is rung."""
        async def unit(conn: Connection) -> None:
            await _require_running(conn, escalation_id)
            await write(conn)

        return await self.if_held(escalation_id, step, holder, unit)

    async def before_post(self, escalation_id: int, step: int, holder: str) -> None:
        """Right before each POST of the step's call (its first, once the request budget lets
        it go after a 429's pause, and each try again after a "not now": bot/calls/retry.py), the
        same as before its record: ChainNotRunning if the escalation was stopped or acknowledged
        while the POST waited, StepTakenOver if another run took the step over; then nothing more
        is dialled."""
        async def check(conn: Connection) -> None:
            await _require_running(conn, escalation_id)

        if not await until_database_answers(
            lambda: self.if_held(escalation_id, step, holder, check),
            f"escalation {escalation_id}: reading step {step + 1}'s claim",
            extra={"escalation_id": escalation_id},
        ):
            raise StepTakenOver()

    async def holds(self, escalation_id: int, step: int, holder: str) -> bool:
        """Whether `holder` still holds the step's claim (a read: for a decision that is not the
        step's own to write, such as stopping the chain, taken just before it)."""
        return await self._claims.holder(step_key(escalation_id, step)) == holder

    async def if_held(
        self, escalation_id: int, step: int, holder: str,
        write: Callable[[Connection], Awaitable[None]],
    ) -> bool:
        """`write(conn)` in a transaction, if `holder` still holds the step's claim: what a run
        decides about its step before dialling (its call; "skipped", "couldn't be called")
        is written only while the step is its own. False if another run took it over."""
        async def unit(conn: Connection) -> bool:
            await conn.execute(_LOCK_ROW, (escalation_id,))
            if await self._claims.holder(step_key(escalation_id, step), on=conn) != holder:
                return False
            await write(conn)
            return True

        return await self._db.atomic(unit)

    async def _take_over(
        self, conn: Connection, escalation_id: int, step: int, key: str, holder: str
    ) -> bool:
        await conn.execute(_LOCK_ROW, (escalation_id,))
        row = await conn.fetchone(
            "SELECT step, step_call_id, state FROM escalations WHERE id = ?", (escalation_id,)
        )
        if (row is None or int(row["step"]) != step or row["step_call_id"] is not None
                or row["state"] != EscalationState.RUNNING):
            return False
        await self._claims.take_over_in(conn, key, holder=holder)
        return True


async def _require_running(conn: Connection, escalation_id: int) -> None:
    row = await conn.fetchone("SELECT state FROM escalations WHERE id = ?", (escalation_id,))
    if row is None or row["state"] != EscalationState.RUNNING:
        raise ChainNotRunning()
