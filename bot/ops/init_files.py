"""What `callbot init` collects (`Answers`) and the two files it writes from them: `.env` and
`callbot.toml`, each line commented, both passing `callbot check`."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from dotenv.parser import parse_stream

from bot.config import DEFAULT_EVOVOICE_URL, DEFAULT_SLACK_API_URL, MANAGER
from bot.ops.check_env_file import expands


@dataclass
class Answers:
    slack_api_url: str = DEFAULT_SLACK_API_URL
    bot_token: str = ""
    app_token: str = ""
    signing_secret: str = ""
    workspace: str = ""
    evovoice_url: str = DEFAULT_EVOVOICE_URL
    evovoice_username: str = ""
    evovoice_password: str = ""
    account_id: str = ""
    several_accounts: bool = False
    default_region: str = "US"
    default_caller_id: str = ""
    managers: list[tuple[str, str]] = field(default_factory=list)  # (member ID, who)
    oncall_flow: str = ""
    rotation: list[tuple[str, str]] = field(default_factory=list)
    people: dict[str, str] = field(default_factory=dict)  # member ID -> E.164


def _list(ids: Sequence[str]) -> str:
    return ", ".join(f'"{i}"' for i in ids)


def _env_value(value: str) -> str:
    """`value` as `.env` must hold it to be read back as it is (python-dotenv, which the bot reads
    .env with): as typed (what `docker run --env-file` reads too) unless a leading quote, a " #"
    or spaces at either end would change it; then in single quotes, where only \\ and \' are
    escapes."""
    if value == value.strip() and not value.startswith(("'", '"')) and not re.search(r"\s#", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _toml_string(value: str) -> str:
    """`value` as a TOML basic string: the quote, the backslash and control characters escaped
    (a flow's name is the account's: nothing keeps them out of it)."""
    escaped = "".join(
        _TOML_ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " or c == "\x7f" else c)
        for c in value
    )
    return f'"{escaped}"'


_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


# The settings init writes from its answers (and the policy file it writes): a replaced .env's
# lines for them, or for their _FILE forms, go.
ANSWERED = frozenset({
    "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_API_URL", "EVOVOICE_URL",
    "EVOVOICE_USERNAME", "EVOVOICE_PASSWORD", "EVOVOICE_ACCOUNT_ID", "CALLBOT_CONFIG",
})
# Written as a new installation's, unless the replaced .env set them.
FRESH = {"DATABASE_URL": "sqlite:///./callbot.db", "PORT": "3000", "LOG_LEVEL": "INFO"}


def kept_settings(replaced: str) -> dict[str, str]:
    """The settings of a replaced .env that init does not ask for, each as it was written there
    (by its name in capitals): its database above all, and the number hash key. Without them
    the bot would start on an empty database of its own, or hash numbers under another key."""
    kept: dict[str, str] = {}
    for binding in parse_stream(io.StringIO(replaced)):
        if binding.key is None:  # a comment, a blank line, a line dotenv can't read
            continue
        name = binding.key.upper()
        if name in ANSWERED or name.removesuffix("_FILE") in ANSWERED:
            continue
        kept[name] = binding.original.string.rstrip("\n")
    return kept


def render_env(a: Answers, replaced: str = "") -> str:
    """`replaced`: the .env this one replaces, whose settings init does not ask for are kept."""
    kept = kept_settings(replaced)
    lines = [
        "# callbot settings, written by `callbot init`. Real environment variables take "
        "precedence;",
        "# .env.example lists every setting. Keep this file secret.",
        f"SLACK_BOT_TOKEN={a.bot_token}",
        "# Set: Socket Mode (no public URL needed). Empty: HTTP mode, with SLACK_SIGNING_SECRET.",
        f"SLACK_APP_TOKEN={a.app_token}",
        f"SLACK_SIGNING_SECRET={a.signing_secret}",
    ]
    if a.slack_api_url != DEFAULT_SLACK_API_URL:
        lines.append(f"SLACK_API_URL={a.slack_api_url}")
    lines += [
        f"EVOVOICE_URL={a.evovoice_url}",
        "# The bot's own Evo Voice login; it holds the Manager role.",
        f"EVOVOICE_USERNAME={_env_value(a.evovoice_username)}",
        # .env would read a ${…} in it as a variable (Wizard.write says where to put it instead).
        "# EVOVOICE_PASSWORD is not written here: .env would read the ${…} in it as a variable"
        if expands(a.evovoice_password) else
        f"EVOVOICE_PASSWORD={_env_value(a.evovoice_password)}",
        "# The account callbot uses (needed when the login reaches several).",
        f"EVOVOICE_ACCOUNT_ID={a.account_id if a.several_accounts else ''}",
        "CALLBOT_CONFIG=./callbot.toml",
    ]
    lines += [f"{name}={value}" for name, value in FRESH.items() if name not in kept]
    if kept:
        lines += ["# Kept from the .env this file replaced (init does not ask for these):",
                  *kept.values()]
    return "\n".join(lines) + "\n"


def render_policy(a: Answers) -> str:
    lines = [
        "# callbot policy file, written by `callbot init` (callbot.example.toml and README.md",
        "# explain every key). Checked at start-up; `callbot check` tries it against Slack and",
        "# Evo Voice.",
        "",
        f'default_region = "{a.default_region}"              # for numbers typed without a '
        "country code",
        f'allowed_regions = ["{a.default_region}"]           # where calls may go',
    ]
    if a.default_caller_id:
        lines.append(f'default_caller_id = "{a.default_caller_id}"  # one of the account\'s '
                     "numbers")
    lines += ["", "# Who may place calls, by Slack member ID:"]
    lines += [f"#   {member}: {who}" for member, who in a.managers]
    lines += ["[roles]", f"{MANAGER} = [{_list([m for m, _ in a.managers])}]", ""]
    if a.oncall_flow:
        lines += ["[people]                             # phone numbers; others: their Slack "
                  "profile's"]
        lines += [f'{member} = "{number}"' for member, number in a.people.items()]
        lines += ["", "[oncall]", f"flow = {_toml_string(a.oncall_flow)}",
                  "# The rotation, in order:"]
        lines += [f"#   {member}: {who}" for member, who in a.rotation]
        lines += [f"rotation = [{_list([m for m, _ in a.rotation])}]",
                  'handoff = "monday 09:00"             # when the duty passes on',
                  'timezone = "UTC"                     # the team\'s IANA time zone', ""]
    return "\n".join(lines)
