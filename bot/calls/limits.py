"""Rate limits on dialling, kept in the database so they hold across restarts and replicas.

Three sliding windows, from the policy file's `[policy]` section:

    per_user    calls one Slack user may place per window        ("5/10m")
    per_number  calls one number may receive per window           ("3/10m", all users together)
    per_day     calls the bot places in any 24 hours              (200)

and the repeat check: the same requester calling the same number with the same flow within
`REPEAT_WINDOW_SECONDS` is asked to confirm instead of dialling (see calls.py).

`acquire()` checks every window and records the attempt atomically (SQLite: one `BEGIN IMMEDIATE`
transaction; PostgreSQL: one statement, bot/storage/rate_slot.py), just before dialling: a request
refused earlier (role, number, flow) consumes nothing, and two racing requests can't both take the
last slot, whichever process they run in. A call that certainly did not happen (Evo Voice refused
or was unreachable) gives its slot back with `release()`, and one whose writes before the POST lost
their answer with `give_back()`. A call nobody could be told of keeps it: it is dialled without
waiting for Slack.

Numbers are stored as their keyed hash (bot/storage/number_hash.py), never in clear: the table can
say "this number was called 3 times" without saying which number.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from bot.calls.models import CheckedCall
from bot.calls.rates import DAY_SECONDS, REPEAT_WINDOW_SECONDS, Rate, describe_wait
from bot.errors import CallbotError
from bot.phone import mask
from bot.storage.database import POSTGRESQL, Connection, Database
from bot.storage.faults import DATABASE_FAULTS
from bot.storage.number_hash import NumberHasher
from bot.storage.together import SlotAnswer

logger = logging.getLogger(__name__)

SCOPES = ("per_user", "per_number", "per_day")  # in the order they are checked


class LimitReached(CallbotError):
    """A rate limit refuses the call; `retry_after` is how long until one more call fits."""

    def __init__(self, scope: str, rate: Rate, retry_after: float, request: SlotRequest) -> None:
        self.scope = scope
        self.rate = rate
        self.retry_after = retry_after
        # The attempt refused, to read its other windows with (CallLimits.refused).
        self.request = request
        masked_number = mask(request.e164)
        wait = describe_wait(retry_after)
        window = rate.window_words
        if scope == "per_user":
            what = (f"You have placed {rate.count} call{'s' if rate.count != 1 else ''} in the "
                    f"last {window}, the most one person may place")
        elif scope == "per_number":
            what = (f"{masked_number} has been called {rate.count} time"
                    f"{'s' if rate.count != 1 else ''} in the last {window}, the most one number "
                    "may receive")
        else:
            what = (f"callbot has placed {rate.count} call{'s' if rate.count != 1 else ''} in the "
                    f"last {window}, the most it may place")
        setting = f"per_day = {rate.count}" if scope == "per_day" else f'{scope} = "{rate.text}"'
        super().__init__(
            f"{what}, so nothing was dialled. You may call again in {wait}. Limits are set by the "
            f"operators in the policy file ({setting}); they can't be lifted from Slack."
        )


class RecentlyCalled(Exception):
    """The same requester called the same number with the same flow `seconds_ago` seconds ago."""

    def __init__(self, seconds_ago: float) -> None:
        super().__init__(f"called {seconds_ago:.0f} s ago")
        self.seconds_ago = seconds_ago


@dataclass(frozen=True)
class Slot:
    """One recorded attempt, to give back with `release()` if the call certainly didn't happen."""

    event_id: int


class CallLimits:
    def __init__(
        self,
        db: Database,
        *,
        per_user: Rate,
        per_number: Rate,
        per_day: int,
        repeat_window: float = REPEAT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        hasher: NumberHasher | None = None,
    ) -> None:
        self._db = db
        self._hasher = hasher
        self._windows = {
            "per_user": per_user,
            "per_number": per_number,
            "per_day": Rate(per_day, float(DAY_SECONDS), f"{per_day}/24h"),
        }
        self._repeat_window = repeat_window
        self._clock = clock
        self._horizon = max(max(rate.seconds for rate in self._windows.values()), repeat_window)

    async def number_key(self, e164: str) -> str:
        if self._hasher is None:
            self._hasher = await NumberHasher.open(self._db)
        return self._hasher(e164)

    async def last_call(self, user_id: str, e164: str, flow_id: str) -> float | None:
        """Seconds since this user called this number with this flow, within the repeat window."""
        number_key = await self.number_key(e164)
        now = self._clock()
        row = await self._db.fetchone(
            "SELECT MAX(at) FROM rate_events WHERE user_id = ? AND number_key = ? AND flow_id = ?"
            " AND at > ?",
            (user_id, number_key, flow_id, now - self._repeat_window),
        )
        return None if row is None or row[0] is None else max(0.0, now - float(row[0]))

    async def acquire(
        self, user_id: str, e164: str, flow_id: str, *, check_repeat: bool = True
    ) -> Slot:
        """Check every window and record the attempt atomically.

        Raises RecentlyCalled (when `check_repeat`) or LimitReached; records nothing then.
        """
        take = await self.slot_taker(user_id, e164, flow_id, check_repeat=check_repeat)
        try:
            if self._db.dialect == POSTGRESQL:
                return await take(self._db)  # one statement: atomic on its own
            # One trip to the database thread: during a burst, a transaction of several awaited
            # statements would hold the write lock across several turns of a busy event loop.
            return await self._db.atomic(take)
        except LimitReached as refused:
            raise await self.refused(refused, user_id) from None

    async def slot_taker(
        self, user_id: str, e164: str, flow_id: str, *, check_repeat: bool = True
    ) -> Callable[[Connection], Coroutine[Any, Any, Slot]]:
        """`acquire` as a unit for a transaction of the caller's own; it raises as `acquire` does.
        On PostgreSQL the attempt's locks are then held until that transaction ends: only
        attempts by the same person or to the same number wait for them
        (bot/storage/rate_slot.py)."""
        request = await self.slot_request(user_id, e164, flow_id, check_repeat=check_repeat)

        async def take(conn: Connection) -> Slot:
            if self._db.dialect == POSTGRESQL:
                return request.decide(await _answer_of(conn, request.arguments()))
            return request.decide(await request.take_in(conn))

        return take

    async def slot_request(
        self, user_id: str, e164: str, flow_id: str, *, check_repeat: bool = True
    ) -> SlotRequest:
        """The attempt's slot, to take in the write that records the attempt and the call's row
        (bot/storage/together.py); taking it raises as `acquire` does."""
        return SlotRequest(dict(self._windows), self._repeat_window, self._horizon, user_id, e164,
                           await self.number_key(e164), flow_id, self._clock(), check_repeat)

    async def full_now(self, call: CheckedCall) -> LimitReached | None:
        """The refusal a call would meet now, were it asked for (read only; nothing taken): a
        question whose Yes is refused anyway is not asked. None when a call fits, or when the
        database can't say (the slot, taken on the Yes, still checks)."""
        request = await self.slot_request(call.request.user_id, call.number.e164, call.flow_id,
                                          check_repeat=False)
        try:
            refusal = await self._freeing_last(request)
        except DATABASE_FAULTS as exc:
            logger.warning("reading the limits before asking failed (%s)", exc)
            return None
        if refusal is not None:
            log_refusal(call.request.user_id, refusal)
        return refusal

    async def refused(self, refusal: LimitReached, user_id: str) -> LimitReached:
        """The refusal to tell, logged: the full window that frees last. The windows are checked
        in turn and the first found full refuses, yet another may hold the call longer (the
        day's, when one's own frees in minutes): its wait is the one that lets a call through."""
        try:
            refusal = await self._freeing_last(refusal.request, refusal) or refusal
        except DATABASE_FAULTS as exc:  # the first refusal is still true, if short
            logger.warning("reading the other limits of a refused call failed (%s)", exc)
        log_refusal(user_id, refusal)
        return refusal

    async def _freeing_last(self, request: SlotRequest,
                            refusal: LimitReached | None = None) -> LimitReached | None:
        """Of `refusal` and `request`'s full windows, the one that frees last; None if neither."""
        for scope in SCOPES:
            at = await request.full_until(self._db, scope)
            later = None if at is None else request.refusal(scope, at)
            if later is not None and (refusal is None or later.retry_after > refusal.retry_after):
                refusal = later
        return refusal

    async def release(self, slot: Slot) -> None:
        await self._db.execute("DELETE FROM rate_events WHERE id = ?", (slot.event_id,))

    async def give_back(self, request: SlotRequest) -> None:
        """`request`'s slot, if its taking committed though its answer was lost (its id unknown)."""
        await self._db.execute(
            "DELETE FROM rate_events WHERE at = ? AND user_id = ? AND number_key = ?"
            " AND flow_id = ?", (request.now, request.user_id, request.number_key, request.flow_id))


@dataclass
class SlotRequest:
    """One attempt's rate-limit slot, as the checks that take it: `arguments()` for PostgreSQL's
    `callbot_rate_slot`, `take_in(conn)` the same checks as statements (SQLite), `decide()` the
    refusal raised from either's answer. `taken`: the slot, once taken."""

    windows: dict[str, Rate]
    repeat_window: float
    horizon: float
    user_id: str
    e164: str
    number_key: str
    flow_id: str
    now: float
    check_repeat: bool
    taken: Slot | None = None

    def arguments(self) -> tuple[Any, ...]:
        now, windows = self.now, self.windows
        return (now, self.user_id, self.number_key, self.flow_id,
                now - self.repeat_window if self.check_repeat else None, now - self.horizon,
                *(value for scope in SCOPES
                  for value in (windows[scope].count, windows[scope].seconds)))

    async def take_in(self, conn: Connection) -> SlotAnswer:
        now, user_id, number_key = self.now, self.user_id, self.number_key
        await conn.execute("DELETE FROM rate_events WHERE at <= ?", (now - self.horizon,))
        if self.check_repeat:
            row = await conn.fetchone(
                "SELECT MAX(at) FROM rate_events WHERE user_id = ? AND number_key = ?"
                " AND flow_id = ? AND at > ?",
                (user_id, number_key, self.flow_id, now - self.repeat_window),
            )
            if row is not None and row[0] is not None:
                return "repeat", float(row[0]), None
        for scope in SCOPES:
            at = await self.full_until(conn, scope)
            if at is not None:
                return scope, at, None
        inserted = await conn.fetchone(
            "INSERT INTO rate_events (at, user_id, number_key, flow_id) VALUES (?, ?, ?, ?)"
            " RETURNING id",
            (now, user_id, number_key, self.flow_id),
        )
        assert inserted is not None
        return None, None, int(inserted[0])

    async def full_until(self, conn: Connection, scope: str) -> float | None:
        """When the call that must leave `scope`'s window before one more fits was made: the
        count-th newest, if the window holds that many. Only that row is read: with a large
        `per_day` the window holds thousands, which the database skips far faster than Python
        reads them."""
        where = "at > ?"
        params: list[object] = [self.now - self.windows[scope].seconds]
        if scope == "per_user":
            where += " AND user_id = ?"
            params.append(self.user_id)
        elif scope == "per_number":
            where += " AND number_key = ?"
            params.append(self.number_key)
        row = await conn.fetchone(
            f"SELECT at FROM rate_events WHERE {where} ORDER BY at DESC LIMIT 1 OFFSET ?",
            (*params, self.windows[scope].count - 1),
        )
        return None if row is None else float(row[0])

    def decide(self, answer: SlotAnswer) -> Slot:
        """The slot, or RecentlyCalled or LimitReached (then nothing is written)."""
        scope, at, slot_id = answer
        if scope is None:
            assert slot_id is not None
            self.taken = Slot(int(slot_id))
            return self.taken
        assert at is not None
        if scope == "repeat":
            raise RecentlyCalled(max(0.0, self.now - at))
        raise self.refusal(scope, at)

    def refusal(self, scope: str, at: float) -> LimitReached:
        rate = self.windows[scope]
        return LimitReached(scope, rate, max(1.0, at + rate.seconds - self.now), self)


async def _answer_of(conn: Connection, arguments: tuple[Any, ...]) -> SlotAnswer:
    """`callbot_rate_slot` alone, on PostgreSQL (bot/storage/rate_slot.py)."""
    row = await conn.fetchone(
        "SELECT refused_by, refused_at, slot_id FROM callbot_rate_slot("
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        arguments,
    )
    assert row is not None
    return row["refused_by"], row["refused_at"], row["slot_id"]


def log_refusal(user_id: str, refused: LimitReached) -> None:
    logger.info("call by %s refused: %s limit %s reached",
                user_id, refused.scope, refused.rate.text,
                extra={"user_id": user_id, "outcome": "refused"})
