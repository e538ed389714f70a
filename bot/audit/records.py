"""What the audit trail holds: attempts and their events, as the code reads them back (the queries
too), and the words (decisions, event kinds, reasons) they are written with. The writing is in
trail.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.calls.models import Outcome
from bot.errors import GroupLookupFailed, NotAResponder, RoleDenied
from bot.evovoice.client import EvoVoiceError, EvoVoiceStatusError, OutcomeUnknown
from bot.phone import NumberRejected, mask_numbers_in
from bot.storage.database import Database

MAX_FLOW_TEXT = 100
MAX_TEXT = 200


class Decision(StrEnum):
    ALLOWED = "allowed"  # passed every check; the result follows as an event
    DENIED = "denied"  # the requester may not call (role) or, escalating, is no responder
    REFUSED = "refused"  # the policy refused the number, flow or caller ID
    FAILED = "failed"  # the checks could not be completed (e.g. Evo Voice unreachable)
    DUPLICATE = "duplicate"  # a redelivery or double click of a request already handled
    # Asked "are you sure?" first (reason: what was asked about, e.g. `region,repeat`); how the
    # question ended follows as an event: confirmed, cancelled or expired.
    ASKED = "asked"


class EventKind(StrEnum):
    PLACED = "placed"
    FAILED = "failed"
    UNKNOWN = "unknown"
    UNTOLD = "untold"  # nobody could be told, so nothing was dialled
    CALLED_OFF = "called_off"  # an escalation step not dialled: the chain went on without it
    SESSION_FOUND = "session_found"
    NOT_FOUND = "not_found"
    ANSWERED = "answered"
    ENDED = "ended"
    HANG_UP = "hang_up"
    HANG_UP_FAILED = "hang_up_failed"
    CALLED_AGAIN = "called_again"
    UNFOLLOWED = "unfollowed"  # following stopped before the call was seen to end
    ACKNOWLEDGED = "acknowledged"  # an on-call page was acknowledged (by actor_id; reason: how)
    # How an `asked` attempt's question ended. Confirmed: its Call was clicked (by actor_id), and
    # the request it started is an attempt of its own naming this one (`confirmed_question`).
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"  # its Cancel was clicked (by actor_id): nothing dialled
    EXPIRED = "expired"  # unanswered past its lifetime: recorded when the bot erased it


# The reason of a `failed` attempt whose replica stopped before dialling it (bot/calls/untold.py).
NOT_DIALLED = "StoppedBeforeDialling"
QUESTION_ENDINGS = frozenset({EventKind.CONFIRMED, EventKind.CANCELLED, EventKind.EXPIRED})
RESULT_KINDS = frozenset({EventKind.PLACED, EventKind.FAILED, EventKind.UNKNOWN, EventKind.UNTOLD,
                          EventKind.CALLED_OFF})
RESULT_OF_OUTCOME = {
    Outcome.PLACED: EventKind.PLACED,
    Outcome.FAILED: EventKind.FAILED,
    Outcome.UNKNOWN: EventKind.UNKNOWN,
    Outcome.UNTOLD: EventKind.UNTOLD,
    Outcome.CALLED_OFF: EventKind.CALLED_OFF,
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
    # The `asked` attempt whose question this request's Call confirmed (None: none was asked).
    confirmed_question: int | None = None

    def last(self, *kinds: str) -> AuditEvent | None:
        for event in reversed(self.events):
            if event.kind in kinds:
                return event
        return None

    @property
    def result(self) -> AuditEvent | None:
        """placed, failed, unknown, untold or called_off: what dialling did (None unless
        allowed)."""
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
    # Who may act: a role, or (an escalation's requester) being a responder.
    if isinstance(exc, (RoleDenied, GroupLookupFailed, NotAResponder)):
        return Decision.DENIED
    if isinstance(exc, EvoVoiceError):
        return Decision.FAILED
    return Decision.REFUSED


def clip(text: str | None, limit: int = MAX_TEXT) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def masked_numbers(text: str | None) -> str | None:
    """`text` with every phone number in it masked: what Evo Voice says (who answered, the
    outcome) may be a number, and the audit trail keeps none in full."""
    return None if text is None else mask_numbers_in(text)


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_from_row(row: Any) -> AuditEvent:
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


def record_from_row(row: Any, events: Sequence[AuditEvent]) -> AuditRecord:
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
        confirmed_question=row["confirmed_question"],
    )


async def latest_records(
    db: Database,
    team_id: str | None = None,
    *,
    user_id: str | None = None,
    number_hash: str | None = None,
    limit: int = 20,
) -> list[AuditRecord]:
    """The latest attempts, newest first, with their events; of one Slack team, or (None) of
    every team whose people used this installation. Newest by when each happened (`at`), not
    by when it was written: a record from the spool is written after later ones."""
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
    attempts = await db.fetchall(
        f"SELECT * FROM audit_attempts WHERE {' AND '.join(where)}"
        " ORDER BY at DESC, id DESC LIMIT ?",
        (*params, limit),
    )
    if not attempts:
        return []
    ids = [int(row["id"]) for row in attempts]
    events = await db.fetchall(
        f"SELECT * FROM audit_events WHERE attempt_id IN ({','.join('?' * len(ids))})"
        " ORDER BY id",
        ids,
    )
    by_attempt: dict[int, list[AuditEvent]] = {i: [] for i in ids}
    for row in events:
        by_attempt[int(row["attempt_id"])].append(event_from_row(row))
    return [record_from_row(row, by_attempt[int(row["id"])]) for row in attempts]


async def record_of(db: Database, attempt_id: int) -> AuditRecord | None:
    row = await db.fetchone("SELECT * FROM audit_attempts WHERE id = ?", (attempt_id,))
    if row is None:
        return None
    events = await db.fetchall(
        "SELECT * FROM audit_events WHERE attempt_id = ? ORDER BY id", (attempt_id,)
    )
    return record_from_row(row, [event_from_row(e) for e in events])
