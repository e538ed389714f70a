"""Who is on call, how to reach them, and who comes after them.

    OnCall      the service: the rotation (bot.oncall) with overrides from the database, and
                everyone's phone number; `current()`, `status()`, `chain()`, `take()`
    PhoneBook   a person's number: the policy file's [people], else their Slack profile's phone
                (`users.info`, cached briefly); either way it must pass the dialling policy
    Overrides   `/call oncall take`: someone covers the current shift until its hand-off; kept in
                the database so a restart doesn't hand the pager back

A person without a usable number is still on call (the rotation says so); they are reported with
`number=None` and the reason, so whoever reads or dials the roster can say so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.cache import TTLCache
from bot.config import OnCallPolicy
from bot.errors import NoUsableNumber, OnCallNotConfigured
from bot.oncall.rotation import Rotation, Shift
from bot.phone import DialableNumber, DialPolicy, NumberRejected, check_dialable
from bot.slack.lanes import without_rate_limit_waits
from bot.storage.database import POSTGRESQL, Connection, Database
from bot.storage.faults import DATABASE_FAULTS, wrote_nothing

logger = logging.getLogger(__name__)

# A profile's phone changes rarely, but someone fixing theirs mid-incident should not wait long.
PROFILE_CACHE_SECONDS = 120.0
# When Slack fails to read a profile again, the phone it held when last read is used, if read
# within this long: a person whose step comes minutes into an escalation (the profiles were read
# as it started) is not skipped because Slack is failing just then.
PROFILE_FALLBACK_SECONDS = 24 * 3600.0


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Source(StrEnum):
    ROTATION = "rotation"  # the rotation's person for the shift
    OVERRIDE = "override"  # someone who took the shift with /call oncall take
    ESCALATE_TO = "escalate_to"  # after the rotation, from `oncall.escalate_to`


@dataclass(frozen=True)
class PhoneLookup:
    number: DialableNumber | None
    problem: str | None = None  # why there is no usable number, in plain words
    # Their Slack account is deactivated: someone who left, not paged in Slack either.
    left: bool = False


@dataclass(frozen=True)
class OnCallPerson:
    user_id: str
    number: DialableNumber | None
    # The end of their duty, for whoever is on call now; None for those after them in a chain.
    until: dt.datetime | None
    source: Source
    no_number_reason: str | None = None


@dataclass(frozen=True)
class Override:
    user_id: str  # who is on call instead
    replaces: str  # who was on call when it was taken
    taken_by: str
    starts: dt.datetime
    ends: dt.datetime  # the hand-off that ends the shift it covers


@dataclass(frozen=True)
class OnCallStatus:
    now: OnCallPerson
    next: OnCallPerson  # `until` is the end of their shift
    next_from: dt.datetime
    shift: Shift  # the rotation's shift now (its person is on call unless overridden)
    override: Override | None
    tz: ZoneInfo
    handoff: str
    # The rotation's first hand-off while it is still to come (rotation[0] covers until then, in
    # no shift of theirs); None once the rotation has begun.
    begins: dt.datetime | None = None


class ProfileUnavailable(Exception):
    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class PhoneBook:
    def __init__(
        self,
        client: AsyncWebClient,
        people: Mapping[str, str],
        dial_policy: DialPolicy,
        *,
        ttl: float = PROFILE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # A profile read a day ago or less is what the step rings when Slack fails, a 429
        # included: such a read asks without waiting out Retry-After (`client` waits it out twice,
        # which held the step). Without one, Slack's answer is the only way to the person's number:
        # that read waits as `client` does.
        self._hasty = without_rate_limit_waits(client)
        self._client = client
        self._people = dict(people)
        self._policy = dial_policy
        self._clock = clock
        # A profile's phone; None: the account is deactivated (someone who left).
        self._profiles: TTLCache[str, str | None] = TTLCache(ttl, clock=clock)
        self._last_read: dict[str, tuple[float, str | None]] = {}  # user ID -> (when, phone)

    def forget(self) -> None:
        """Read people's Slack profiles afresh on the next lookup (a profile just changed)."""
        self._profiles.invalidate()

    async def lookup(self, user_id: str) -> PhoneLookup:
        listed = self._people.get(user_id)
        if listed is not None:
            return self._check(listed, "their number in [people]")
        try:
            phone = await self._profiles.get(user_id, lambda: self._profile_phone(user_id))
        except ProfileUnavailable as exc:
            last = self._read_lately(user_id)
            if last is False:
                hint = (" (the bot needs the users:read scope)" if exc.error == "missing_scope"
                        else "")
                return PhoneLookup(
                    None,
                    f"not in [people], and the Slack profile could not be read: {exc.error}{hint}",
                )
            logger.warning("the Slack profile of %s could not be read (%s): using the phone it "
                           "held when last read", user_id, exc.error, extra={"user_id": user_id})
            phone = last
        if phone is None:
            # Someone who left: their profile's phone is their own, no longer the team's to ring.
            return PhoneLookup(None, "not in [people], and their Slack account is deactivated",
                               left=True)
        if not phone.strip():
            return PhoneLookup(None, "not in [people], and the Slack profile has no phone number")
        return self._check(phone, "the Slack profile's phone number")

    async def e164_of(self, user_id: str) -> str | None:
        """The number a call to `user_id` rings now, as `lookup` finds it; None without one."""
        found = await self.lookup(user_id)
        return found.number.e164 if found.number is not None else None

    def _check(self, text: str, what: str) -> PhoneLookup:
        try:
            return PhoneLookup(check_dialable(text, self._policy))
        except NumberRejected as exc:
            # The reason shows the masked number at most, never the raw text.
            return PhoneLookup(None, f"{what} can't be dialled: {exc.reason}")

    def _read_lately(self, user_id: str) -> str | None | Literal[False]:
        """The phone `user_id`'s profile held when last read, within PROFILE_FALLBACK_SECONDS (as
        `_profile_phone` gives it); False if it wasn't read then."""
        last = self._last_read.get(user_id)
        if last is None or self._clock() - last[0] > PROFILE_FALLBACK_SECONDS:
            return False
        return last[1]

    async def _profile_phone(self, user_id: str) -> str | None:
        """The Slack profile's phone ("" when it has none); None for a deactivated account."""
        client = self._client if self._read_lately(user_id) is False else self._hasty
        try:
            response = await client.users_info(user=user_id)
        except SlackApiError as exc:
            raise ProfileUnavailable(str(exc.response.get("error", "unknown error"))) from None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProfileUnavailable(type(exc).__name__) from None
        user = response.get("user") or {}
        profile = (user.get("profile") or {}) if isinstance(user, dict) else {}
        phone = profile.get("phone") if isinstance(profile, dict) else None
        deleted = isinstance(user, dict) and user.get("deleted") is True
        known = None if deleted else phone if isinstance(phone, str) else ""
        self._last_read[user_id] = (self._clock(), known)
        return known


class Overrides:
    """Overrides in the database. The latest one taken by an instant decides: it covers the
    instant until its end, and any earlier one it replaced stays replaced after that end (an
    earlier one can outlast it when the hand-off rule changed between the two takes)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, override: Override) -> Override:
        """Write `override`; what it `replaces` is read as it is written: whoever the latest
        override at its start put on call, else `override.replaces` (the rotation's person).
        Alone (on PostgreSQL under a lock of its own), so that two takes at once, on any
        replicas, each name whom they took over from, and the later one the earlier."""
        async def add(conn: Connection) -> Override:
            if self._db.dialect == POSTGRESQL:  # a statement of its own: the read after it
                await conn.fetchone(  # sees what was committed while it waited
                    "SELECT pg_advisory_xact_lock("
                    "hashtextextended(current_schema() || ' on-call overrides', 0))")
            current = await _active(conn, override.starts.timestamp())
            taken = override if current is None else replace(override, replaces=current.user_id)
            await conn.execute(
                "INSERT INTO oncall_overrides (user_id, replaces, taken_by, starts_at, ends_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (taken.user_id, taken.replaces, taken.taken_by, taken.starts.timestamp(),
                 taken.ends.timestamp()),
            )
            return taken

        return await self._db.atomic(add)

    async def give_back(self, override: Override) -> None:
        """Remove `override` if `add` wrote it (committed, its answer lost): the taker is told
        the shift was not taken, and it must not have been."""
        await self._db.execute(
            "DELETE FROM oncall_overrides WHERE user_id = ? AND taken_by = ? AND starts_at = ?"
            " AND ends_at = ?",
            (override.user_id, override.taken_by, override.starts.timestamp(),
             override.ends.timestamp()),
        )

    async def active(self, now: dt.datetime) -> Override | None:
        return await _active(self._db, now.timestamp())


async def _active(conn: Connection, instant: float) -> Override | None:
    """The override covering `instant`, if any (see Overrides)."""
    row = await conn.fetchone(
        "SELECT user_id, replaces, taken_by, starts_at, ends_at FROM oncall_overrides"
        " WHERE starts_at <= ? ORDER BY id DESC LIMIT 1",
        (instant,),
    )
    if row is None or row["ends_at"] <= instant:
        return None
    return Override(
        user_id=row["user_id"],
        replaces=row["replaces"],
        taken_by=row["taken_by"],
        starts=dt.datetime.fromtimestamp(row["starts_at"], dt.UTC),
        ends=dt.datetime.fromtimestamp(row["ends_at"], dt.UTC),
    )


class OnCall:
    """The on-call roster. Every method takes `now` so callers (and tests) decide the instant."""

    def __init__(
        self,
        policy: OnCallPolicy | None,
        *,
        phones: PhoneBook,
        overrides: Overrides,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self._policy = policy
        self._rotation = policy.schedule() if policy is not None else None
        self.phones = phones
        self._overrides = overrides
        # Public so a test can fix the instant the running bot sees.
        self.clock = clock

    @property
    def configured(self) -> bool:
        return self._policy is not None

    @property
    def policy(self) -> OnCallPolicy:
        """`flow`, `answer_timeout`, `escalate_to`, …; OnCallNotConfigured without [oncall]."""
        if self._policy is None:
            raise OnCallNotConfigured()
        return self._policy

    @property
    def rotation(self) -> Rotation:
        if self._rotation is None:
            raise OnCallNotConfigured()
        return self._rotation

    def now(self) -> dt.datetime:
        return self.clock()

    async def status(self, now: dt.datetime) -> OnCallStatus:
        """Now and next, for `/call oncall`."""
        rotation = self.rotation
        shift = rotation.shift_at(now)
        override = await self._overrides.active(now)
        if override is not None:
            current_id, source, until = override.user_id, Source.OVERRIDE, override.ends
        else:
            current_id, source, until = shift.person, Source.ROTATION, shift.ends
        following = rotation.shift_at(until)
        current, upcoming = await asyncio.gather(
            self._person(current_id, source, until),
            self._person(following.person, Source.ROTATION, following.ends),
        )
        return OnCallStatus(
            now=current,
            next=upcoming,
            next_from=until,
            shift=shift,
            override=override,
            tz=rotation.tz,
            handoff=self.policy.handoff,
            begins=rotation.handoff(0) if now < rotation.handoff(0) else None,
        )

    async def chain(self, now: dt.datetime) -> list[OnCallPerson]:
        """The escalation order at `now`: who is on call, then the rest of the rotation in its
        order after the shift's person (wrapping round), then `escalate_to`; nobody twice.

        An override's taker comes first, then the rotation's person for the shift they cover.
        """
        rotation = self.rotation
        shift = rotation.shift_at(now)
        override = await self._overrides.active(now)
        order: list[tuple[str, Source, dt.datetime | None]] = []
        if override is not None:
            order.append((override.user_id, Source.OVERRIDE, override.ends))
        people = rotation.people
        first = shift.index % len(people)
        for step in range(len(people)):
            until = shift.ends if step == 0 and override is None else None
            order.append((people[(first + step) % len(people)], Source.ROTATION, until))
        order += [(user_id, Source.ESCALATE_TO, None) for user_id in self.policy.escalate_to]
        seen: set[str] = set()
        unique = []
        for user_id, source, until in order:
            if user_id not in seen:
                seen.add(user_id)
                unique.append((user_id, source, until))
        return list(await asyncio.gather(*(self._person(*entry) for entry in unique)))

    async def take(self, user_id: str, now: dt.datetime | None = None
                   ) -> tuple[Override, OnCallPerson]:
        """`user_id` covers the current shift until its hand-off. They need a usable number.
        `now`: the instant it is taken at; None (the bot's own takes): the clock's, read once
        the number is."""
        rotation = self.rotation
        lookup = await self.phones.lookup(user_id)
        if lookup.number is None:
            raise NoUsableNumber(user_id, lookup.problem or "none known",
                                 action="take the on-call shift")
        # Read as the take is written, not as it was asked for: Slack can be slow to show the
        # number (and the role), and a take held across a hand-off would cover a shift already
        # over, written after (so in place of) a take of the shift that began meanwhile.
        now = self.now() if now is None else now
        shift = rotation.shift_at(now)
        override = Override(
            user_id=user_id,
            replaces=shift.person,  # unless an override put someone else on call (`add`)
            taken_by=user_id,
            starts=now.astimezone(dt.UTC),
            ends=rotation.next_handoff(now),
        )
        try:
            override = await self._overrides.add(override)
        except DATABASE_FAULTS as exc:
            if wrote_nothing(exc):
                raise
            try:  # it may have committed, its answer lost: "not taken" must be true
                await self._overrides.give_back(override)
            except DATABASE_FAULTS as again:
                logger.warning("an override of %s may be kept though not announced (%s)",
                               user_id, again, extra={"user_id": user_id})
            raise
        logger.info(
            "on-call shift taken by %s from %s until %s",
            user_id, override.replaces, override.ends.isoformat(), extra={"user_id": user_id},
        )
        return override, OnCallPerson(user_id, lookup.number, override.ends, Source.OVERRIDE)

    async def _person(
        self, user_id: str, source: Source, until: dt.datetime | None
    ) -> OnCallPerson:
        lookup = await self.phones.lookup(user_id)
        return OnCallPerson(user_id, lookup.number, until, source, lookup.problem)
