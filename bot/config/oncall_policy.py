"""The policy file's `[oncall]` section: the rotation (bot.oncall.rotation explains the hand-off
rule), and how an escalation runs and ends."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator

from bot.calls.rates import Rate, parse_rate
from bot.config.fields import SLACK_USER_OR_GROUP, Strict, user_ids
from bot.oncall.rotation import DEFAULT_HANDOFF, DEFAULT_START, HandoffRule, Rotation, parse_handoff

# Seconds an escalation call may ring unanswered: long enough for a phone to be found, short
# enough that an outage doesn't wait on one sleeping person.
DEFAULT_ANSWER_TIMEOUT = 90
MIN_ANSWER_TIMEOUT = 15
MAX_ANSWER_TIMEOUT = 600
# What ends an escalation step (`[oncall] ack`): an acknowledgement (I'm on it, or a flow outcome
# listed in `ack_outcomes`), or, as before acknowledgements existed, the call connecting.
ACK_ACKNOWLEDGE = "acknowledge"
ACK_ANSWER = "answer"
# `[oncall] responders`: every full member of the workspace (never guests or Slack Connect users).
RESPONDERS_EVERYONE = "everyone"
# Escalations a responder without a role may start (`[oncall] escalations_per_person`).
DEFAULT_ESCALATIONS_PER_PERSON = "3/1h"
LATEST_START = dt.date(9998, 12, 31)


class OnCallPolicy(Strict):
    """The `[oncall]` section: the rotation (bot.oncall explains the hand-off rule), escalation."""

    flow: str
    rotation: tuple[str, ...]
    handoff: str = DEFAULT_HANDOFF
    timezone: str = "UTC"
    start: dt.date = DEFAULT_START
    answer_timeout: int = Field(
        default=DEFAULT_ANSWER_TIMEOUT, ge=MIN_ANSWER_TIMEOUT, le=MAX_ANSWER_TIMEOUT
    )
    escalate_to: tuple[str, ...] = ()
    ack: Literal["acknowledge", "answer"] = "acknowledge"
    # Session outcomes (Evo Voice's `outcome`, compared without regard to case) that acknowledge.
    ack_outcomes: tuple[str, ...] = ()
    # Who may escalate and see the rotation, besides role holders and the rotation's members.
    responders: tuple[str, ...] | Literal["everyone"] = "everyone"
    escalations_per_person: Rate = Field(
        default_factory=lambda: parse_rate(DEFAULT_ESCALATIONS_PER_PERSON)
    )

    @field_validator("ack", mode="before")
    @classmethod
    def _ack(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in (ACK_ACKNOWLEDGE, ACK_ANSWER):
            return value.strip().lower()
        raise ValueError(
            f'must be "{ACK_ACKNOWLEDGE}" (a step ends when someone acknowledges the page: I\'m '
            f'on it, or an outcome in ack_outcomes) or "{ACK_ANSWER}" (when the call connects)'
        )

    @field_validator("ack_outcomes", mode="before")
    @classmethod
    def _ack_outcomes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        names = [str(v).strip() for v in value]
        if any(not name for name in names):
            raise ValueError("lists an empty outcome; write outcomes as the flow sets them")
        return tuple(dict.fromkeys(names))

    @field_validator("responders", mode="before")
    @classmethod
    def _responders(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.strip().lower() == RESPONDERS_EVERYONE:
                return RESPONDERS_EVERYONE
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        bad = [str(v) for v in value if not re.fullmatch(SLACK_USER_OR_GROUP, str(v))]
        if bad:
            raise ValueError(
                f"{', '.join(repr(b) for b in bad)} are not Slack user IDs (U…/W…) or user "
                f'group IDs (S…); or write "{RESPONDERS_EVERYONE}" for every full member'
            )
        return tuple(dict.fromkeys(str(v) for v in value))

    @field_validator("escalations_per_person", mode="before")
    @classmethod
    def _per_person(cls, value: Any) -> Any:
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise ValueError(
                "must be a string like \"3/1h\" (escalations per window; units s, m, h, d)"
            )
        return parse_rate(value)

    @property
    def acknowledges(self) -> bool:
        """Whether a step needs an acknowledgement (else the call connecting is enough)."""
        return self.ack == ACK_ACKNOWLEDGE

    def is_ack_outcome(self, outcome: str | None) -> bool:
        wanted = {o.casefold() for o in self.ack_outcomes}
        return outcome is not None and outcome.strip().casefold() in wanted

    @field_validator("flow")
    @classmethod
    def _flow(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty: name the Evo Voice flow used for escalation calls")
        return value.strip()

    @field_validator("rotation")
    @classmethod
    def _rotation(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("is empty: list the Slack user IDs of the people on call, in order")
        return user_ids(value)

    @field_validator("escalate_to")
    @classmethod
    def _escalate_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return user_ids(value)

    @field_validator("handoff")
    @classmethod
    def _handoff(cls, value: str) -> str:
        return str(parse_handoff(value))

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            raise ValueError(
                "must be a date like 2026-01-05, without a time (the time of day is handoff's)"
            )
        return value

    @field_validator("start")
    @classmethod
    def _start_in_range(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        # The rotation counts hand-offs past it: in year 9999 they soon outrun what a date holds.
        if value > LATEST_START:
            raise ValueError(f"{value} is too far ahead; write the date of the first shift")
        # And in a zone ahead of UTC, a hand-off early on 0001-01-01 is before any instant
        # a datetime holds. (`handoff` and `timezone` come first: absent here if they are wrong.)
        handoff, zone = info.data.get("handoff"), info.data.get("timezone")
        if handoff is not None and zone is not None:
            try:
                Rotation(("U0",), parse_handoff(handoff), ZoneInfo(zone), value).handoff(0)
            except OverflowError:
                raise ValueError(
                    f"{value} is too far back for {zone}; write the date of the first shift"
                ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        # A region alone ("America") is a folder of the zone database: IsADirectoryError, like
        # any name the file system refuses (too long), is an OSError, not a ValueError.
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"{value!r} is not an IANA time zone name (like \"America/New_York\" or \"UTC\")"
            ) from None
        return value

    @property
    def handoff_rule(self) -> HandoffRule:
        return parse_handoff(self.handoff)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def schedule(self) -> Rotation:
        return Rotation(self.rotation, self.handoff_rule, self.zone, self.start)
