"""The audit trail: every call attempt and what became of it, append-only, in the database.

    audit_attempts   one row per attempt: when (UTC), Slack team/user/channel, the number (masked,
                     plus a keyed hash), flow, caller ID, decision and reason
    audit_events     what happened to an attempt afterwards, one row per fact: placed, failed,
                     unknown, untold, session_found, not_found, answered, ended (outcome and
                     duration), hang_up, hang_up_failed, called_again, unfollowed

Both tables are append-only: triggers in the database refuse UPDATE and DELETE, so a record stays
as it was written, whatever the code above it does. The attempt row is written *before* dialling
(decision `allowed`); the result follows as an event, so a crash mid-call still leaves a trace.

The full number is never stored here, only its keyed hash (bot/storage/number_hash.py), so the
records of one number can be found (`/call history +1814…`) without keeping the number.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import phonenumbers

from bot.calls.models import CallRequest, CallResult, CheckedCall, Outcome
from bot.errors import GroupLookupFailed, RoleDenied
from bot.evovoice.client import EvoVoiceError, EvoVoiceStatusError, OutcomeUnknown
from bot.phone import NumberRejected, mask, parse_number
from bot.storage.database import Database
from bot.storage.number_hash import NumberHasher

logger = logging.getLogger(__name__)

MAX_FLOW_TEXT = 100
MAX_TEXT = 200


class Decision(StrEnum):
    ALLOWED = "allowed"  # passed every check; the result follows as an event
    DENIED = "denied"  # the requester may not call (role)
    REFUSED = "refused"  # the policy refused the number, flow or caller ID
    FAILED = "failed"  # the checks could not be completed (e.g. Evo Voice unreachable)
    DUPLICATE = "duplicate"  # a redelivery or double click of a request already handled


class EventKind(StrEnum):
    PLACED = "placed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    UNTOLD = "untold"  # nobody could be told, so nothing was dialled
    SESSION_FOUND = "session_found"
    NOT_FOUND = "not_found"
    ANSWERED = "answered"
    ENDED = "ended"
    HANG_UP = "hang_up"
    HANG_UP_FAILED = "hang_up_failed"
    CALLED_AGAIN = "called_again"
    UNFOLLOWED = "unfollowed"  # following stopped before the call was seen to end
    ACKNOWLEDGED = "acknowledged"  # an on-call page was acknowledged (by actor_id; reason: how)


RESULT_KINDS = frozenset({EventKind.PLACED, EventKind.FAILED, EventKind.UNKNOWN, EventKind.UNTOLD})
_RESULT_OF_OUTCOME = {
    Outcome.PLACED: EventKind.PLACED,
    Outcome.FAILED: EventKind.FAILED,
    Outcome.UNKNOWN: EventKind.UNKNOWN,
    Outcome.UNTOLD: EventKind.UNTOLD,
}


@dataclass(frozen=True)
class AuditEvent:
    kind: str
    at: str
    actor_id: str | None = None
    reason: str | None = None
    session_id: str | None = None
    outcome: str | None = None
    answered_by: str | None = None
    duration_seconds: float | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One attempt with everything that happened to it, oldest event first."""

    id: int
    at: str
    team_id: str
    user_id: str
    channel_id: str
    origin: str
    repeat_of: int | None
    number_masked: str
    number_hash: str | None
    flow: str
    flow_id: str | None
    caller_id: str | None
    decision: str
    reason: str | None
    events: tuple[AuditEvent, ...] = ()

    def last(self, *kinds: str) -> AuditEvent | None:
        for event in reversed(self.events):
            if event.kind in kinds:
                return event
        return None

    @property
    def result(self) -> AuditEvent | None:
        """placed, failed, unknown or untold: what dialling did (None unless allowed)."""
        return self.last(*RESULT_KINDS)

    @property
    def session_id(self) -> str | None:
        for event in reversed(self.events):
            if event.session_id:
                return event.session_id
        return None


def reason_of(exc: BaseException) -> str:
    """The error's class and code, never its text (which may quote what the user typed)."""
    name = type(exc).__name__
    if isinstance(exc, NumberRejected):
        return f"{name}:{exc.code}"
    if isinstance(exc, OutcomeUnknown):
        return f"{name}:{exc.cause}"
    if isinstance(exc, EvoVoiceStatusError):
        return f"{name}:{exc.status}" + (f":{exc.error_code}" if exc.error_code else "")
    return name


def decision_for(exc: BaseException) -> Decision:
    if isinstance(exc, (RoleDenied, GroupLookupFailed)):
        return Decision.DENIED
    if isinstance(exc, EvoVoiceError):
        return Decision.FAILED
    return Decision.REFUSED


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


class AuditLog:
    def __init__(
        self,
        db: Database,
        hasher: NumberHasher,
        *,
        default_region: str = "US",
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._db = db
        self.hasher = hasher
        self._default_region = default_region
        self._clock = clock

    @classmethod
    async def open(
        cls,
        db: Database,
        configured_key: str | None = None,
        *,
        default_region: str = "US",
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> AuditLog:
        hasher = await NumberHasher.open(db, configured_key)
        return cls(db, hasher, default_region=default_region, clock=clock)

    def number_hash(self, e164: str) -> str:
        return self.hasher(e164)

    # ------------------------------------------------------------------- what CallService reports

    async def refused(self, request: CallRequest, exc: BaseException) -> int:
        return await self._attempt_from_request(request, decision_for(exc), reason_of(exc))

    async def duplicate(self, request: CallRequest) -> int:
        return await self._attempt_from_request(request, Decision.DUPLICATE, None)

    async def allowed(self, call: CheckedCall) -> int:
        request = call.request
        return await self._insert_attempt(
            request,
            number_masked=call.number.masked,
            number_hash=self.number_hash(call.number.e164),
            flow=call.flow_name,
            flow_id=call.flow_id,
            caller_id=call.caller_id,
            decision=Decision.ALLOWED,
            reason=None,
        )

    async def result(self, attempt_id: int, result: CallResult) -> None:
        kind = _RESULT_OF_OUTCOME.get(result.outcome)
        if kind is None:
            return
        await self.event(
            attempt_id,
            kind,
            reason=reason_of(result.error) if result.error is not None else None,
            session_id=result.session_id,
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
    ) -> None:
        await self._db.execute(
            "INSERT INTO audit_events (attempt_id, at, kind, actor_id, reason, session_id, outcome,"
            " answered_by, duration_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                attempt_id,
                _iso(self._clock()),
                str(kind),
                actor_id,
                _clip(reason),
                session_id,
                _clip(outcome),
                _clip(answered_by),
                duration_seconds,
            ),
        )

    async def _attempt_from_request(
        self, request: CallRequest, decision: Decision, reason: str | None
    ) -> int:
        masked, hashed = self._number_facts(request.number_text)
        return await self._insert_attempt(
            request,
            number_masked=masked,
            number_hash=hashed,
            flow=_clip(request.flow_text.strip(), MAX_FLOW_TEXT) or "",
            flow_id=None,
            caller_id=None,
            decision=decision,
            reason=reason,
        )

    def _number_facts(self, text: str) -> tuple[str, str | None]:
        """Masked and hashed forms of whatever number was typed, as far as it can be read."""
        try:
            number = parse_number(text, self._default_region)
        except NumberRejected:
            return mask(text), None
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        return mask(e164), self.number_hash(e164)

    async def _insert_attempt(
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
    ) -> int:
        values = (
            _iso(self._clock()),
            request.team_id,
            request.user_id,
            request.channel_id,
            request.origin,
            request.repeat_of,
            number_masked,
            number_hash,
            flow,
            flow_id,
            caller_id,
            str(decision),
            reason,
        )

        row = await self._db.fetchone(
            "INSERT INTO audit_attempts (at, team_id, user_id, channel_id, origin, repeat_of,"
            " number_masked, number_hash, flow, flow_id, caller_id, decision, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            values,
        )
        assert row is not None
        return int(row[0])

    # -------------------------------------------------------------------------------- history

    async def history(
        self,
        team_id: str | None = None,
        *,
        user_id: str | None = None,
        number_hash: str | None = None,
        limit: int = 20,
    ) -> list[AuditRecord]:
        """The latest attempts, newest first, with their events; of one Slack team, or (None) of
        every team whose people used this installation."""
        where: list[str] = ["1 = 1"]
        params: list[str] = []
        if team_id is not None:
            where.append("team_id = ?")
            params.append(team_id)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if number_hash is not None:
            where.append("number_hash = ?")
            params.append(number_hash)
        attempts = await self._db.fetchall(
            f"SELECT * FROM audit_attempts WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        if not attempts:
            return []
        ids = [int(row["id"]) for row in attempts]
        events = await self._db.fetchall(
            f"SELECT * FROM audit_events WHERE attempt_id IN ({','.join('?' * len(ids))})"
            " ORDER BY id",
            ids,
        )
        by_attempt: dict[int, list[AuditEvent]] = {i: [] for i in ids}
        for row in events:
            by_attempt[int(row["attempt_id"])].append(_event(row))
        return [_record(row, by_attempt[int(row["id"])]) for row in attempts]

    async def record(self, attempt_id: int) -> AuditRecord | None:
        row = await self._db.fetchone("SELECT * FROM audit_attempts WHERE id = ?", (attempt_id,))
        if row is None:
            return None
        events = await self._db.fetchall(
            "SELECT * FROM audit_events WHERE attempt_id = ? ORDER BY id", (attempt_id,)
        )
        return _record(row, [_event(e) for e in events])


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(row: Any) -> AuditEvent:
    return AuditEvent(
        kind=row["kind"],
        at=row["at"],
        actor_id=row["actor_id"],
        reason=row["reason"],
        session_id=row["session_id"],
        outcome=row["outcome"],
        answered_by=row["answered_by"],
        duration_seconds=row["duration_seconds"],
    )


def _record(row: Any, events: Sequence[AuditEvent]) -> AuditRecord:
    return AuditRecord(
        id=int(row["id"]),
        at=row["at"],
        team_id=row["team_id"],
        user_id=row["user_id"],
        channel_id=row["channel_id"],
        origin=row["origin"],
        repeat_of=row["repeat_of"],
        number_masked=row["number_masked"],
        number_hash=row["number_hash"],
        flow=row["flow"],
        flow_id=row["flow_id"],
        caller_id=row["caller_id"],
        decision=row["decision"],
        reason=row["reason"],
        events=tuple(events),
    )


__all__ = [
    "AuditEvent",
    "AuditLog",
    "AuditRecord",
    "Decision",
    "EventKind",
    "decision_for",
    "reason_of",
]
