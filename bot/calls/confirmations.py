"""Calls waiting for their requester's "yes": a number outside the home region, a quick repeat.

The question goes out with a button whose value is only a random id; the request itself (with its
number) waits here, in the database, so that the button carries no phone number and a restart
doesn't lose it. A pending call is used at most once: `take()` deletes it in the same statement
that reads it. It expires after `CONFIRMATION_LIFETIME_SECONDS`.

The id begins with the second it was asked (`asked_at`): an expired question is erased within
seconds (it holds the number in clear), and a click that comes later must still hear that it
expired, not that it was answered or cancelled.
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

from bot.storage.claims import claim_in, note_in
from bot.storage.database import Connection, Database, Row
from bot.storage.faults import DATABASE_FAULTS

logger = logging.getLogger(__name__)

CONFIRMATION_LIFETIME_SECONDS = 600.0
_FORGET_EXPIRED = "DELETE FROM pending_confirmations WHERE created_at < ?"
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# An id as `create` makes it: the Unix second it was asked, in letters (so that no digits of the
# id can be mistaken for a number's), then a random part.
_STAMPED_ID = re.compile(r"([a-z]{7})-[A-Za-z0-9_-]{24}")
_STAMP_DIGITS = "abcdefghijklmnopqrstuvwxyz"
_COLUMN_NAMES = ("id", "created_at", "user_id", "reasons", "request")
_COLUMNS = ", ".join(_COLUMN_NAMES)


class Reason(StrEnum):
    REGION = "region"  # the number is in an allowed region outside `confirm_outside`
    REPEAT = "repeat"  # same requester, number and flow within the repeat window


class TakeStatus(StrEnum):
    TAKEN = "taken"
    GONE = "gone"  # never existed, already used or cancelled
    EXPIRED = "expired"
    NOT_YOURS = "not_yours"
    DUPLICATE = "duplicate"  # this click was already taken (a double or redelivered click)


@dataclass(frozen=True)
class Pending:
    id: str
    user_id: str
    reasons: frozenset[Reason]
    request: dict[str, Any]  # the CallRequest's fields (see calls.py); no response_url
    created_at: float
    note: str | None = None  # what its claim keeps for its requester (take's `note`)


@dataclass(frozen=True)
class Taken:
    status: TakeStatus
    pending: Pending | None = None


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
    ) -> None:
        self._db = db
        self._lifetime = lifetime
        # Public: a test moves the running bot's questions past their lifetime with it.
        self.clock = clock

    @property
    def lifetime(self) -> float:
        return self._lifetime

    async def create(
        self, user_id: str, reasons: frozenset[Reason], request: dict[str, Any]
    ) -> str:
        now = self.clock()
        confirmation_id = new_id(now)
        async with self._db.transaction() as tx:
            # Expired questions are only a risk kept on disk; clear them as new ones come.
            await tx.execute(_FORGET_EXPIRED, (now - self._lifetime,))
            await tx.execute(
                "INSERT INTO pending_confirmations (id, created_at, user_id, reasons, request)"
                " VALUES (?, ?, ?, ?, ?)",
                (confirmation_id, now, user_id, ",".join(sorted(reasons)), json.dumps(request)),
            )
        return confirmation_id

    async def take(self, confirmation_id: str, user_id: str, *, claim: str | None = None,
                   note: Callable[[dict[str, Any]], str] | None = None) -> Taken:
        """Remove and return the pending call, if it exists, belongs to `user_id` and is fresh.

        `claim`: a key claimed in the same transaction (bot/storage/claims.py), DUPLICATE when it
        was claimed before. Together, so that a database failing in between leaves neither taken
        and the next click finds the question as it was. A take that committed and then lost its
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
                if row is None:
                    return Taken(self.why_gone(confirmation_id))
                if row["user_id"] != user_id:
                    return Taken(TakeStatus.NOT_YOURS)
                # Taken only if this transaction removes it: on PostgreSQL a Cancel (or another
                # replica's take) may have deleted it since the SELECT, which READ COMMITTED
                # allows.
                deleted = await tx.execute(
                    "DELETE FROM pending_confirmations WHERE id = ?", (confirmation_id,)
                )
                if deleted != 1:
                    return Taken(TakeStatus.GONE)
                removed = row
                await tx.execute(_FORGET_EXPIRED, (now - self._lifetime,))
                if claim is not None and note is not None and (
                        float(row["created_at"]) >= now - self._lifetime):
                    written = note(json.loads(row["request"]))
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
        )
        return Taken(TakeStatus.TAKEN, pending)

    def why_gone(self, confirmation_id: str) -> TakeStatus:
        """Why no question of this id is found: EXPIRED if it has outlived its lifetime (and was
        erased since), else GONE."""
        asked = asked_at(confirmation_id)
        expired = asked is not None and asked < self.clock() - self._lifetime
        return TakeStatus.EXPIRED if expired else TakeStatus.GONE

    async def _give_back(self, row: Row, claim: str, holder: str) -> None:
        """Undo a take that may have committed: if `claim` is `holder`'s, it did, and the question
        is put back as it was. Tried once: failing, the question is lost to that click."""
        async def undo(conn: Connection) -> None:
            if await conn.execute("DELETE FROM claims WHERE key = ? AND holder = ?",
                                  (claim, holder)) == 1:
                await conn.execute(
                    f"INSERT INTO pending_confirmations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
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
        erased = await self._db.erase(_FORGET_EXPIRED, (self.clock() - self._lifetime,))
        if erased:
            logger.info("erased %d question(s) that expired unanswered", erased)

    async def cancel(self, confirmation_id: str, user_id: str) -> bool:
        if not valid_id(confirmation_id):
            return False
        async with self._db.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM pending_confirmations WHERE id = ? AND user_id = ?",
                (confirmation_id, user_id),
            )
        return deleted == 1
