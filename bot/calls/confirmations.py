"""Calls waiting for their requester's "yes": a number outside the home region, a quick repeat.

The question goes out with a button whose value is only a random id; the request itself (with its
number) waits here, in the database, so that the button carries no phone number and a restart
doesn't lose it. A pending call is used at most once: `take()` deletes it in the same statement
that reads it (`put_back()` asks it again, as it was, once its Call was refused for a while and
dialled nothing). It expires after `CONFIRMATION_LIFETIME_SECONDS`.

The id begins with the second it was asked (`asked_at`): an expired question is erased within
seconds (it holds the number in clear), and a click that comes later must still hear that it
expired, not that it was answered or cancelled.

Each question is in the audit trail (bot/audit/trail.py): an attempt `asked`, written in the
transaction that stores the question, whose id its row keeps (`attempt_id`). Whatever ends it is
that attempt's event, in the transaction that removes the row: `confirmed` (a take), `cancelled`,
or `expired` when an expired row is erased by a new question or a click that finds it; the lease
keeper's sweep, which erases the rest within seconds of their expiry while a bot runs (else at the
next start), records them just before, each event once however often it is written. A click after
its erasure finds no row and records nothing more.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bot.audit.records import EventKind
from bot.audit.trail import AuditLog
from bot.storage.claims import claim_in, note_in
from bot.storage.database import Connection, Database, Row
from bot.storage.faults import DATABASE_FAULTS
from bot.storage.together import NewRow, insert_rows

logger = logging.getLogger(__name__)

CONFIRMATION_LIFETIME_SECONDS = 600.0
_FORGET_EXPIRED = "DELETE FROM pending_confirmations WHERE created_at < ?"
_EXPIRED = ("SELECT attempt_id FROM pending_confirmations"
            " WHERE created_at < ? AND attempt_id IS NOT NULL")
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# An id as `create` makes it: the Unix second it was asked, in letters (so that no digits of the
# id can be mistaken for a number's), then a random part.
_STAMPED_ID = re.compile(r"([a-z]{7})-[A-Za-z0-9_-]{24}")
_STAMP_DIGITS = "abcdefghijklmnopqrstuvwxyz"
_COLUMN_NAMES = ("id", "created_at", "user_id", "reasons", "request", "attempt_id")
_COLUMNS = ", ".join(_COLUMN_NAMES)
_INSERT = (f"INSERT INTO pending_confirmations ({_COLUMNS})"
           f" VALUES ({', '.join('?' * len(_COLUMN_NAMES))})")


class Reason(StrEnum):
    REGION = "region"  # the number is in an allowed region outside `confirm_outside`
    REPEAT = "repeat"  # same requester, number and flow within the repeat window


class TakeStatus(StrEnum):
    TAKEN = "taken"
    GONE = "gone"  # never existed, already used or cancelled
    EXPIRED = "expired"
    NOT_YOURS = "not_yours"
    DUPLICATE = "duplicate"  # this click was already taken (a double or redelivered click)
    CONFIRMED = "confirmed"  # (cancel) gone: its requester's Call took it first


@dataclass(frozen=True)
class Pending:
    id: str
    user_id: str
    reasons: frozenset[Reason]
    request: dict[str, Any]  # the CallRequest's fields (see calls.py); no response_url
    created_at: float
    note: str | None = None  # what its claim keeps for its requester (take's `note`)
    attempt_id: int | None = None  # its `asked` record in the audit trail (None: not recorded)
    holder: str | None = None  # who holds the claim its take made (`put_back` gives it back)


@dataclass(frozen=True)
class Taken:
    status: TakeStatus
    pending: Pending | None = None


def confirm_claim(confirmation_id: str, user_id: str) -> str:
    """The claim a Call click takes with the question (`take`): kept only if it took it."""
    return f"confirm:{confirmation_id}:{user_id}"


def valid_id(value: object) -> bool:
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def new_id(now: float) -> str:
    stamp, second = "", int(now)
    for _ in range(7):
        second, digit = divmod(second, len(_STAMP_DIGITS))
        stamp = _STAMP_DIGITS[digit] + stamp
    return f"{stamp}-{secrets.token_urlsafe(18)}"


def asked_at(confirmation_id: str) -> float | None:
    """When the question of this id was asked (to the second), if its id says so."""
    match = _STAMPED_ID.fullmatch(confirmation_id)
    if match is None:
        return None
    second = 0
    for letter in match.group(1):
        second = second * len(_STAMP_DIGITS) + _STAMP_DIGITS.index(letter)
    return float(second)


class Confirmations:
    def __init__(
        self,
        db: Database,
        *,
        lifetime: float = CONFIRMATION_LIFETIME_SECONDS,
        clock: Callable[[], float] = time.time,
        audit: AuditLog | None = None,
    ) -> None:
        """`audit`: where each question's end is recorded; None, nowhere (a store on its own)."""
        self._db = db
        self._audit = audit
        self._lifetime = lifetime
        # Public: a test moves the running bot's questions past their lifetime with it.
        self.clock = clock

    @property
    def lifetime(self) -> float:
        return self._lifetime

    async def create(
        self, user_id: str, reasons: frozenset[Reason], request: dict[str, Any],
        asked: NewRow | None = None,
    ) -> str:
        """`asked`: the question's audit record (AuditLog.asked_row), written with it."""
        now = self.clock()
        confirmation_id = new_id(now)
        async with self._db.transaction() as tx:
            # Expired questions are only a risk kept on disk; clear them as new ones come.
            await self._forget_expired_in(tx, now - self._lifetime)
            attempt_id = (await insert_rows(tx, [asked]))[asked.table]["id"] if asked else None
            await tx.execute(
                _INSERT,
                (confirmation_id, now, user_id, ",".join(sorted(reasons)), json.dumps(request),
                 attempt_id),
            )
        return confirmation_id

    async def take(self, confirmation_id: str, user_id: str, *, claim: str | None = None,
                   note: Callable[[dict[str, Any]], str] | None = None) -> Taken:
        """Remove and return the pending call, if it exists, belongs to `user_id` and is fresh.

        `claim`: a key claimed in the same transaction (bot/storage/claims.py), DUPLICATE when it
        was claimed before; kept only when the question is taken (`cancel` reads it). Together,
        so that a database failing in between leaves neither taken and the next click finds the
        question as it was. A take that committed and then lost its
        answer is given back (the claim, under this take's own holder, and the question), so the
        click the refusal asks for is not ignored as a duplicate of one that dialled nothing.
        `note`: what the claim keeps for the requester of a question taken (from its request's
        fields; bot/calls/untold.py), written in the same transaction: no question is ever gone
        without it, whenever the bot dies."""
        if not valid_id(confirmation_id):
            return Taken(TakeStatus.GONE)
        now = self.clock()
        holder = secrets.token_hex(16)
        removed: Row | None = None
        written: str | None = None
        try:
            async with self._db.transaction() as tx:
                if claim is not None and not await claim_in(tx, claim, now, holder=holder):
                    return Taken(TakeStatus.DUPLICATE)
                row = await tx.fetchone(
                    f"SELECT {_COLUMNS} FROM pending_confirmations WHERE id = ?", (confirmation_id,)
                )
                # Taken only if this transaction removes it: on PostgreSQL a Cancel (or another
                # replica's take) may have deleted it since the SELECT, which READ COMMITTED
                # allows.
                if row is None:
                    status = self.why_gone(confirmation_id)
                elif row["user_id"] != user_id:
                    status = TakeStatus.NOT_YOURS
                elif await tx.execute("DELETE FROM pending_confirmations WHERE id = ?",
                                      (confirmation_id,)) != 1:
                    status = TakeStatus.GONE
                elif float(row["created_at"]) < now - self._lifetime:
                    status = TakeStatus.EXPIRED
                else:
                    status = TakeStatus.TAKEN
                if claim is not None and status is not TakeStatus.TAKEN:
                    # The claim stays only with the Call that took the question: a Cancel
                    # clicked after it learns the call went ahead (`cancel`).
                    await tx.execute("DELETE FROM claims WHERE key = ? AND holder = ?",
                                     (claim, holder))
                if row is None or status not in (TakeStatus.TAKEN, TakeStatus.EXPIRED):
                    return Taken(status)
                expired = status is TakeStatus.EXPIRED
                removed = None if expired else row  # an expired one is not given back
                await self._ended_in(tx, row["attempt_id"],
                                     EventKind.EXPIRED if expired else EventKind.CONFIRMED,
                                     None if expired else user_id)
                await self._forget_expired_in(tx, now - self._lifetime)
                if claim is not None and note is not None and not expired:
                    # Its request as the take starts it: naming the question it confirms.
                    written = note(json.loads(row["request"])
                                   | {"confirmed_question": row["attempt_id"]})
                    await note_in(tx, claim, written)
        except DATABASE_FAULTS:
            if removed is not None and claim is not None:
                await self._give_back(removed, claim, holder)
            raise
        if float(row["created_at"]) < now - self._lifetime:
            return Taken(TakeStatus.EXPIRED)
        reasons = frozenset(Reason(r) for r in str(row["reasons"]).split(",") if r)
        pending = Pending(
            id=str(row["id"]),
            user_id=str(row["user_id"]),
            reasons=reasons,
            request=json.loads(row["request"]),
            created_at=float(row["created_at"]),
            note=written,
            attempt_id=row["attempt_id"],
            holder=holder if claim is not None else None,
        )
        return Taken(TakeStatus.TAKEN, pending)

    async def put_back(self, pending: Pending, claim: str) -> bool:
        """The question `pending` was taken from, asked again as it was (its id, its time, its
        record), and the claim its take made given back, in one transaction: its Call was refused
        for a while (a limit full, the database failing) and dialled nothing, so that a next click
        is a new request, checked again, not a duplicate. Only if that take's claim is still
        its own and the question has not expired (nor erased: it held its number as typed).
        True if the question is there to answer."""
        if pending.holder is None or pending.created_at < self.clock() - self._lifetime:
            return False

        async def put(conn: Connection) -> bool:
            if await conn.execute("DELETE FROM claims WHERE key = ? AND holder = ?",
                                  (claim, pending.holder)) == 1:
                await conn.execute(_INSERT, (
                    pending.id, pending.created_at, pending.user_id,
                    ",".join(sorted(pending.reasons)), json.dumps(pending.request),
                    pending.attempt_id))
                return True
            # Put back already, its answer lost (a try again after a database fault)?
            return await conn.fetchone("SELECT id FROM pending_confirmations WHERE id = ?",
                                       (pending.id,)) is not None
        return await self._db.atomic(put)

    def why_gone(self, confirmation_id: str) -> TakeStatus:
        """Why no question of this id is found: EXPIRED if it has outlived its lifetime (and was
        erased since), else GONE."""
        asked = asked_at(confirmation_id)
        expired = asked is not None and asked < self.clock() - self._lifetime
        return TakeStatus.EXPIRED if expired else TakeStatus.GONE

    async def _give_back(self, row: Row, claim: str, holder: str) -> None:
        """Undo a take that may have committed: if `claim` is `holder`'s, it did, and the question
        is put back as it was. Tried once: failing, the question is lost to that click. (Its
        `confirmed` record stays, the trail being append-only: no attempt names it as confirmed.)"""
        async def undo(conn: Connection) -> None:
            if await conn.execute("DELETE FROM claims WHERE key = ? AND holder = ?",
                                  (claim, holder)) == 1:
                await conn.execute(
                    _INSERT,
                    tuple(row[c] for c in _COLUMN_NAMES),
                )
        try:
            await self._db.atomic(undo)
        except DATABASE_FAULTS as exc:
            logger.warning("a question whose answer the database lost could not be put back (%s)",
                           exc, extra={"user_id": str(row["user_id"])})

    async def forget_expired(self) -> None:
        """Erase the questions that expired unanswered: each holds its number as typed, in clear.
        Run with the lease keeper's rounds (bot/runtime.py), so that a question asked before a
        quiet spell is not kept through it (new questions and answers clear them too)."""
        before = self.clock() - self._lifetime
        if self._audit is not None and (expired := await self._db.fetchall(_EXPIRED, (before,))):
            # Recorded first, then erased (`erase` is one statement): a question erased since, or
            # again after a failure, is still recorded once (AuditLog.question_ended).
            async def record(conn: Connection) -> None:
                for row in expired:
                    await self._ended_in(conn, row["attempt_id"], EventKind.EXPIRED)
            await self._db.atomic(record)
        erased = await self._db.erase(_FORGET_EXPIRED, (before,))
        if erased:
            logger.info("erased %d question(s) that expired unanswered", erased)

    async def _forget_expired_in(self, tx: Connection, before: float) -> None:
        for row in await tx.fetchall(_FORGET_EXPIRED + " RETURNING attempt_id", (before,)):
            await self._ended_in(tx, row["attempt_id"], EventKind.EXPIRED)

    async def _ended_in(self, tx: Connection, attempt_id: int | None, kind: EventKind,
                        actor_id: str | None = None) -> None:
        if self._audit is not None and attempt_id is not None:
            await self._audit.question_ended(tx, int(attempt_id), kind, actor_id)

    async def cancel(self, confirmation_id: str, user_id: str) -> TakeStatus:
        """TAKEN if this cancelled the question; else why not (an expired one is erased):
        CONFIRMED when its requester's Call took it first, whose call is then on its way."""
        if not valid_id(confirmation_id):
            return TakeStatus.GONE
        now = self.clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "DELETE FROM pending_confirmations WHERE id = ? AND user_id = ?"
                " RETURNING created_at, attempt_id",
                (confirmation_id, user_id),
            )
            if row is None:
                gone = self.why_gone(confirmation_id)
                if gone is TakeStatus.GONE and await tx.fetchone(
                        "SELECT key FROM claims WHERE key = ?",
                        (confirm_claim(confirmation_id, user_id),)):
                    return TakeStatus.CONFIRMED
                return gone
            # Past its lifetime it had expired, whoever clicks: recorded as what it was.
            expired = float(row["created_at"]) < now - self._lifetime
            await self._ended_in(tx, row["attempt_id"],
                                 EventKind.EXPIRED if expired else EventKind.CANCELLED,
                                 None if expired else user_id)
        return TakeStatus.EXPIRED if expired else TakeStatus.TAKEN
