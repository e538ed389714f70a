"""The audit trail: every call attempt and what became of it, append-only, in the database.

    audit_attempts   one row per attempt: when (UTC), Slack team/user/channel, the number (masked,
                     plus a keyed hash), flow, caller ID, decision and reason; the question it
                     confirmed, if its request is a question's Call
    audit_events     what happened to an attempt afterwards, one row per fact: placed, failed,
                     unknown, untold, called_off, session_found, not_found, answered, ended
                     (outcome and duration), hang_up, hang_up_failed, called_again, unfollowed;
                     for a question (`asked`), how it ended: confirmed, cancelled, expired

Both tables are append-only: triggers in the database refuse UPDATE and DELETE, so a record stays
as it was written, whatever the code above it does. The attempt row is written *before* dialling
(decision `allowed`); the result follows as an event, so a crash mid-call still leaves a trace.
An "are you sure?" question is an attempt too (`asked`), written with the question itself, and
its end in the transaction that ends it (bot/calls/confirmations.py): a question that can't be
recorded is not asked, and an answer that can't be is not taken (the question stays).

A record that must not wait for a failing database (a refusal, a call's result, what a button did)
is kept in the spool (spool.py: AUDIT_SPOOL, by default beside a SQLite file or in the working
directory for PostgreSQL) and written once the database answers, after a restart too. Such a record
gets its key when first tried, kept with its row: a write whose answer was lost (committed, then the
connection dropped) is tried again, from the spool or from memory, and never written twice. The
attempt of a call about to be dialled is never spooled: if it can't be written, nothing is dialled.

The full number is never stored here, only its keyed hash (bot/storage/number_hash.py), so the
records of one number can be found (`/call history +1814…`) without keeping the number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

import phonenumbers

from bot.audit.records import (
    MAX_FLOW_TEXT,
    NOT_DIALLED,
    RESULT_OF_OUTCOME,
    AuditEvent,
    AuditRecord,
    Decision,
    EventKind,
    clip,
    decision_for,
    iso,
    latest_records,
    masked_numbers,
    reason_of,
    record_of,
)
from bot.audit.spool import CLAIM_PREFIX, Spool, Spooled, database_id
from bot.calls.models import CallRequest, CallResult, CheckedCall
from bot.phone import NumberRejected, mask, parse_number
from bot.storage.claims import claim_in
from bot.storage.database import Connection, Database
from bot.storage.faults import DATABASE_FAULTS, until_database_answers
from bot.storage.number_hash import NumberHasher
from bot.storage.together import NewRow

logger = logging.getLogger(__name__)

ATTEMPT_COLUMNS = ("at", "team_id", "user_id", "channel_id", "origin", "repeat_of",
                   "number_masked", "number_hash", "flow", "flow_id", "caller_id", "decision",
                   "reason", "confirmed_question")
EVENT_COLUMNS = ("attempt_id", "at", "kind", "actor_id", "reason", "session_id", "outcome",
                 "answered_by", "duration_seconds")
_TABLES = {"audit_attempts": ATTEMPT_COLUMNS, "audit_events": EVENT_COLUMNS}
# Columns added since records were first spooled: a line written by an older callbot has none.
_ADDED_LATER: dict[str, dict[str, Any]] = {"audit_attempts": {"confirmed_question": None}}


def _columns_of(table: str, values: dict[str, Any]) -> tuple[str, ...]:
    columns = _TABLES[table]
    if set(values) != set(columns):
        raise ValueError(f"{table}: columns {sorted(values)}")
    return columns


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditLog:
    def __init__(
        self,
        db: Database,
        hasher: NumberHasher,
        *,
        default_region: str = "US",
        clock: Callable[[], dt.datetime] = _utc_now,
        spool: Path | None = None,
        database: str = "",
    ) -> None:
        """`database`: the database's id (spool.database_id), which the spool's records carry."""
        self._db = db
        self.hasher = hasher
        self._default_region = default_region
        self._clock = clock
        # Where records wait for a failing database (settings.audit_spool_path); None: in memory.
        self.spool = (
            Spool(spool, db, self._write_spooled, database) if spool is not None else None
        )
        # Records waiting in memory for the database (no spool, or the spool could not be written).
        self._waiting: set[asyncio.Task[int | None]] = set()

    @classmethod
    async def open(
        cls,
        db: Database,
        configured_key: str | None = None,
        *,
        default_region: str = "US",
        clock: Callable[[], dt.datetime] = _utc_now,
        spool: Path | None = None,
    ) -> AuditLog:
        hasher = await NumberHasher.open(db, configured_key)
        database = await database_id(db) if spool is not None else ""
        log = cls(db, hasher, default_region=default_region, clock=clock, spool=spool,
                  database=database)
        if log.spool is not None and log.spool.waiting:
            log.spool.drain_soon()  # records a previous run could not write
        return log

    @classmethod
    async def spool_of(cls, db: Database, path: Path) -> Spool:
        """The spool at `path`, to write its records into `db` with no bot running (`callbot
        migrate-db`). Writing them hashes no number (their hashes are in them): the database's key
        is neither read nor made, and a throwaway key stands in for it."""
        hasher = NumberHasher(secrets.token_bytes(32))
        log = cls(db, hasher, spool=path, database=await database_id(db))
        assert log.spool is not None
        return log.spool

    async def stop(self) -> None:
        """Stop waiting for the database; the spool keeps what it holds for the next start."""
        if self.spool is not None:
            await self.spool.stop()
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)

    def number_hash(self, e164: str) -> str:
        return self.hasher(e164)

    # ------------------------------------------------------------------- what CallService reports

    async def refused(
        self, request: CallRequest, exc: BaseException, *, database_down: bool = False
    ) -> int | None:
        """The refusal's record; None when it waits for the database (`database_down`: known to
        be failing, so not tried first)."""
        values = self._attempt_from_request(request, decision_for(exc), reason_of(exc))
        return await self._insert_or_wait("audit_attempts", values, tried=not database_down)

    async def duplicate(self, request: CallRequest) -> int | None:
        """A request made again (redelivered, a form's second Submit); None when its record waits
        for the database, as a refusal's does."""
        values = self._attempt_from_request(request, Decision.DUPLICATE, None)
        return await self._insert_or_wait("audit_attempts", values, tried=True)

    async def not_dialled(
        self, key: str, *, team_id: str, user_id: str, channel_id: str, origin: str,
        number_masked: str, confirmed_question: int | None = None,
    ) -> None:
        """A request whose replica stopped after taking it, before its call's row and this record,
        as the one telling its requester knows it (calls/untold.py): no hash, no flow; once a key"""
        request = CallRequest(team_id, user_id, channel_id, "", "", origin=origin,
                              confirmed_question=confirmed_question)
        values = self._attempt_values(
            request, number_masked=number_masked, number_hash=None, flow="", flow_id=None,
            caller_id=None, decision=Decision.FAILED, reason=NOT_DIALLED,
        )
        await self._insert_or_wait("audit_attempts", values, tried=True, key=key)

    def allowed_row(self, call: CheckedCall) -> NewRow:
        """The attempt's record, to write with the call's row before dialling (bot/calls/follow.py,
        bot/storage/together.py): if it can't be written, nothing is dialled."""
        return self._checked_row(call, Decision.ALLOWED, None)

    def asked_row(self, call: CheckedCall, reasons: Iterable[str]) -> NewRow:
        """The record of an "are you sure?" question, to write with the question (reason: what
        it asks about): if it can't be written, nothing is asked."""
        return self._checked_row(call, Decision.ASKED, ",".join(sorted(reasons)))

    def _checked_row(self, call: CheckedCall, decision: Decision, reason: str | None) -> NewRow:
        return NewRow("audit_attempts", self._attempt_values(
            call.request,
            number_masked=call.number.masked,
            number_hash=self.number_hash(call.number.e164),
            flow=call.flow_name,
            flow_id=call.flow_id,
            caller_id=call.caller_id,
            decision=decision,
            reason=reason,
        ) | {"spool_key": None})  # never spooled; a row written together names every column

    async def question_ended(self, conn: Connection, attempt_id: int, kind: EventKind,
                             actor_id: str | None = None) -> None:
        """How a question (an `asked` attempt) ended, on `conn`: in the transaction that takes,
        cancels or erases it. Once per question and kind, however often it is tried (the sweep
        and a late click may both find one expired)."""
        values = self._event_values(attempt_id, kind, actor_id=actor_id)
        await self._insert_once("audit_events", values, f"question:{attempt_id}:{kind}", conn)

    async def result(self, attempt_id: int, result: CallResult) -> None:
        kind = RESULT_OF_OUTCOME.get(result.outcome)
        if kind is None:
            return
        await self.event(
            attempt_id,
            kind,
            reason=reason_of(result.error) if result.error is not None else None,
            session_id=result.session_id,
            wait_for_database=True,
        )

    # -------------------------------------------------------------------------------- plumbing

    async def event(
        self,
        attempt_id: int,
        kind: EventKind,
        *,
        actor_id: str | None = None,
        reason: str | None = None,
        session_id: str | None = None,
        outcome: str | None = None,
        answered_by: str | None = None,
        duration_seconds: float | None = None,
        wait_for_database: bool = False,
        key: str | None = None,
    ) -> None:
        """Write one event. `wait_for_database`: when the database fails, the event is kept
        (spool.py) and written once it answers, instead of raising. `key`: the fact's own key
        (else a random one), for work the database's failing, or a restart, may repeat: one row
        however often it is written, whether it waits for the database or raises."""
        values = self._event_values(
            attempt_id, kind, actor_id=actor_id, reason=reason, session_id=session_id,
            outcome=outcome, answered_by=answered_by, duration_seconds=duration_seconds)
        if wait_for_database:
            await self._insert_or_wait("audit_events", values, tried=True, key=key)
        elif key is not None:
            await self._insert_once("audit_events", values, key)
        else:
            await self._insert("audit_events", values)

    def _event_values(
        self, attempt_id: int, kind: EventKind, *, actor_id: str | None = None,
        reason: str | None = None, session_id: str | None = None, outcome: str | None = None,
        answered_by: str | None = None, duration_seconds: float | None = None,
    ) -> dict[str, Any]:
        return dict(zip(EVENT_COLUMNS, (
            attempt_id, iso(self._clock()), str(kind), actor_id, clip(reason), session_id,
            clip(masked_numbers(outcome)), clip(masked_numbers(answered_by)), duration_seconds,
        ), strict=True))

    def _attempt_from_request(
        self, request: CallRequest, decision: Decision, reason: str | None
    ) -> dict[str, Any]:
        masked, hashed = self._number_facts(request.number_text)
        return self._attempt_values(
            request,
            number_masked=masked,
            number_hash=hashed,
            # Typed words, kept forever and shown to Managers: a number among them is masked.
            flow=clip(masked_numbers(request.flow_text.strip()), MAX_FLOW_TEXT) or "",
            flow_id=None,
            caller_id=None,
            decision=decision,
            reason=reason,
        )

    def masked_as_typed(self, text: str) -> str:
        """A number as typed, masked as a record holds it: read in the default region ("814-404-
        3093": `+1 814 ••• 3093`, not text masking's `•••93`); no hash (a /call's note asks it)."""
        return mask(self._e164_of(text) or text)

    def _number_facts(self, text: str) -> tuple[str, str | None]:
        """Masked and hashed forms of whatever number was typed, as far as it can be read."""
        e164 = self._e164_of(text)
        return (mask(text), None) if e164 is None else (mask(e164), self.number_hash(e164))

    def _e164_of(self, text: str) -> str | None:
        try:
            number = parse_number(text, self._default_region)
        except NumberRejected:
            return None
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)

    def _attempt_values(
        self,
        request: CallRequest,
        *,
        number_masked: str,
        number_hash: str | None,
        flow: str,
        flow_id: str | None,
        caller_id: str | None,
        decision: Decision,
        reason: str | None,
    ) -> dict[str, Any]:
        return dict(zip(ATTEMPT_COLUMNS, (
            iso(self._clock()), request.team_id, request.user_id, request.channel_id,
            request.origin, request.repeat_of, number_masked, number_hash, flow, flow_id,
            caller_id, str(decision), reason, request.confirmed_question,
        ), strict=True))

    async def _insert(self, table: str, values: dict[str, Any], conn: Connection | None = None
                      ) -> int:
        columns = _columns_of(table, values)
        row = await (conn or self._db).fetchone(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            " RETURNING id",
            [values[name] for name in columns],
        )
        assert row is not None
        return int(row[0])

    async def _insert_or_wait(self, table: str, values: dict[str, Any], *, tried: bool,
                              key: str | None = None) -> int | None:
        # The record's key is kept with its row from the first try on: a write that committed but
        # lost its answer (the connection dropped after COMMIT, a timeout) is tried again, from
        # the spool or from memory, and that try finds the key taken instead of writing it twice.
        key = key or secrets.token_hex(16)
        if tried:
            try:
                return await self._insert_once(table, values, key)
            except DATABASE_FAULTS as exc:
                logger.warning("an audit record waits for the database (%s)", exc)
        if self.spool is not None and self.spool.keep(Spooled(table, values, key)):
            return None
        # No spool (AUDIT_SPOOL=off), or it could not be written: the record waits in memory, and
        # a restart meanwhile loses it.
        task = asyncio.create_task(until_database_answers(
            partial(self._insert_once, table, values, key),
            f"writing an audit record ({table})",
        ), name="audit record waiting for the database")
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)
        return None

    async def _insert_once(self, table: str, values: dict[str, Any], key: str,
                           conn: Connection | None = None) -> int | None:
        """The record's row, keeping `key` (`spool_key`, unique); None if a row has it already."""
        columns = _columns_of(table, values)
        row = await (conn or self._db).fetchone(
            f"INSERT INTO {table} ({', '.join(columns)}, spool_key)"
            f" VALUES ({', '.join('?' * (len(columns) + 1))})"
            " ON CONFLICT (spool_key) WHERE spool_key IS NOT NULL DO NOTHING RETURNING id",
            [*(values[name] for name in columns), key],
        )
        return int(row[0]) if row is not None else None

    async def _write_spooled(self, conn: Connection, record: Spooled) -> bool:
        """A spooled record, once, however long after it was first written (or first tried: the
        row keeps the record's key, so writing it again writes nothing)."""
        if record.table not in _TABLES:
            logger.error("audit spool: a record for %r is dropped", record.table)
            return False
        # The claim is what a callbot from before migration 12 goes by: its rows hold no key, so
        # a record it wrote, and a process of it draining the same file, are only known by it.
        if not await claim_in(conn, CLAIM_PREFIX + record.key, time.time()):
            return False
        values = _ADDED_LATER.get(record.table, {}) | record.values
        return await self._insert_once(record.table, values, record.key, conn) is not None

    # -------------------------------------------------------------------------------- history

    async def history(
        self,
        team_id: str | None = None,
        *,
        user_id: str | None = None,
        number_hash: str | None = None,
        limit: int = 20,
    ) -> list[AuditRecord]:
        """The latest attempts, newest first, with their events (records.py: latest_records)."""
        return await latest_records(self._db, team_id, user_id=user_id, number_hash=number_hash,
                                    limit=limit)

    async def record(self, attempt_id: int) -> AuditRecord | None:
        return await record_of(self._db, attempt_id)

__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "Decision",
    "EventKind",
    "decision_for",
    "reason_of",
]
