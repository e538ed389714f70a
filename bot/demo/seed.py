"""What the demo's Slack workspace and Evo Voice account hold when it starts: you, a rotation of
three, one channel, three flows and two caller IDs; and the sample policy file that names them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot.standins.evovoice import EvoVoiceStandIn
from bot.standins.slack import SlackStandIn

YOU = "U0DEMOYOU"
CHANNEL = "C0OPS"
CHANNEL_NAME = "ops"
BOT_TOKEN = "xoxb-demo"
APP_TOKEN = "xapp-demo"
EVO_USER = "demo@callbot.invalid"
EVO_PASSWORD = "demo-password"
MAIN_LINE = "+18145550100"

# Slack user ID -> (handle, real name, the phone in their Slack profile).
PEOPLE: dict[str, tuple[str, str, str]] = {
    YOU: ("you", "You (demo)", "+1 814 404 3095"),
    "U0ALICE": ("alice", "Alice Example", ""),
    "U0BOB": ("bob", "Bob Example", ""),
    "U0CAROL": ("carol", "Carol Example", ""),
}
FLOWS = [
    {"id": "flow-esc", "name": "Escalation", "accountId": "acct-1"},
    {"id": "flow-wake", "name": "Wake Up Call", "accountId": "acct-1"},
    {"id": "flow-status", "name": "Status Update", "accountId": "acct-1"},
]
OWNED = [
    {"id": "ep-1", "displayName": "Main line", "phoneNumber": MAIN_LINE, "accountId": "acct-1"},
    {"id": "ep-2", "displayName": "Ops line", "phoneNumber": "+18145550101", "accountId": "acct-1"},
]


def sample_policy_path() -> Path:
    return Path(str(resources.files("bot.demo").joinpath("policy.toml")))


def seed(slack: SlackStandIn, evo: EvoVoiceStandIn) -> None:
    """Fill the stand-ins (before they start) with the workspace and the account above."""
    for user_id, (handle, real_name, phone) in PEOPLE.items():
        slack.users[user_id] = {
            "name": handle, "real_name": real_name,
            "profile": {"phone": phone, "display_name": handle, "real_name": real_name},
        }
    slack.users[slack.bot_user_id] = {"name": "callbot", "real_name": "callbot"}
    slack.only_added_users_exist = True
    slack.channels[CHANNEL] = {"name": CHANNEL_NAME}
    evo.flows[:] = [dict(flow) for flow in FLOWS]
    evo.phone_numbers[:] = [dict(number) for number in OWNED]
