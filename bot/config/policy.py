"""The TOML policy file (`CALLBOT_CONFIG`) as a model: `[roles]`, flows, people, `[policy]` (the
dialling rules) and `[oncall]` (bot/config/oncall_policy.py)."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from pydantic import Field, field_validator, model_validator

from bot.calls.rates import REPEAT_WINDOW_SECONDS, Rate, parse_duration, parse_rate
from bot.config.fields import (
    SLACK_USER_OR_GROUP,
    PersonNumber,
    SlackUserId,
    Strict,
    flow_key,
)
from bot.config.oncall_policy import RESPONDERS_EVERYONE, OnCallPolicy
from bot.phone import DEFAULT_ALLOWED_TYPES, NUMBER_TYPE_NAMES, DialPolicy, NumberRejected, to_e164

# Evo Voice roles that may create calls; the bot's own login must hold one, and the `[roles]` table
# of the policy file uses the same names for the Slack users allowed to call.
MANAGER = "Manager"
SYSTEM_ADMINISTRATOR = "SystemAdministrator"
KNOWN_ROLES = (MANAGER, SYSTEM_ADMINISTRATOR)


# `[policy]` defaults: safe for a bot that dials numbers typed into Slack.
DEFAULT_BLOCKED_PREFIXES = ("+1900", "+1976")  # US premium-rate and pay-per-call ranges
DEFAULT_PER_USER = "5/10m"
DEFAULT_PER_NUMBER = "3/10m"
DEFAULT_PER_DAY = 200
_E164_PREFIX = r"^\+[0-9]{1,15}$"


class DialingRules(Strict):
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


class Policy(Strict):
    """The TOML policy file (`CALLBOT_CONFIG`): who may call, where, and with which flows."""

    default_region: str = "US"
    allowed_regions: tuple[str, ...] = ("US",)
    default_caller_id: str | None = None
    # Required: without it nobody may place calls, which is never what a deployment wants.
    roles: dict[str, tuple[str, ...]]
    flows: dict[str, str] = Field(default_factory=dict)
    # The `[policy]` section; `Policy.policy` would read oddly in code. Before [people], whose
    # numbers are checked against its rules.
    rules: DialingRules = Field(default_factory=DialingRules, alias="policy")
    # Phone numbers by Slack user ID, for the on-call rotation (else the Slack profile's phone).
    people: dict[SlackUserId, PersonNumber] = Field(default_factory=dict)
    oncall: OnCallPolicy | None = None

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
            bad = [m for m in members if not re.fullmatch(SLACK_USER_OR_GROUP, m)]
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
        # Typed in Slack, `Page` and `page-` are one word: two flows can't share it.
        targets: dict[str, dict[str, str]] = {}
        for alias, flow_id in value.items():
            targets.setdefault(flow_key(alias), {})[alias] = flow_id.strip()
        clashes = [" and ".join(f"{a!r} ({f})" for a, f in named.items())
                   for named in targets.values() if len(set(named.values())) > 1]
        if clashes:
            raise ValueError(
                "aliases that are one word when typed name different flows: "
                f"{'; '.join(clashes)}; keep one of each"
            )
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


def is_example_id(slack_id: str) -> bool:
    """callbot.example.toml's IDs all say EXAMPLE: real Slack IDs are random letters and digits."""
    return "EXAMPLE" in slack_id


def policy_slack_ids(policy: Policy) -> dict[str, list[str]]:
    """Every Slack user or group ID the policy file names, with where it names it."""
    places: dict[str, list[str]] = {}
    for role, ids in policy.roles.items():
        for slack_id in ids:
            places.setdefault(slack_id, []).append(f"[roles] {role}")
    for slack_id in policy.people:
        places.setdefault(slack_id, []).append("[people]")
    if policy.oncall is not None:
        for slack_id in policy.oncall.rotation:
            places.setdefault(slack_id, []).append("oncall.rotation")
        for slack_id in policy.oncall.escalate_to:
            places.setdefault(slack_id, []).append("oncall.escalate_to")
        if policy.oncall.responders != RESPONDERS_EVERYONE:
            for slack_id in policy.oncall.responders:
                places.setdefault(slack_id, []).append("oncall.responders")
    return places


def example_ids(policy: Policy, path: object) -> tuple[str, str] | None:
    """What is wrong and the fix when the policy file at `path` still names the placeholder IDs of
    callbot.example.toml (`make run` copies it): start-up stops on it, `callbot check` fails it."""
    examples = {slack_id: where for slack_id, where in policy_slack_ids(policy).items()
                if is_example_id(slack_id)}
    if not examples:
        return None
    listing = "; ".join(f"{slack_id} ({', '.join(where)})" for slack_id, where in examples.items())
    return (f"still the placeholders of callbot.example.toml: {listing}",
            f"in {path}, replace them with your people's member IDs (Slack: a profile's ⋮ menu → "
            "Copy member ID) or user group IDs, or let `callbot init` look them up by email")
