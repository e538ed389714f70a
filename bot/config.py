"""Configuration: the environment (or `.env`) and the TOML policy file, validated once at start-up.

Both are public interface: deployments depend on these names. Problems are collected, not raised one
at a time, so an operator fixes a broken configuration in one pass: `ConfigError.problems` holds one
line per problem, each naming the setting and what is wrong.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.calls.limits import REPEAT_WINDOW_SECONDS, Rate, parse_duration, parse_rate
from bot.oncall.rotation import DEFAULT_HANDOFF, DEFAULT_START, HandoffRule, Rotation, parse_handoff
from bot.phone import (
    DEFAULT_ALLOWED_TYPES,
    NUMBER_TYPE_NAMES,
    DialPolicy,
    NumberRejected,
    check_dialable,
    to_e164,
)
from bot.storage.database import DatabaseUrlError, check_url

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_EVOVOICE_URL = "https://team.evovoice.io"
DEFAULT_POLICY_PATH = Path("./callbot.toml")
DEFAULT_DATABASE_URL = "sqlite:///./callbot.db"
DEFAULT_PORT = 3000

# Evo Voice roles that may create calls; the bot's own login must hold one, and the `[roles]` table
# of the policy file uses the same names for the Slack users allowed to call.
MANAGER = "Manager"
SYSTEM_ADMINISTRATOR = "SystemAdministrator"
KNOWN_ROLES = (MANAGER, SYSTEM_ADMINISTRATOR)

_SLACK_USER_OR_GROUP = r"^[UWS][A-Z0-9]{2,20}$"
_SLACK_USER = r"^[UW][A-Z0-9]{2,20}$"
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


# Slack tokens and secrets are printable ASCII without spaces; a line break or a space inside one
# (a secrets file pasted with its newline, two lines joined) would otherwise reach an HTTP header.
_TOKEN_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")
# The Evo Voice login may hold spaces, but never a line break or another control character.
_LOGIN_JUNK = re.compile(r"[\x00-\x1f\x7f]")
# A policy file is a few kilobytes; anything much larger is the wrong file (or /dev/zero).
MAX_POLICY_BYTES = 1024 * 1024

# The values .env.example ships with: a clear "fill me in" beats a network error at start-up.
_PLACEHOLDERS = frozenset({"xoxb-your-bot-token", "xapp-your-app-level-token", "change-me"})


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DependencyUnavailable(ConfigError):
    """Slack or Evo Voice could not be reached (or failed) at start-up: nothing to fix in the
    configuration yet, maybe. A running bot waits for it instead of exiting."""


def _blank_to_none(value: Any) -> Any:
    # `.env.example` ships `SLACK_APP_TOKEN=`; an empty value means "not set", not "set to ''".
    if isinstance(value, str) and not value.strip():
        return None
    return value


class Settings(BaseSettings):
    """Environment variables (or `.env`). Secrets are `SecretStr` so they never print."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    slack_bot_token: SecretStr
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    evovoice_url: str = DEFAULT_EVOVOICE_URL
    # Where the login is tried when EVOVOICE_URL refuses it, to say "set EVOVOICE_URL=…" instead
    # of blaming the password; empty: the other of evovoice.io and team.evovoice.io.
    evovoice_other_url: str | None = None
    # simulate: real Slack, calls to a simulated Evo Voice inside the bot (bot/evovoice/simulator).
    evovoice_mode: Literal["live", "simulate"] = "live"
    # Required when live; declared after evovoice_mode, which their validator reads.
    evovoice_username: str = ""
    evovoice_password: SecretStr = SecretStr("")
    evovoice_account_id: str | None = None
    evovoice_timeout: float = Field(default=15.0, gt=0, le=120)  # seconds to wait for an answer
    callbot_config: Path = DEFAULT_POLICY_PATH
    database_url: str = DEFAULT_DATABASE_URL
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)  # 0: any free port (tests)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Key of the audit trail's number hashes; empty: one generated and kept in the database.
    audit_hash_key: SecretStr | None = None
    # Following calls: the first poll interval, the back-off's ceiling, how long to look for the
    # session of an unconfirmed call, and the most time any call is followed.
    call_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    call_poll_max_seconds: float = Field(default=15.0, gt=0, le=600)
    call_find_seconds: float = Field(default=120.0, gt=0, le=3600)
    call_follow_max_minutes: float = Field(default=240.0, gt=0, le=24 * 60)
    log_format: Literal["text", "json"] = "text"  # json: one object per line, for log collectors
    # Several replicas: a replica that dies has its followed calls and escalations taken over by
    # another within this many seconds (bot/storage/leases.py).
    lease_seconds: float = Field(default=15.0, ge=3, le=300)

    @field_validator(
        "slack_app_token", "slack_signing_secret", "evovoice_account_id", "evovoice_other_url",
        mode="before",
    )
    @classmethod
    def _optional(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator(
        "slack_bot_token", "slack_app_token", "slack_signing_secret", "evovoice_password"
    )
    @classmethod
    def _not_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() in _PLACEHOLDERS:
            raise ValueError(
                "still holds the placeholder from .env.example; put the real value in .env"
            )
        return value

    @field_validator("evovoice_mode", mode="before")
    @classmethod
    def _mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("evovoice_username", "evovoice_password")
    @classmethod
    def _needed_when_live(cls, value: str | SecretStr, info: ValidationInfo) -> str | SecretStr:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not raw.strip() and info.data.get("evovoice_mode", "live") == "live":
            raise ValueError("is required but not set")
        return value

    @field_validator("slack_bot_token", "slack_app_token", "slack_signing_secret", mode="before")
    @classmethod
    def _no_junk_in_token(cls, value: Any) -> Any:
        if isinstance(value, str):
            # A secrets file usually ends with a newline: that one is not part of the token.
            value = value.strip()
            if _TOKEN_JUNK.search(value):
                raise ValueError(
                    "contains a line break, a space or a control character; copy the token again "
                    "as one line"
                )
        return value

    @field_validator("evovoice_username", "evovoice_password", mode="before")
    @classmethod
    def _no_junk_in_login(cls, value: Any) -> Any:
        if isinstance(value, str) and _LOGIN_JUNK.search(value):
            raise ValueError(
                "contains a line break or a control character; set it again as one line"
            )
        return value

    @field_validator("audit_hash_key", mode="before")
    @classmethod
    def _optional_key(cls, value: Any) -> Any:
        return _blank_to_none(value)

    @field_validator("audit_hash_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError(
                "must be at least 16 characters (e.g. `openssl rand -hex 32`), or empty to let "
                "the bot keep its own key in the database"
            )
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb- (OAuth & Permissions page)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError(
                "must be an app-level token starting with xapp- (Basic Information page, "
                "scope connections:write); leave it empty for HTTP mode"
            )
        return value

    @field_validator("slack_api_url", "evovoice_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        # The authority is what sits between "//" and the next "/", "?" or "#".
        if "@" in re.split(r"[/?#]", value.split("//", 1)[1], maxsplit=1)[0]:
            # Never echo the value: what precedes the @ is a password.
            raise ValueError(
                "must not contain a user name or password (user:password@…); put them in "
                "EVOVOICE_USERNAME and EVOVOICE_PASSWORD (SLACK_API_URL: take them out)"
            )
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        # slack_sdk joins method names onto the base URL; without the slash "api" +
        # "chat.postMessage".
        return value if value.endswith("/") else value + "/"

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            check_url(value)
        except DatabaseUrlError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _poll_ceiling(self) -> Settings:
        if self.call_poll_max_seconds < self.call_poll_seconds:
            raise ValueError("CALL_POLL_MAX_SECONDS must not be less than CALL_POLL_SECONDS")
        return self

    @model_validator(mode="after")
    def _mode_needs(self) -> Settings:
        if self.slack_app_token is None and self.slack_signing_secret is None:
            raise ValueError(
                "SLACK_SIGNING_SECRET is required in HTTP mode (set it, or set SLACK_APP_TOKEN "
                "for Socket Mode)"
            )
        return self

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _slack_user_id(value: str) -> str:
    if not re.fullmatch(_SLACK_USER, value):
        raise ValueError(
            f"{value!r} is not a Slack user ID (U… or W…); copy it from the profile's ⋮ menu"
        )
    return value


def _user_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in value if not re.fullmatch(_SLACK_USER, v)]
    if bad:
        raise ValueError(
            f"{', '.join(repr(b) for b in bad)} are not Slack user IDs (U…/W…); copy them from "
            "the profile's ⋮ menu"
        )
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise ValueError(f"lists {', '.join(repeated)} more than once")
    return value


def _person_number(value: str, info: ValidationInfo) -> str:
    region = info.data.get("default_region")
    regions = info.data.get("allowed_regions")
    if region is None or regions is None:
        return value  # the region settings are wrong themselves (and reported): nothing to check
    policy = DialPolicy(
        default_region=region,
        allowed_regions=frozenset(regions),
        allowed_types=DEFAULT_ALLOWED_TYPES,
    )
    try:
        return check_dialable(value, policy).e164
    except NumberRejected as exc:
        raise ValueError(exc.reason) from None


SlackUserId = Annotated[str, AfterValidator(_slack_user_id)]
PersonNumber = Annotated[str, AfterValidator(_person_number)]


class OnCallPolicy(_Strict):
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
        bad = [str(v) for v in value if not re.fullmatch(_SLACK_USER_OR_GROUP, str(v))]
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
        return _user_ids(value)

    @field_validator("escalate_to")
    @classmethod
    def _escalate_to(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _user_ids(value)

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

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
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


# `[policy]` defaults: safe for a bot that dials numbers typed into Slack.
DEFAULT_BLOCKED_PREFIXES = ("+1900", "+1976")  # US premium-rate and pay-per-call ranges
DEFAULT_PER_USER = "5/10m"
DEFAULT_PER_NUMBER = "3/10m"
DEFAULT_PER_DAY = 200
_E164_PREFIX = r"^\+[0-9]{1,15}$"


class DialingRules(_Strict):
    """The `[policy]` section: which numbers may be dialled, which ask first, and how often.

    `confirm_outside` left out means "default_region only": calls to the other allowed regions ask
    "are you sure?" first.
    """

    allowed_types: tuple[str, ...] = tuple(sorted(DEFAULT_ALLOWED_TYPES))
    blocked_prefixes: tuple[str, ...] = DEFAULT_BLOCKED_PREFIXES
    confirm_outside: tuple[str, ...] | None = None
    per_user: Rate = Field(default_factory=lambda: parse_rate(DEFAULT_PER_USER))
    per_number: Rate = Field(default_factory=lambda: parse_rate(DEFAULT_PER_NUMBER))
    per_day: int = Field(default=DEFAULT_PER_DAY, ge=1, le=1_000_000)
    # The same requester, number and flow again within this asks "call again?"; "0s" never asks.
    repeat_window: float = Field(default=REPEAT_WINDOW_SECONDS)

    @field_validator("repeat_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string like \"60s\" or \"2m\" (\"0s\": never ask)")
        return parse_duration(value)

    @field_validator("allowed_types", mode="before")
    @classmethod
    def _types(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        known = set(NUMBER_TYPE_NAMES.values())
        names = tuple(dict.fromkeys(str(v).upper() for v in value))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"unknown number types: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        if not names:
            raise ValueError(
                "is empty: no call could be placed; list at least MOBILE or FIXED_LINE"
            )
        return names

    @field_validator("blocked_prefixes", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        bad = [str(v) for v in value if not re.fullmatch(_E164_PREFIX, str(v))]
        if bad:
            raise ValueError(
                f"not E.164 prefixes: {', '.join(repr(b) for b in bad)} (write a + and digits, "
                "like \"+1900\")"
            )
        return tuple(dict.fromkeys(str(v) for v in value))

    @field_validator("confirm_outside", mode="before")
    @classmethod
    def _confirm_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value
        upper = tuple(dict.fromkeys(str(v).upper() for v in value))
        unknown = [v for v in upper if v not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(f"not region codes: {', '.join(unknown)} (use codes like \"US\")")
        return upper

    @field_validator("per_day", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be a whole number of calls, like 200")
        return value

    @field_validator("per_user", "per_number", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise ValueError(
                "must be a string like \"5/10m\" (calls per window; units s, m, h, d)"
            )
        return parse_rate(value)


class Policy(_Strict):
    """The TOML policy file (`CALLBOT_CONFIG`): who may call, where, and with which flows."""

    default_region: str = "US"
    allowed_regions: tuple[str, ...] = ("US",)
    default_caller_id: str | None = None
    # Required: without it nobody may place calls, which is never what a deployment wants.
    roles: dict[str, tuple[str, ...]]
    flows: dict[str, str] = Field(default_factory=dict)
    # Phone numbers by Slack user ID, for the on-call rotation (else the Slack profile's phone).
    people: dict[SlackUserId, PersonNumber] = Field(default_factory=dict)
    oncall: OnCallPolicy | None = None
    # The `[policy]` section; `Policy.policy` would read oddly in code.
    rules: DialingRules = Field(default_factory=DialingRules, alias="policy")

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code (use two letters, like \"US\")")
        return value

    @field_validator("allowed_regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        upper = tuple(dict.fromkeys(v.upper() for v in value))
        unknown = [v for v in upper if v not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"not region codes: {', '.join(unknown)} (use codes like \"US\", \"CA\")"
            )
        if not upper:
            raise ValueError("is empty: no call could be placed; list at least one region")
        return upper

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        problems = []
        for role, members in value.items():
            if role not in KNOWN_ROLES:
                problems.append(f"unknown role {role!r} (known: {', '.join(KNOWN_ROLES)})")
            bad = [m for m in members if not re.fullmatch(_SLACK_USER_OR_GROUP, m)]
            if bad:
                problems.append(
                    f"{role}: {', '.join(repr(b) for b in bad)} are not Slack user IDs (U…/W…) "
                    "or user group IDs (S…); copy them from the profile's ⋮ menu"
                )
        if problems:
            raise ValueError("; ".join(problems))
        if not any(value.values()):
            raise ValueError(
                "nobody may place calls: list Slack user or user group IDs under Manager or "
                "SystemAdministrator"
            )
        return value

    @field_validator("flows")
    @classmethod
    def _aliases(cls, value: dict[str, str]) -> dict[str, str]:
        empty = [alias for alias, flow_id in value.items() if not flow_id.strip()]
        if empty:
            raise ValueError(f"aliases with an empty flow ID: {', '.join(empty)}")
        return {alias.lower(): flow_id.strip() for alias, flow_id in value.items()}

    @model_validator(mode="after")
    def _caller_id(self) -> Policy:
        if self.default_caller_id is not None:
            try:
                e164 = to_e164(self.default_caller_id, self.default_region)
            except NumberRejected as exc:
                raise ValueError(f"default_caller_id: {exc.reason}") from None
            object.__setattr__(self, "default_caller_id", e164)
        return self

    @property
    def dial_policy(self) -> DialPolicy:
        return DialPolicy(
            default_region=self.default_region,
            allowed_regions=frozenset(self.allowed_regions),
            allowed_types=frozenset(self.rules.allowed_types),
            blocked_prefixes=self.rules.blocked_prefixes,
        )

    @property
    def confirm_outside(self) -> frozenset[str]:
        """Regions dialled without asking; other allowed regions ask "are you sure?" first."""
        if self.rules.confirm_outside is None:
            return frozenset({self.default_region})
        return frozenset(self.rules.confirm_outside)


def _describe(error: ValidationError, *, prefix: str, env: bool) -> list[str]:
    problems = []
    for item in error.errors():
        # A bad dict key is reported at (..., key, "[key]"): name the entry, as for a bad value.
        loc = [str(part) for part in item["loc"] if part != "[key]"]
        if env:
            name = loc[0].upper() if loc else "settings"
        else:
            name = ".".join(loc) if loc else "file"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set" if env else "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling)"
        problems.append(f"{prefix}{name}: {message}" if loc else f"{prefix}{message}")
    return problems


FILE_SUFFIX = "_FILE"


def settings_from_files(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Settings read from the files that `NAME_FILE` variables name (Docker and Kubernetes secrets).

    Only the environment is searched for `NAME_FILE`; a value in the environment for NAME itself
    makes it ambiguous, which is a problem rather than a silent choice.
    """
    environ = os.environ if environ is None else environ
    present = {key.upper(): value for key, value in environ.items()}
    values: dict[str, str] = {}
    problems: list[str] = []
    for field in Settings.model_fields:
        name = field.upper()
        path = present.get(name + FILE_SUFFIX)
        if not path:
            continue
        if name in present:
            problems.append(f"{name}: both {name} and {name}{FILE_SUFFIX} are set; keep one")
            continue
        try:
            # Secret files usually end with a newline that is no part of the secret.
            values[field] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            problems.append(f"{name}: cannot read {name}{FILE_SUFFIX} ({path}): {reason}")
    return values, problems


def load_settings(**overrides: Any) -> Settings:
    from_files, problems = settings_from_files()
    arguments = {**from_files, **overrides}
    try:
        settings = Settings(**arguments)
    except ValidationError as exc:
        described = _describe(exc, prefix="", env=True)
        named = {problem.partition(":")[0] for problem in problems}
        raise ConfigError(problems + [p for p in described
                                      if p.partition(":")[0] not in named]) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load_policy(path: Path) -> Policy:
    where = f"{path}: "
    try:
        raw = tomllib.loads(_read_policy_text(path))
    except FileNotFoundError:
        raise ConfigError(
            [f"CALLBOT_CONFIG: {path} does not exist (copy callbot.example.toml and edit it)"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"CALLBOT_CONFIG: cannot read {path}: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([
            f"{where}arrays or tables are nested too deeply to read; a policy file needs at most "
            "a few levels"
        ]) from None
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, prefix=where, env=False)) from None


def _read_policy_text(path: Path) -> str:
    with path.open("rb") as file:
        data = file.read(MAX_POLICY_BYTES + 1)
    if len(data) > MAX_POLICY_BYTES:
        raise ConfigError([
            f"CALLBOT_CONFIG: {path} is larger than {MAX_POLICY_BYTES // 1024} KiB; name the "
            "policy file (copy callbot.example.toml)"
        ])
    return data.decode("utf-8")


def load_configuration(**overrides: Any) -> tuple[Settings, Policy]:
    """Settings and policy together, with every problem of both reported at once."""
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        problems += exc.problems
    path = settings.callbot_config if settings else Path(
        overrides.get("callbot_config") or _env_policy_path()
    )
    policy: Policy | None = None
    try:
        policy = load_policy(path)
    except ConfigError as exc:
        problems += exc.problems
    if problems or settings is None or policy is None:
        raise ConfigError(problems)
    return settings, policy


def _env_policy_path() -> Path:
    return Path(os.environ.get("CALLBOT_CONFIG") or DEFAULT_POLICY_PATH)
