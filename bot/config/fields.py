"""What both policy sections share: a strict model (no unknown keys, frozen) and Slack IDs and phone
numbers checked as they are read."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from bot.phone import DialPolicy, NumberRejected, check_dialable

_QUOTES = "'\"“”‘’`"


def flow_key(text: str) -> str:
    """The form two flow names are compared in: `Wake-Up_call` and `wake up call` are one key
    (a flow typed in Slack, an alias of the policy file, a flow's name in Evo Voice)."""
    text = text.strip().strip(_QUOTES).casefold()
    return " ".join(re.split(r"[\s\-_]+", text)).strip()

SLACK_USER_OR_GROUP = r"^[UWS][A-Z0-9]{2,20}$"
SLACK_USER = r"^[UW][A-Z0-9]{2,20}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _slack_user_id(value: str) -> str:
    if not re.fullmatch(SLACK_USER, value):
        raise ValueError(
            f"{value!r} is not a Slack user ID (U… or W…); copy it from the profile's ⋮ menu"
        )
    return value


def user_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    bad = [v for v in value if not re.fullmatch(SLACK_USER, v)]
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
    # `[policy]` (Policy.rules, read before [people]): an escalation dials under its rules too.
    rules = info.data.get("rules")
    if region is None or regions is None or rules is None:
        return value  # the settings it needs are wrong themselves (and reported): nothing to check
    policy = DialPolicy(
        default_region=region,
        allowed_regions=frozenset(regions),
        allowed_types=frozenset(rules.allowed_types),
        blocked_prefixes=rules.blocked_prefixes,
    )
    try:
        return check_dialable(value, policy).e164
    except NumberRejected as exc:
        raise ValueError(exc.reason) from None


SlackUserId = Annotated[str, AfterValidator(_slack_user_id)]
PersonNumber = Annotated[str, AfterValidator(_person_number)]
