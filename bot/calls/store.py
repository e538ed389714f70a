"""Calls after placing: the working state behind each status message, kept in the database.

One row per call that got a status message (placed, outcome unknown, or failed), written as
"dialling" just before the call is dialled. The follower reads and writes it as the call goes on,
the buttons read it, and after a restart the calls still being followed (or still "dialling") are
found here. Unlike the audit trail this is mutable state, not a record: the status
message is always drawn from the row as it is now.

The full number is kept only as long as a button may need it (Call again, or finding the session of
an unconfirmed call): `forget_numbers()` erases it once a call is over and older than the retention.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from typing import Any, TypeVar

from bot.storage.claims import Untold
from bot.storage.database import Connection, Database, IntegrityError
from bot.storage.faults import DATABASE_FAULTS
from bot.storage.leases import LAPSED_ROWS
from bot.storage.together import NewRow, SlotFirst, write_together

logger = logging.getLogger(__name__)


T = TypeVar("T")


class CallState(StrEnum):
    FINDING = "finding"  # placed or unconfirmed; its session is not known yet
    CALLING = "calling"  # session known, not ringing yet
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"
    NOT_FOUND = "not_found"  # no session showed up in time
    LOST = "lost"  # stopped following before the end was seen
    FAILED = "failed"  # creating the call failed: nothing was dialled


LIVE_STATES = frozenset({CallState.CALLING, CallState.RINGING, CallState.CONNECTED})
FINAL_STATES = frozenset(
    {CallState.ENDED, CallState.NOT_FOUND, CallState.LOST, CallState.FAILED}
)


class Placement(StrEnum):
    """What `POST /sessions/outgoing` told us."""

    PLACED = "placed"
    UNKNOWN = "unknown"
    FAILED = "failed"
    # Written before the POST, replaced by one of the above once it answered: a row still
    # "dialling" after a restart is a call whose POST may have reached Evo Voice unrecorded.
    DIALLING = "dialling"


@dataclass(frozen=True)
class TrackedCall:
    id: int
    attempt_id: int | None
    created_at: float  # Unix time of the attempt
    team_id: str
    requester_id: str
    channel_id: str
    parent_ts: str | None
    status_ts: str | None
    e164: str | None
    number_masked: str
    flow_id: str
    flow_name: str
    caller_id: str | None
    placement: str
    note: str | None  # what went wrong, in words, for failed and unconfirmed calls
    session_id: str | None
    state: str
    following: bool
    answered: bool = False
    answered_by: str | None = None
    outcome: str | None = None
    duration_seconds: float | None = None
    hung_up_by: str | None = None
    called_again_by: str | None = None
    shown_digest: str | None = None
    marked: bool = False
    # Why the session can't be read now (reads failing for `find_for`), in words; None once read.
    unreadable: str | None = None
    # The parent message posted while the call was being dialled (`parent_ts`: its thread then).
    parent_posted_ts: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def known_over(self) -> bool:
        """Final, and known to be over: it ended, or nothing was dialled. Not a call given up on
        (NOT_FOUND, LOST): the bot stopped following it, and its phone may still ring."""
        return self.state in (CallState.ENDED, CallState.FAILED)

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_STATES and self.session_id is not None


_COLUMNS = tuple(f.name for f in fields(TrackedCall))
_UPDATABLE = frozenset(_COLUMNS) - {"id", "attempt_id", "created_at", "team_id", "requester_id"}
_BOOLEANS = frozenset({"following", "answered", "marked"})


_FLOATS = frozenset({"created_at", "duration_seconds"})
# What a new row holds where nothing is given (the table's defaults; NULL for the rest).
_DEFAULTS = {f.name: f.default for f in fields(TrackedCall) if f.default is not MISSING}


async def _update(
    on: Connection | Database, call_id: int, condition: str, params: tuple[Any, ...],
    values: Mapping[str, Any],
) -> int:
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    assignments = ", ".join(f"{name} = ?" for name in values)
    return await on.execute(
        f"UPDATE calls SET {assignments} WHERE id = ?{condition}",
        (*values.values(), call_id, *params),
    )


def _call(row: Any) -> TrackedCall:
    values = {name: row[name] for name in _COLUMNS}
    for name in _BOOLEANS:
        values[name] = bool(values[name])
    for name in _FLOATS:
        # A row read back as JSON (bot/storage/together.py) gives a whole number as an int.
        if values[name] is not None:
            values[name] = float(values[name])
    return TrackedCall(**values)


class CallStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def atomic(self, unit: Callable[[Connection], Coroutine[Any, Any, T]]) -> T:
        """`unit(conn)` in one transaction of the store's database (see Database.atomic)."""
        return await self._db.atomic(unit)

    async def insert(
        self, *, then: Callable[[Connection, int], Awaitable[None]] | None = None, **values: Any
    ) -> TrackedCall:
        """A new row; `then(conn, row_id)`, if given, writes in the same transaction (the row's
        lease, so that no replica ever sees the row without it)."""
        if then is None:
            return await self.insert_in(self._db, **values)
        return await self.atomic(lambda conn: self.insert_in(conn, then=then, **values))

    @staticmethod
    async def insert_in(
        conn: Connection,
        *,
        then: Callable[[Connection, int], Awaitable[None]] | None = None,
        **values: Any,
    ) -> TrackedCall:
        """`insert` within the caller's own transaction `conn` (`then` on it too)."""
        names = [name for name in values if name in _COLUMNS and name != "id"]
        if len(names) != len(values):
            raise ValueError(f"unknown columns: {sorted(set(values) - set(names))}")
        sql = (f"INSERT INTO calls ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
               " RETURNING *")
        row = await conn.fetchone(sql, [values[name] for name in names])
        assert row is not None
        call = _call(row)
        if then is not None:
            await then(conn, call.id)
        return call

    async def insert_together(
        self, values: Mapping[str, Any], *, attempt: NewRow | None = None,
        lease: NewRow | None = None, slot: SlotFirst[Any] | None = None,
        untold: Untold | None = None,
    ) -> TrackedCall:
        """A new row with its `attempt`'s record (whose id it keeps as `attempt_id`) and its
        `lease`, after `slot` is taken, its request's note (`untold`) cleared: all together or
        none, in one round trip (bot/storage/together.py). Raises what taking the slot raises, or
        AlreadyTold, with nothing written."""
        unknown = set(values) - set(_COLUMNS) | {"id", "attempt_id"} & set(values)
        if unknown:
            raise ValueError(f"unknown columns: {sorted(unknown)}")
        whole = {name: values.get(name, _DEFAULTS.get(name)) for name in _COLUMNS
                 if name not in ("id", "attempt_id")}
        row = NewRow("calls", whole, ids={"attempt_id": attempt.table} if attempt else {})
        rows = [r for r in (attempt, row, lease) if r is not None]
        _, inserted = await write_together(self._db, rows, slot, untold)
        return _call(inserted["calls"])

    async def unanswered(self, requester_id: str, created_at: float) -> TrackedCall | None:
        """The row `insert_together` wrote for `requester_id` at `created_at`, still "being
        dialled", if that write committed though its answer was lost; else None."""
        row = await self._db.fetchone(
            "SELECT * FROM calls WHERE requester_id = ? AND created_at = ? AND placement = ?",
            (requester_id, created_at, str(Placement.DIALLING)),
        )
        return _call(row) if row is not None else None

    async def get(self, call_id: int) -> TrackedCall | None:
        row = await self._db.fetchone("SELECT * FROM calls WHERE id = ?", (call_id,))
        return _call(row) if row is not None else None

    async def update(self, call_id: int, **values: Any) -> None:
        if values:
            await _update(self._db, call_id, "", (), values)

    async def update_followed(self, call_id: int, **values: Any) -> bool:
        """`update` a call still being followed; False if it no longer is: its end was recorded
        meanwhile (by the replica that took it over while this one stalled), and a read of the
        call from before that end must not write over it."""
        return await _update(self._db, call_id, " AND following = 1", (), values) == 1

    async def note_hang_up(self, call_id: int, by: str) -> None:
        """Who hangs the call up (`by`), on its row before Evo Voice is asked: a PatchSession may
        only store the `Disconnected` it sends (bot/calls/progress.py), and a poll reading it
        before the hang-up's answer would take it for the end, the call left unfollowed as it
        rang. Tried once: a failing database must not hold the hang-up back (a /call's Hang up,
        an escalation's, nor the chain's next step)."""
        try:
            await self.update(call_id, hung_up_by=by)
        except DATABASE_FAULTS as exc:
            logger.warning("call %s: who hangs it up could not be noted first (the database "
                           "failed: %s); hung up all the same", call_id, exc,
                           extra={"call_id": call_id})

    async def unnote_hang_up(self, call_id: int, by: str, before: str | None) -> None:
        """`by`'s hang-up, noted before it was asked for, did nothing: `hung_up_by` as it was
        `before`, unless another hang-up has been noted since."""
        await self._db.execute("UPDATE calls SET hung_up_by = ? WHERE id = ? AND hung_up_by = ?",
                               (before, call_id, by))

    async def fill_in(self, call_id: int, *, on: Connection | None = None, **values: Any) -> bool:
        """`update` a row still "being dialled" (`on`: the caller's transaction), with its POST's
        answer or as reconciled after its replica went; False if it no longer is: the first of
        the two owns the call (a replica that stalled past its lease, its POST then answered,
        finds it reconciled and told by another, and must neither write over that nor tell the
        call a second time)."""
        return await _update(on or self._db, call_id, " AND placement = ?",
                             (str(Placement.DIALLING),), values) == 1

    async def note_parent(self, call_id: int, channel: str, thread_ts: str, parent_ts: str) -> None:
        """Where the parent of a call still being dialled was posted, in thread `thread_ts`."""
        await self._db.execute(
            "UPDATE calls SET channel_id = ?, parent_ts = ?, parent_posted_ts = ?"
            " WHERE id = ? AND placement = ?",
            (channel, thread_ts, parent_ts, call_id, str(Placement.DIALLING)),
        )

    @staticmethod
    async def keep_status_ts(conn: Connection, call_id: int, ts: str) -> None:
        """The status message's `ts`, in the transaction that forgets its kept post
        (bot/slack/outbox.py), unless the follower kept it already. What it shows is not known
        (drawn when the post was kept; the outcome, say, relayed meanwhile): the next refresh
        draws it again."""
        await conn.execute(
            "UPDATE calls SET status_ts = ?, shown_digest = NULL WHERE id = ?"
            " AND status_ts IS NULL", (ts, call_id)
        )

    @staticmethod
    async def status_by_dm(conn: Connection, call_id: int) -> None:
        """The status message will never be in the call's thread (its kept post refused there
        for good, or given up on): the status goes to the requester by direct message from now
        on, as a relayed call's does (`shown_digest` without `status_ts`: status_message.py),
        unless the message is shown somewhere already."""
        await conn.execute(
            "UPDATE calls SET shown_digest = '' WHERE id = ? AND status_ts IS NULL"
            " AND shown_digest IS NULL", (call_id,)
        )

    async def claim_session(self, call_id: int, session_id: str) -> bool:
        """Tie a session to the call, unless another call already has it."""
        try:
            changed = await self._db.execute(
                "UPDATE calls SET session_id = ? WHERE id = ? AND session_id IS NULL",
                (session_id, call_id),
            )
        except IntegrityError:
            return False
        return changed == 1

    async def sessions_taken(self, session_ids: list[str]) -> set[str]:
        if not session_ids:
            return set()
        rows = await self._db.fetchall(
            "SELECT session_id FROM calls WHERE session_id IN "
            f"({','.join('?' * len(session_ids))})",
            session_ids,
        )
        return {str(row[0]) for row in rows}

    async def dialling(self) -> list[TrackedCall]:
        """Calls whose POST was sent (or about to be) when the bot stopped, before its answer."""
        # Off their own index (migration 14), whose predicate names the value: PostgreSQL can't
        # match a parameter to it in a plan for any value (asyncpg's statements soon run one).
        rows = await self._db.fetchall(
            f"SELECT * FROM calls WHERE placement = '{Placement.DIALLING}' ORDER BY id"
        )
        return [_call(row) for row in rows]

    async def being_followed(self) -> list[TrackedCall]:
        rows = await self._db.fetchall("SELECT * FROM calls WHERE following = 1 ORDER BY id")
        return [_call(row) for row in rows]

    async def over_since(self, created_after: float) -> list[TrackedCall]:
        """The calls over (no longer followed) that were placed at `created_after` or later."""
        final = sorted(str(state) for state in FINAL_STATES)
        rows = await self._db.fetchall(
            f"SELECT * FROM calls WHERE following = 0 AND state IN ({','.join('?' * len(final))})"
            " AND created_at >= ? ORDER BY id",
            (*final, created_after),
        )
        return [_call(row) for row in rows]

    async def over_with_lapsed_lease(
        self, kind: str, now: float, created_after: float
    ) -> list[TrackedCall]:
        """The calls over, placed at `created_after` or later, whose lease (`kind`,
        bot/storage/leases.py) lapsed before `now`: the replica showing their end (a final edit
        Slack refused, tried again under the lease) died or stopped. A lease keeper's round asks
        every few seconds, so only the leases table is read (the leases held and those left to
        lapse, a handful), never every finished call of the day."""
        final = sorted(str(state) for state in FINAL_STATES)
        rows = await self._db.fetchall(
            f"SELECT * FROM calls WHERE id IN ({LAPSED_ROWS}) AND following = 0"
            f" AND state IN ({','.join('?' * len(final))}) AND created_at >= ? ORDER BY id",
            (kind, now, *final, created_after),
        )
        return [_call(row) for row in rows]

    async def forget_numbers(self, created_before: float) -> int:
        """Erase the full number of calls that are over and older than `created_before`."""
        return await self._db.erase(
            "UPDATE calls SET e164 = NULL WHERE e164 IS NOT NULL AND following = 0"
            " AND created_at < ?",
            (created_before,),
        )
