"""What a burst is made of: who calls which number; the policy and environment of the bot.

The benchmark configures its own limits and user list, so nothing a deployment sets can distort it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from bot.phone import DEFAULT_ALLOWED_TYPES, DialPolicy, check_dialable

BOT_TOKEN = "xoxb-bench"
APP_TOKEN = "xapp-bench"
SIGNING_SECRET = "bench-signing-secret-0123456789ab"
EVO_USER = "bench@example.com"
EVO_PASSWORD = "bench-password"

CHANNEL = "C0INCIDENT"
FLOW_WORD = "escalation"
FLOWS = [{"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"}]
CALLER_ID = "+18145550100"
OWNED = [
    {"id": "ep-1", "displayName": "Main line", "phoneNumber": CALLER_ID, "accountId": "acct-1"}
]

# The policy file's `[policy]` limits for the benchmark. Generous on purpose: a burst is N distinct
# users calling N distinct numbers once each, plus one warm-up call; the defaults (200 a day) would
# refuse most of it and measure the limits, not the bot.
SAFETY_LIMITS: dict[str, str | int] = {
    "per_user": "100/1m",
    "per_number": "100/1m",
    "per_day": 1_000_000,
}

MAX_CALLERS = 9999


@dataclass(frozen=True)
class Caller:
    """One person paging: a mapped Slack user and the (valid, distinct) number they call."""

    user_id: str
    number: str

    @property
    def text(self) -> str:
        return f"{self.number} {FLOW_WORD}"


WARM_UP = Caller("U0BENCHWARM", "+18144039999")
MAX_REPLICAS = 9


def warm_ups(replicas: int) -> list[Caller]:
    """One warm-up call per replica, each its own caller and number (WARM_UP first)."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be between 1 and {MAX_REPLICAS}")
    return [WARM_UP] + [Caller(f"U0BENCHWARM{i}", f"+1814403{9999 - i}")
                        for i in range(1, replicas)]

_DIAL_POLICY = DialPolicy(
    default_region="US", allowed_regions=frozenset({"US"}), allowed_types=DEFAULT_ALLOWED_TYPES
)


def callers(n: int) -> list[Caller]:
    """U0BENCH0001 → +18144040001, …; every number is one the bot's dialling policy accepts."""
    if not 1 <= n <= MAX_CALLERS:
        raise ValueError(f"N must be between 1 and {MAX_CALLERS}")
    chosen = [Caller(f"U0BENCH{i:04d}", f"+1814404{i:04d}") for i in range(1, n + 1)]
    for caller in chosen + warm_ups(MAX_REPLICAS):
        check_dialable(caller.number, _DIAL_POLICY)  # raises NumberRejected if the scheme breaks
    return chosen


def policy_toml(users: list[Caller]) -> str:
    ids = ", ".join(json.dumps(c.user_id) for c in [*warm_ups(MAX_REPLICAS), *users])
    lines = [
        'default_region = "US"',
        'allowed_regions = ["US"]',
        f"default_caller_id = {json.dumps(CALLER_ID)}",
        "",
        "[roles]",
        f"Manager = [{ids}]",
    ]
    # The bot's safety limits must not distort the burst: the benchmark sets its own.
    lines += ["", "[policy]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in SAFETY_LIMITS.items()]
    return "\n".join(lines) + "\n"


# Settings a developer's shell or .env may hold; the bot under test must see only ours.
_OURS = ("SLACK_", "EVOVOICE_", "CALLBOT_", "DATABASE_URL", "PORT", "LOG_LEVEL")


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}


def bot_environment(
    mode: str, *, slack_api_url: str, evo_url: str, workdir: Path, port: int,
    database_url: str | None = None,
) -> dict[str, str]:
    """The environment of `python -m bot`, as a deployment sets it (production defaults else);
    the database is a SQLite file in `workdir` unless `database_url` says otherwise."""
    env = clean_environment()
    env.update({
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": slack_api_url,
        "EVOVOICE_URL": evo_url,
        "EVOVOICE_USERNAME": EVO_USER,
        "EVOVOICE_PASSWORD": EVO_PASSWORD,
        "CALLBOT_CONFIG": str(workdir / "callbot.toml"),
        "DATABASE_URL": database_url or f"sqlite:///{workdir / 'callbot.db'}",
        "PORT": str(port),
        "LOG_LEVEL": "INFO",
    })
    if mode == "socket":
        env["SLACK_APP_TOKEN"] = APP_TOKEN
    else:
        env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
    return env
